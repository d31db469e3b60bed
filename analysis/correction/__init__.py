"""Correction jobs, the science side (seeds 000/001, Stages 5-7): check the training texts
against the seeds' rules, preview them in context, fine-tune (full or LoRA) with TRL, and
evaluate the variant before vs after.

Training needs the ``train`` extra (trl, peft, datasets); those are imported only inside
:func:`train`, so the config, the text check, the preview and the evaluation import
without them.
"""

from analysis.correction.config import (
    CorrectionTarget,
    EvalItem,
    TrainingCaps,
    TrainingConfig,
    from_seed_yaml,
    to_seed_yaml,
    validate_caps,
)
from analysis.correction.evaluate import (
    DegenerationReport,
    EvalRow,
    degeneration_check,
    evaluate_prompts,
)
from analysis.correction.preview import InContextPreview, in_context_preview
from analysis.correction.textcheck import TextFinding, check_texts, suggest_topic_words
from analysis.correction.train import Cancelled, StepReport, TrainResult, train

__all__ = [
    "Cancelled",
    "CorrectionTarget",
    "DegenerationReport",
    "EvalItem",
    "EvalRow",
    "InContextPreview",
    "StepReport",
    "TextFinding",
    "TrainResult",
    "TrainingCaps",
    "TrainingConfig",
    "check_texts",
    "degeneration_check",
    "evaluate_prompts",
    "from_seed_yaml",
    "in_context_preview",
    "suggest_topic_words",
    "to_seed_yaml",
    "train",
    "validate_caps",
]
