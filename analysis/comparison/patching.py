"""Activation patching from the variant into the base, layer by layer: the share of the
change in m that each layer's MLP output, and the residual stream after it, carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel

from analysis.access import record_outputs, replaced_outputs_hidden
from analysis.attribution import CircuitResult
from analysis.attribution.adapters import get_adapter
from analysis.attribution.core import metric_from_logits, metric_logits
from analysis.models import LoadedModel

if TYPE_CHECKING:  # the two-phase run imports this module
    from analysis.comparison.run import Observation


PATCH_ROWS = 16  # patched conditions per forward pass


class LayerShare(BaseModel):
    """How much of the change in m one layer carries, by patching the variant's
    activations into the base: share = (m_patched - m_base) / (m_tuned - m_base)."""

    layer: int
    m_mlp: float
    m_residual: float
    mlp_share: float | None
    residual_share: float | None


def record_layers(lm: LoadedModel, input_ids: list[int]) -> dict[str, torch.Tensor]:
    """Each layer's MLP output (as added to the residual) and its output residual stream,
    ``[L, seq, d]`` each, for the prompt (one nnsight trace)."""
    adapter = get_adapter(lm.model)
    modules = [m for layer in range(adapter.n_layers)
               for m in (adapter.mlp_output_module(layer), adapter.layers()[layer])]
    outputs = record_outputs(adapter, input_ids, modules)
    return {"mlp": torch.stack(outputs[0::2]), "residual": torch.stack(outputs[1::2])}


def patch_layers(lm: LoadedModel, circuit: CircuitResult,
                 tuned: Observation) -> list[LayerShare]:
    """For each layer, the base's m with that layer's MLP output (and, separately, its
    output residual stream) replaced by the variant's. Batched: one row per condition."""
    adapter = get_adapter(lm.model)
    n = adapter.n_layers
    recorded = tuned.recorded
    m_base, m_tuned = circuit.m, tuned.circuit.m
    conditions = [("mlp", layer) for layer in range(n)] + [("residual", layer)
                                                          for layer in range(n)]
    results: dict[tuple[str, int], float] = {}
    for start in range(0, len(conditions), PATCH_ROWS):
        chunk = conditions[start:start + PATCH_ROWS]
        replacements = []
        for layer in range(n):  # forward order: a layer's MLP output, then its output
            for where in ("mlp", "residual"):
                rows = [i for i, c in enumerate(chunk) if c == (where, layer)]
                if rows:
                    module = (adapter.mlp_output_module(layer) if where == "mlp"
                              else adapter.layers()[layer])
                    replacements.append((module, rows, recorded[where][layer]))
        hidden = replaced_outputs_hidden(adapter, circuit.input_ids, len(chunk), replacements)
        m = metric_from_logits(metric_logits(adapter, hidden, circuit.target_a,
                                             circuit.target_b)).tolist()
        results.update(zip(chunk, m, strict=True))
    delta = m_tuned - m_base

    def share(value: float) -> float | None:
        return (value - m_base) / delta if abs(delta) > 1e-6 else None

    return [LayerShare(layer=layer, m_mlp=results[("mlp", layer)],
                       m_residual=results[("residual", layer)],
                       mlp_share=share(results[("mlp", layer)]),
                       residual_share=share(results[("residual", layer)]))
            for layer in range(n)]
