"""How completely an attribution accounts for m (its own module so the attribution core
needs no part of the circuit's result types)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Completeness(BaseModel):
    m: float
    influence_sum: float
    target: float
    ratio: float | None
    baseline: float | None = Field(None, description="IG: m with every activation at baseline.")
    baseline_kind: Literal["zero", "mean"] | None = None
    embedding_sum: float | None = Field(None, description="sum(e * grad_e) over the input.")
    layer_sums: list[float] = Field(default_factory=list)
