"""Request bodies of the JSON API (and the form posts that mirror them).

Sizes are capped here so a huge body is refused before any tokenizer or model runs;
finer limits that depend on the model (tokens, top-k) are checked against the
operator's settings in analysis/.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from analysis.attribution.circuit_settings import CircuitSettings
from analysis.comparison import MAX_PROMPT_SET, CompareThresholds, PromptSetItem
from analysis.correction.config import CorrectionTarget, TrainingConfig
from analysis.correction.drafts import MAX_DRAFTS
from analysis.models import NAME_PATTERN
from analysis.probe import MAX_PROBED
from analysis.prompts import MAX_SYSTEM_CHARS, PromptSpec
from analysis.screening import MAX_PROMPT_CHARS, FillerRule, ScreenItem

# "Not blank" in the OpenAPI schema for fields whose validators refuse blank text, so a
# schema-valid request is one the app accepts.
NON_BLANK = r"\S"


def _kinds(annotation: Any) -> set[type]:
    if get_origin(annotation) in (Union, types.UnionType):
        return {a for a in get_args(annotation) if a in (int, float, bool)}
    return {annotation} & {int, float, bool}


class NumbersNotBooleans(BaseModel):
    """pydantic reads ``true`` as 1 for a number and ``0`` as false for a boolean; the
    schema says which it is, so the other is refused (the model's own fields)."""

    @model_validator(mode="before")
    @classmethod
    def _booleans_and_numbers_apart(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(field.alias or name)
            kinds = _kinds(field.annotation)
            if value is None or not kinds:
                continue
            if isinstance(value, bool) and bool not in kinds:
                raise ValueError(f"{name} is {str(value).lower()}, a boolean; give a number")
            # Numbers only: a page form's "true"/"on" strings stay fine.
            if kinds == {bool} and isinstance(value, int | float) and not isinstance(value,
                                                                                   bool):
                raise ValueError(f"{name} must be true or false, not {str(value)[:20]!r}")
        return data


class ScreenItemIn(ScreenItem, NumbersNotBooleans):
    """A screening item over JSON (ScreenItem's validator, with its rule in the schema)."""

    prompt: str = Field(max_length=MAX_PROMPT_CHARS, json_schema_extra={"pattern": NON_BLANK})
    answer: str = Field(max_length=200, json_schema_extra={"pattern": NON_BLANK},
                        description="The correct answer, e.g. 'aldosterone'.")


class TargetIn(CorrectionTarget, NumbersNotBooleans):
    """The case to correct, over JSON (its answers' rule in the schema)."""

    answer_a: str = Field(json_schema_extra={"pattern": NON_BLANK},
                          description="The correct answer, e.g. ' aldosterone'.")
    answer_b: str = Field(json_schema_extra={"pattern": NON_BLANK},
                          description="The wrong answer the model prefers, e.g. ' renin'.")

    @field_validator("prompt")
    @classmethod
    def _prompt_given(cls, prompt: str) -> str:
        # The text check never formats the prompt, so it is checked here.
        if not prompt.strip():
            raise ValueError("the target's prompt is empty; give the prompt to correct")
        return prompt


class CheckRequest(TrainingConfig, NumbersNotBooleans):
    """The text check over JSON: it needs the target's answers."""

    target: TargetIn  # type: ignore[assignment]
    texts: list[Annotated[str, Field(json_schema_extra={"pattern": NON_BLANK})]] = Field(
        min_length=1, description="Training texts (SFT on each).")


class JobRequest(CheckRequest):
    """A correction job over JSON: one target case on a registered base model."""

    base_model: str = Field(pattern=NAME_PATTERN,  # type: ignore[assignment]
                            description="Registered base model to fine-tune.")
    epochs: int = Field(5, ge=1, description="Passes over the texts. Over the operator's "
                        "cap (CIRCUITLAB_JOBS__CAPS__MAX_EPOCHS, default 50) the job is "
                        "refused 413; so are more than max_texts (32) texts.")


class PromptFields(PromptSpec, NumbersNotBooleans):
    """A registered model's name and the prompt with its format (inherited from
    PromptSpec, flat)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=64, pattern=NAME_PATTERN,
                              description="Registered model name; default model if omitted. "
                              "A prompt that formats to more than the operator's "
                              "CIRCUITLAB_LIMITS__MAX_PROMPT_TOKENS (default 512) tokens of "
                              "this model is refused 413.")


class PredictRequest(PromptFields):
    answers: list[str] = Field(default_factory=list, max_length=10,
                               description="Answers whose probability to report.")
    top_k: int = Field(10, ge=1)


class ScreenRequest(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=64, pattern=NAME_PATTERN)
    items: list[ScreenItemIn] = Field(
        min_length=1, max_length=1000,
        description="The prompts to screen. More than the operator's batch limit "
                    "(CIRCUITLAB_LIMITS__MAX_BATCH_SIZE, default 64) is refused 413; so is "
                    "a prompt over max_prompt_tokens (default 512) tokens.")
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

    answer_a: str = Field(max_length=200, json_schema_extra={"pattern": NON_BLANK},
                          description="Answer A (metric pushes towards it).")
    answer_b: str | None = Field(None, max_length=200,
                                 description="Answer B; omit for logit(A) alone.")
    use_cache: bool = Field(True, description="Return a stored identical run if there is one.")


class EditFields(NumbersNotBooleans):
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


class CompareBody(PromptSpec, CircuitSettings, NumbersNotBooleans):
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


class PatchingBody(PromptSpec, NumbersNotBooleans):
    """Layer patching between two registered models of one architecture, without a
    circuit (so it also runs on models NDIF hosts); the prompt with its format, flat."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(max_length=64, pattern=NAME_PATTERN,
                      description="The model patched into.")
    variant: str = Field(max_length=64, pattern=NAME_PATTERN,
                         description="The model whose layers are patched in.")
    answer_a: str = Field(min_length=1, max_length=200,
                          description="The right answer (m pushes towards it).")
    answer_b: str | None = Field(None, max_length=200, description="The wrong answer.")


def prompt_spec(body: BaseModel) -> PromptSpec:
    """The analysis layer's prompt model from a request that inherits its fields."""
    return PromptSpec.of(body)


class ProbeBody(NumbersNotBooleans):
    """A concept probe of a stored run: the index's neurons for a concept, named neurons,
    or both (analysis/probe.py)."""

    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(None, max_length=100,
                              description="A concept to search the exemplar index for, "
                                          "e.g. kidney (whole words and their inflections).")
    neurons: list[Annotated[str, Field(max_length=24)]] = Field(
        default_factory=list, max_length=MAX_PROBED,
        description="Neurons to probe as well, named L<layer>/N<neuron>.")
    factor: float = Field(0.0, ge=-10, le=10,
                          description="Every probed neuron is multiplied by this at every "
                                      "position together for the group effect (0 = zeroed).")
    limit: int = Field(12, ge=1, le=MAX_PROBED,
                       description="How many of the search's best hits to probe.")


class DraftsBody(NumbersNotBooleans):
    """Draft training texts on a concept for a stored run (analysis/correction/drafts.py)."""

    model_config = ConfigDict(extra="forbid")

    concept: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        min_length=1, max_length=8,
        description="The concept's words, e.g. a candidate's topic words or a probe query.")
    n: int = Field(4, ge=1, le=MAX_DRAFTS, description="How many drafts.")
    writer: Literal["auto", "model", "endpoint"] = Field(
        "auto", description="Who writes: the configured LLM endpoint (auto, when one is "
                            "configured) or the resident model.")
    topic_words: list[Annotated[str, Field(max_length=60)]] | None = Field(
        None, max_length=20, description="Words the check flags (default: the run's "
                                         "suggested topic words).")
