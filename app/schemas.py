"""Request bodies of the JSON API (and the form posts that mirror them).

Sizes are capped here so a huge body is refused before any tokenizer or model runs;
finer limits that depend on the model (tokens, top-k) are checked against the
operator's settings in analysis/.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from analysis.attribution.settings import CircuitSettings
from analysis.comparison import MAX_PROMPT_SET, CompareThresholds, PromptSetItem
from analysis.models import NAME_PATTERN
from analysis.prompts import MAX_SYSTEM_CHARS, PromptSpec
from analysis.screening import FillerRule, ScreenItem


class PromptFields(PromptSpec):
    """A registered model's name and the prompt with its format (inherited from
    PromptSpec, flat)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=64, pattern=NAME_PATTERN,
                              description="Registered model name; default model if omitted.")


class PredictRequest(PromptFields):
    answers: list[str] = Field(default_factory=list, max_length=10,
                               description="Answers whose probability to report.")
    top_k: int = Field(10, ge=1)


class ScreenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=64, pattern=NAME_PATTERN)
    items: list[ScreenItem] = Field(min_length=1, max_length=1000)
    top_k: int = Field(5, ge=1)
    skip_filler: bool = True
    filler_rule: FillerRule = Field("model", description="How filler is decided (see "
                                    "analysis.screening); a filler_tokens list means 'list'.")
    filler_tokens: list[str] | None = Field(None, max_length=200)
    chat_template: bool = False
    system_prompt: str | None = Field(None, max_length=MAX_SYSTEM_CHARS)
    answer_prefix: str = Field("", max_length=200)


class AttributeRequest(PromptFields, CircuitSettings):
    """The prompt, the answers and - flat, inherited from CircuitSettings - the circuit's
    settings."""

    answer_a: str = Field(max_length=200, description="Answer A (metric pushes towards it).")
    answer_b: str | None = Field(None, max_length=200,
                                 description="Answer B; omit for logit(A) alone.")
    use_cache: bool = Field(True, description="Return a stored identical run if there is one.")


class EditFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layer: int = Field(ge=0)
    neuron: int = Field(ge=0)
    scale: float = Field(0.0, ge=-100, le=100, description="0 zeroes the neuron.")
    positions: list[int] | None = Field(None, max_length=4096,
                                        description="Token positions; all if omitted.")


class InterveneRequest(PromptFields):
    edits: list[EditFields] = Field(min_length=1, max_length=256)
    answer_a: str | None = Field(None, max_length=200)
    answer_b: str | None = Field(None, max_length=200)
    top_k: int = Field(10, ge=1)


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=64, pattern=NAME_PATTERN)
    label: str = Field(max_length=200, description="Empty deletes the label.")


class CompareBody(PromptSpec, CircuitSettings):
    """Compare a fine-tuned variant with its base on one prompt (plus a prompt set); the
    prompt with its format and the circuit settings are inherited, flat."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(max_length=64, pattern=NAME_PATTERN, description="The base model.")
    variant: str = Field(max_length=64, pattern=NAME_PATTERN,
                         description="A fine-tuned variant of the base (full or LoRA).")
    answer_a: str = Field(min_length=1, max_length=200,
                          description="The right answer (m pushes towards it).")
    answer_b: str | None = Field(None, max_length=200, description="The wrong answer.")
    thresholds: CompareThresholds = Field(default_factory=CompareThresholds)
    prompt_set: list[PromptSetItem] = Field(default_factory=list, max_length=MAX_PROMPT_SET,
                                            description="Generalization / side-effect "
                                                        "prompts with expected answers.")


def prompt_spec(body: BaseModel) -> PromptSpec:
    """The analysis layer's prompt model from a request that inherits its fields."""
    return PromptSpec.of(body)
