"""Base vs fine-tuned comparison, one module per idea:

* :mod:`~analysis.comparison.verdict` - per-neuron categories and the verdict (pathway
  removed, compensated, no change, made worse) with its reasons and thresholds;
* :mod:`~analysis.comparison.weights` - relative weight change per layer and module;
* :mod:`~analysis.comparison.layer_patching` - activation patching, variant into base, per layer;
* :mod:`~analysis.comparison.request` - what a comparison is asked;
* :mod:`~analysis.comparison.threshold` - the one threshold both graphs are cut at;
* :mod:`~analysis.comparison.run` - the phased run (variant, then base) and its result.
"""

from analysis.comparison.layer_patching import LayerShare, layer_shares, record_layers
from analysis.comparison.request import (
    MAX_PROMPT_SET,
    CompareRequest,
    PromptSetItem,
    prompt_items,
)
from analysis.comparison.run import (
    ComparisonResult,
    Observation,
    PromptProbs,
    PromptRow,
    SideSummary,
    Signature,
    assemble,
    check_pair,
    compare_loaded,
    observe_base,
    observe_variant,
    prompt_probs,
    variant_weights_dir,
)
from analysis.comparison.threshold import reference_cut, with_cut
from analysis.comparison.verdict import (
    VERDICT_RULE,
    CircuitComparison,
    CompareThresholds,
    NeuronChange,
    Verdict,
    categorize,
    compare_influences,
    judge,
)
from analysis.comparison.weights import (
    WeightChange,
    layer_weight_totals,
    split_name,
    weight_changes,
    weight_changes_from_files,
)

__all__ = [
    "MAX_PROMPT_SET",
    "VERDICT_RULE",
    "CircuitComparison",
    "CompareRequest",
    "CompareThresholds",
    "ComparisonResult",
    "LayerShare",
    "NeuronChange",
    "Observation",
    "PromptProbs",
    "PromptRow",
    "PromptSetItem",
    "SideSummary",
    "Signature",
    "Verdict",
    "WeightChange",
    "assemble",
    "categorize",
    "check_pair",
    "compare_influences",
    "compare_loaded",
    "judge",
    "layer_shares",
    "layer_weight_totals",
    "observe_base",
    "observe_variant",
    "prompt_items",
    "prompt_probs",
    "record_layers",
    "reference_cut",
    "split_name",
    "variant_weights_dir",
    "weight_changes",
    "weight_changes_from_files",
    "with_cut",
]
