"""The Analyze form: its fields (validated by pydantic), its defaults, and the template
context that both the Analyze page and a run's permalink fill it from."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from analysis.attribution import CircuitSettings
from analysis.comparison import CompareThresholds
from analysis.errors import InputError, input_error
from analysis.prompts import MAX_PROMPT_CHARS, MAX_SYSTEM_CHARS, PromptSpec
from app.schemas import CompareBody, PredictRequest
from app.services.compare import parse_prompt_set
from app.services.model_manager import ModelManager
from app.settings import Settings
from app.store.tables import Run

# What the form shows before anything is typed; the Analyze page and a permalink both
# fill the same template from a dict like this one. The circuit settings' defaults come
# from CircuitSettings itself.
FORM_DEFAULTS: dict[str, Any] = {
    "prompt": "", "chat_template": False, "system_prompt": "", "answer_prefix": "",
    "answer_a": "", "answer_b": "", "top_k": 10, **CircuitSettings().model_dump(),
}


def settings_form_values(settings: CircuitSettings) -> dict[str, Any]:
    """A stored run's settings as form values (a form has no 'unlimited' max_nodes)."""
    values = settings.model_dump()
    values["max_nodes"] = values["max_nodes"] or FORM_DEFAULTS["max_nodes"]
    return values


def run_form_values(run: Run) -> dict[str, Any]:
    """A stored run as form values - its prompt with its format and its answers - for the
    Analyze, Compare and Jobs forms alike (a blank system prompt is the form's '')."""
    stored = run.params.get("prompt_spec", {}) if isinstance(run.params, dict) else {}
    spec = PromptSpec.model_validate({**stored, "prompt": run.prompt})
    return {**spec.model_dump(), "system_prompt": spec.system_prompt or "",
            "answer_a": run.answer_a or "", "answer_b": run.answer_b or ""}


class FormPrompt(PromptSpec):
    """A prompt as an HTML form sends it. Blank fields arrive as "", which form parsing
    treats as missing, so: a blank prompt defaults to "" (the analysis layer then says
    "the prompt is empty" rather than "field required"), and a blank system prompt is the
    seeds' empty system turn, not "no system turn" (which would let SmolLM2's template
    insert its default persona)."""

    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    system_prompt: str = Field("", max_length=MAX_SYSTEM_CHARS)


class AnalyzeForm(FormPrompt, PredictRequest, CircuitSettings):
    """The Analyze form: the predict fields, with answers as two inputs, and the circuit
    settings (inherited; the page shows widgets for some, the rest keep their defaults).
    """

    answers: list[str] = Field(default_factory=list)
    answer_a: str = Field("", max_length=200)
    answer_b: str = Field("", max_length=200)


def page_context(manager: ModelManager, settings: Settings,
                 form: dict[str, Any]) -> dict[str, Any]:
    return {"models": manager.registry.names(), "default_model": settings.default_model,
            "limits": settings.limits, "circuit_limits": settings.circuit_limits,
            "form": {**FORM_DEFAULTS, **form}}


# ---------------------------------------------------------------------------------------
# The Compare form
# ---------------------------------------------------------------------------------------

COMPARE_DEFAULTS: dict[str, Any] = {
    **FORM_DEFAULTS, "base": "", "variant": "", "prompt_set": "",
    **CompareThresholds().model_dump(),
}
MAX_PROMPT_SET_CHARS = 60_000


class CompareForm(FormPrompt, CircuitSettings, CompareThresholds):
    """The Compare form's fields; circuit settings and thresholds flat (inherited, so
    their limits and defaults are declared once), the prompt set as text lines."""

    base: str = Field("", max_length=64)
    variant: str = Field("", max_length=64)
    answer_a: str = Field("", max_length=200)
    answer_b: str = Field("", max_length=200)
    prompt_set: str = Field("", max_length=MAX_PROMPT_SET_CHARS)

    def body(self) -> CompareBody:
        """The JSON API's request, with errors pointing at this form's fields."""
        if not self.base:
            raise InputError("pick the base model", field="base")
        if not self.variant:
            raise InputError("pick a fine-tuned variant to compare with the base",
                             field="variant")
        if not self.answer_a.strip():
            raise InputError("a comparison needs answer A (the right answer)",
                             field="answer_a")
        try:
            return CompareBody(
                base=self.base, variant=self.variant, **PromptSpec.of(self).model_dump(),
                answer_a=self.answer_a,
                answer_b=self.answer_b or None, **CircuitSettings.of(self).model_dump(),
                thresholds=CompareThresholds.model_validate(
                    self.model_dump(include=set(CompareThresholds.model_fields))),
                prompt_set=parse_prompt_set(self.prompt_set),
            )
        except ValidationError as exc:
            raise input_error(exc) from exc


