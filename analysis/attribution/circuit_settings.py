"""The settings of a circuit, declared once.

Everything besides the model, the prompt and the answers that determines a circuit's
numbers. Requests, forms, stored runs and CLI commands all carry this one class - nested
(``CircuitRequest.settings``) or inherited (the JSON API's and the HTML forms' flat fields)
- and ``run_circuit`` takes it whole. Adding a circuit parameter is one field here and, if
users should set it in a page, its form widget.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from analysis.attribution.core import METHODS
from analysis.errors import input_error


class CircuitSettings(BaseModel):
    """How to attribute, prune, connect and test one circuit."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(
        "relp", description="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
        # The registered names, read when a schema is made (a method registered later
        # is listed too).
        json_schema_extra=lambda schema: schema.update(enum=list(METHODS)))
    ig_steps: int = Field(32, ge=1, description="Integrated gradients: quadrature steps.")
    ig_baseline: Literal["auto", "zero", "mean"] = Field(
        "auto", description="Integrated gradients: the activations' baseline.")
    tau: float = Field(0.15, gt=0, le=1, description="Keep |influence| >= tau * |m|.")
    min_influence: float | None = Field(
        None, gt=0, description="An absolute threshold in logit units that replaces "
        "tau * |m| (tau mode). Compare sets it to tau * |m of the base| on both sides, so "
        "the two circuits are cut alike.")
    per_layer_top_k: int = Field(300, ge=1, le=100_000,
                                 description="Candidates per layer before the tau cut.")
    mode: Literal["tau", "cumulative"] = Field("tau", description="Pruning rule.")
    mass: float = Field(0.8, gt=0, le=1,
                        description="Cumulative mode: the share of |influence| kept.")
    max_nodes: int | None = Field(200, ge=1, description="At most this many nodes.")
    edges: bool = Field(True, description="Compute edges among the kept nodes.")
    edge_normalization: Literal["none", "flow"] = "none"
    edge_threshold: float = Field(0.0, ge=0, description="Keep edges with |weight| >= this.")
    drop_always_on: bool = Field(
        True, description="Leave out always-on (massive-activation) neurons, judged from "
                          "the prompt; they are listed with the run.")
    ablation: Literal["zero", "mean"] | None = Field(
        "zero", description="Faithfulness ablation; none skips it.")

    @field_validator("method")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown attribution method {value!r}; choose one of "
                             f"{', '.join(METHODS)}")
        return value

    @field_validator("ig_steps", "ig_baseline", mode="before")
    @classmethod
    def _stored_blank(cls, value: Any, info: Any) -> Any:
        # Runs stored before this class existed blank the IG fields of other methods.
        return cls.model_fields[info.field_name].default if value is None else value

    def normalized(self) -> CircuitSettings:
        """Equal settings for requests that compute the same numbers (so they share a
        cache key): fields the chosen method, mode or edges flag ignores get defaults."""
        defaults = CircuitSettings()
        update: dict[str, Any] = {}
        # Settings only other methods read keep their defaults.
        others = {f for m in METHODS.values() for f in m.settings}
        update.update({f: getattr(defaults, f)
                       for f in others - set(METHODS[self.method].settings)})
        if self.mode == "tau":
            update["mass"] = defaults.mass
            if self.min_influence is not None:
                update["tau"] = defaults.tau
        else:
            update.update(tau=defaults.tau, min_influence=None)
        if not self.edges:
            update.update(edge_normalization=defaults.edge_normalization,
                          edge_threshold=defaults.edge_threshold)
        return self.model_copy(update=update)

    @classmethod
    def of(cls, source: BaseModel) -> CircuitSettings:
        """The settings part of a request or form that inherits these fields."""
        return cls.model_validate(source.model_dump(include=set(cls.model_fields)))

    @classmethod
    def checked(cls, **values: Any) -> CircuitSettings:
        """Build from loose values (CLI options, notebooks); a bad value is an InputError
        naming its field, like every other user mistake."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise input_error(exc) from exc
