"""What a comparison is asked: the target circuit, the prompt set and the verdict's
thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from analysis.analyze import CircuitRequest
from analysis.attribution.always_on import KnownAlwaysOn
from analysis.comparison.verdict import CompareThresholds
from analysis.evaluation import EvalItem

PromptKind = Literal["target", "generalization", "side_effect"]
MAX_PROMPT_SET = 50


# The prompt set's items are the evaluation core's items (one type everywhere).
PromptSetItem = EvalItem


class CompareRequest(BaseModel):
    circuit: CircuitRequest
    prompt_set: list[PromptSetItem] = Field(default_factory=list)
    thresholds: CompareThresholds = Field(default_factory=CompareThresholds)
    known_always_on: KnownAlwaysOn | None = Field(
        None, exclude=True, description="The base's exemplar-index flags: both circuits "
                                        "drop them, as a run of the base does.")



def prompt_items(req: CompareRequest) -> list[EvalItem]:
    """The target first, then the set."""
    target = req.circuit
    return [EvalItem(kind="target", prompt=target.prompt.prompt, expected=target.answer_a,
                     wrong=target.answer_b), *req.prompt_set]


