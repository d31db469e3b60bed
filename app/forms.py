"""The Analyze form: its fields (validated by pydantic), its defaults, and the template
context that both the Analyze page and a run's permalink fill it from."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from analysis.screening import MAX_PROMPT_CHARS
from app.model_manager import ModelManager
from app.schemas import PredictRequest
from app.settings import Settings

# What the form shows before anything is typed; the Analyze page and a permalink both
# fill the same template from a dict like this one.
FORM_DEFAULTS: dict[str, Any] = {
    "prompt": "", "chat_template": False, "system_prompt": "", "answer_prefix": "",
    "answer_a": "", "answer_b": "", "top_k": 10, "method": "relp", "tau": 0.15,
    "mode": "tau", "mass": 0.8, "max_nodes": 200, "edge_threshold": 0.0,
}


class AnalyzeForm(PredictRequest):
    """The Analyze form: the predict fields, with answers as two inputs."""

    # A blank textarea arrives as "", which form parsing treats as missing: default it so
    # the user gets the analysis layer's "the prompt is empty" rather than "field required".
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    answers: list[str] = Field(default_factory=list)
    answer_a: str = Field("", max_length=200)
    answer_b: str = Field("", max_length=200)
    method: Literal["relp", "grad_x_act", "integrated_gradients"] = "relp"
    tau: float = Field(0.15, gt=0, le=1)
    mode: Literal["tau", "cumulative"] = "tau"
    mass: float = Field(0.8, gt=0, le=1)
    max_nodes: int = Field(200, ge=1)
    edge_threshold: float = Field(0.0, ge=0)


def page_context(manager: ModelManager, settings: Settings,
                 form: dict[str, Any]) -> dict[str, Any]:
    return {"models": manager.registry.names(), "default_model": settings.default_model,
            "limits": settings.limits, "circuit_limits": settings.circuit_limits,
            "form": {**FORM_DEFAULTS, **form}}
