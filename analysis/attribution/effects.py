"""Measured single-neuron effects: what zeroing (or mean-ablating) one neuron does to m.

Attribution is a first-order estimate: a neuron listed at -0.66 "towards B" can, once
really zeroed, make m *worse* (L24/N110 on the seed prompt: m -0.993 -> -1.452), because
downstream nonlinearities, norms and attention answer differently to a large change than
the gradient says. A ranking that a user acts on (the top drivers, the concept
candidates) therefore shows the measured effect beside the attributed one and flags where
their signs disagree.

``effect = m_clean - m_ablated``: the part of m the neuron supplies, in the influence's
own convention (positive = it was pushing towards A), so the two compare directly. The
neuron is ablated at every position of the prompt, as its influence is summed over them.
Mean ablation sets it to its mean over the prompt's positions (data-free, as the
faithfulness table's "mean" mode).

One batched forward serves every neuron: row 0 is the clean prompt, then one row per
neuron and mode. Row 0 is never patched, so at each layer its values are the clean ones
the mean is taken from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, Field, computed_field

from analysis.attribution.adapters import get_adapter
from analysis.attribution.core import last_metric_logits, metric_from_logits
from analysis.attribution.results import CircuitResult
from analysis.neuron_ref import neuron_name
from analysis.nnsight_traces import patched_last

EFFECT_RULE = ("Measured effect = m - m with the neuron ablated at every position of the "
               "prompt (zeroed, or set to its mean over the positions), so a positive effect "
               "means it was pushing towards A, as a positive influence does. Flagged when "
               "the attribution and the zero ablation point opposite ways.")
MAX_ROWS = 96  # rows per forward; more neurons take more forwards of this many rows
TOP_DRIVERS = 12
MAX_MEASURED = 64


class NeuronEffect(BaseModel):
    """A neuron's attributed influence beside its measured ablation effects on m."""

    layer: int
    neuron: int
    influence: float = Field(description="Attributed, summed over positions (logit units).")
    zero: float = Field(description="m_clean - m with the neuron zeroed at every position.")
    mean: float = Field(description="m_clean - m with it at its mean over the positions.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        return neuron_name(self.layer, self.neuron)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def disagrees(self) -> bool:
        """The attribution and the zero ablation say opposite directions."""
        return self.influence * self.zero < 0

    @property
    def measured_towards(self) -> str:
        return "A" if self.zero > 0 else "B"


def measure_effects(model: torch.nn.Module, input_ids: Sequence[int], target_a: int,
                    target_b: int | None,
                    neurons: Sequence[tuple[int, int, float]]) -> list[NeuronEffect]:
    """Zero and mean ablation of each ``(layer, neuron, influence)``, batched (module
    docstring). Runs here or on NDIF, through the traced forward."""
    adapter = get_adapter(model)
    neurons = list(neurons)
    out: list[NeuronEffect] = []
    per_forward = max(1, (MAX_ROWS - 1) // 2)
    for start in range(0, len(neurons), per_forward):
        chunk = neurons[start:start + per_forward]
        by_layer: dict[int, list[tuple[int, int]]] = {}
        for i, (layer, neuron, _) in enumerate(chunk):
            by_layer.setdefault(layer, []).append((i, neuron))

        def patch(layer: int, h: torch.Tensor,
                  by_layer: dict[int, list[tuple[int, int]]] = by_layer) -> torch.Tensor | None:
            if layer not in by_layer:
                return None
            h = h.clone()
            for i, neuron in by_layer[layer]:
                h[1 + 2 * i, :, neuron] = 0.0
                h[2 + 2 * i, :, neuron] = h[0, :, neuron].mean()
            return h

        last = patched_last(adapter, input_ids, 1 + 2 * len(chunk), patch)
        m = metric_from_logits(last_metric_logits(adapter, last, target_a, target_b)).tolist()
        for i, (layer, neuron, influence) in enumerate(chunk):
            out.append(NeuronEffect(layer=layer, neuron=neuron, influence=influence,
                                    zero=m[0] - m[1 + 2 * i], mean=m[0] - m[2 + 2 * i]))
    return out


def measured_pool(result: CircuitResult, top: int = TOP_DRIVERS,
                  limit: int = MAX_MEASURED) -> list[tuple[int, int, float]]:
    """The kept neurons a run measures: its ``top`` drivers by |influence| and then every
    neuron pushing towards B (the concept candidates' pool), ``limit`` in all."""
    ranked = sorted(result.neurons, key=lambda n: -abs(n.influence))
    pool = ranked[:top] + [n for n in ranked[top:] if n.influence < 0]
    return [(n.layer, n.neuron, n.influence) for n in pool[:limit]]


def run_effects(model: torch.nn.Module, result: CircuitResult
                ) -> dict[tuple[int, int], NeuronEffect]:
    """The measured effects of a run's pool (:func:`measured_pool`), one batched forward."""
    found = measure_effects(model, result.input_ids, result.target_a, result.target_b,
                            measured_pool(result))
    return {(e.layer, e.neuron): e for e in found}


def top_drivers(result: CircuitResult, effects: dict[tuple[int, int], NeuronEffect],
                k: int = TOP_DRIVERS) -> list[NeuronEffect]:
    """The run's ``k`` strongest kept neurons by |attributed influence|, with their
    measured effects."""
    ranked = sorted(result.neurons, key=lambda n: -abs(n.influence))[:k]
    return [effects[(n.layer, n.neuron)] for n in ranked if (n.layer, n.neuron) in effects]


__all__ = ["EFFECT_RULE", "NeuronEffect", "measure_effects", "measured_pool", "run_effects",
           "top_drivers"]
