"""Forward passes with node activations overwritten: ablations and interventions.

One batched forward serves several conditions (one row each); ``patch(layer, h)`` gets
the layer's node activations ``[rows, seq, n_neurons]`` and returns what the MLP should
use instead. Downstream activations are recomputed, so effects propagate. The forward is
an nnsight trace (``analysis.nnsight_traces.patched_last``), here or on NDIF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, Field

from analysis.attribution.adapters import ArchAdapter, get_adapter
from analysis.attribution.core import (
    Attribution,
    as_id_list,
    check_targets,
    decode_tokens,
    last_full_logits,
    last_metric_logits,
    metric_from_logits,
)
from analysis.attribution.results import Faithfulness, Node, TokenProb
from analysis.errors import InputError
from analysis.nnsight_traces import patched_last

AblationMode = Literal["zero", "mean"]


# ---------------------------------------------------------------------------------------
# Faithfulness
# ---------------------------------------------------------------------------------------


def faithfulness(
    model: torch.nn.Module,
    attr: Attribution,
    nodes: Sequence[Node],
    *,
    mode: AblationMode | str = "zero",
) -> Faithfulness:
    """Ablate the circuit (all of it, each direction) or everything but it; report m.

    ``mean`` ablation sets a neuron to its mean activation over the prompt's positions
    (a data-free stand-in for a dataset mean; the BOS position, which often carries
    outsized activations, is included). One forward pass with six rows.
    """
    if mode not in ("zero", "mean"):
        raise InputError("ablation must be 'zero' or 'mean'", field="ablation")
    adapter = get_adapter(model)
    n_layers, seq, n_neurons = attr.influence.shape
    circuit = torch.zeros(n_layers, seq, n_neurons, dtype=torch.bool)
    to_a = torch.zeros_like(circuit)
    for node in nodes:
        circuit[node.key] = True
        if node.influence > 0:
            to_a[node.key] = True
    to_b = circuit & ~to_a
    means = attr.activation.mean(dim=1)  # [L, N]

    def patch(layer: int, h: torch.Tensor) -> torch.Tensor:
        c = circuit[layer].to(h.device)
        masks = torch.stack(
            [
                torch.zeros_like(c),  # clean
                c,  # without circuit
                to_a[layer].to(h.device),  # without nodes pushing A
                to_b[layer].to(h.device),  # without nodes pushing B
                ~c,  # circuit only
                torch.ones_like(c),  # everything ablated
            ]
        )
        fill = 0.0 if mode == "zero" else means[layer].to(h.device, h.dtype)
        return torch.where(masks, fill, h)

    last = patched_last(adapter, attr.input_ids, 6, patch)
    m = metric_from_logits(last_metric_logits(adapter, last, attr.target_a,
                                              attr.target_b)).tolist()
    clean, without, without_a, without_b, only, none = m
    denom = clean - none
    infl_a = sum(n.influence for n in nodes if n.influence > 0)
    infl_b = sum(n.influence for n in nodes if n.influence <= 0)
    return Faithfulness(
        mode=mode,  # type: ignore[arg-type]
        m_clean=clean,
        m_without_circuit=without,
        m_without_towards_a=without_a,
        m_without_towards_b=without_b,
        m_circuit_only=only,
        m_all_ablated=none,
        recovered=(only - none) / denom if abs(denom) > 1e-6 else None,
        n_nodes=len(nodes),
        n_towards_a=sum(1 for n in nodes if n.influence > 0),
        n_towards_b=sum(1 for n in nodes if n.influence <= 0),
        influence_towards_a=float(infl_a),
        influence_towards_b=float(infl_b),
    )


def ablated_metric(
    model: torch.nn.Module,
    input_ids: Sequence[int],
    target_a: int,
    target_b: int | None,
    nodes: Sequence[tuple[int, int, int]],
    *,
    fill: float | torch.Tensor = 0.0,
) -> float:
    """m with the given (layer, position, neuron) activations set to ``fill``."""
    adapter = get_adapter(model)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for layer, pos, neuron in nodes:
        by_layer.setdefault(layer, []).append((pos, neuron))

    def patch(layer: int, h: torch.Tensor) -> torch.Tensor | None:
        if layer not in by_layer:
            return None
        h = h.clone()
        for pos, neuron in by_layer[layer]:
            h[:, pos, neuron] = fill
        return h

    last = patched_last(adapter, input_ids, 1, patch)
    return float(metric_from_logits(last_metric_logits(adapter, last, target_a, target_b))[0])


# ---------------------------------------------------------------------------------------
# Interventions
# ---------------------------------------------------------------------------------------


class NeuronEdit(BaseModel):
    """Multiply one neuron's activation by ``scale`` (0 = zero it) at some or all positions."""

    layer: int
    neuron: int
    scale: float = 0.0
    positions: list[int] | None = Field(None, description="None = every position.")


class InterventionResult(BaseModel):
    edits: list[NeuronEdit]
    target_a: int | None = None
    target_b: int | None = None
    m_before: float | None = None
    m_after: float | None = None
    prob_a_before: float | None = None
    prob_a_after: float | None = None
    prob_b_before: float | None = None
    prob_b_after: float | None = None
    top_before: list[TokenProb]
    top_after: list[TokenProb]


def check_edits(adapter: ArchAdapter, edits: Sequence[NeuronEdit], seq: int) -> None:
    if not edits:
        raise InputError("choose at least one neuron to edit", field="edits")
    for edit in edits:
        if not 0 <= edit.layer < adapter.n_layers:
            raise InputError(
                f"layer {edit.layer} is out of range (the model has {adapter.n_layers})",
                field="layer",
            )
        if not 0 <= edit.neuron < adapter.n_neurons:
            raise InputError(
                f"neuron {edit.neuron} is out of range (layers have {adapter.n_neurons})",
                field="neuron",
            )
        if not math.isfinite(edit.scale):
            raise InputError("scale must be a finite number", field="scale")
        for pos in edit.positions or []:
            if not 0 <= pos < seq:
                raise InputError(
                    f"position {pos} is outside the prompt (0..{seq - 1})", field="positions"
                )


def intervene(
    model: torch.nn.Module,
    tokenizer: object | None,
    input_ids: Sequence[int] | torch.Tensor,
    edits: Sequence[NeuronEdit | dict[str, object]],
    target_a: int | None = None,
    target_b: int | None = None,
    *,
    top_k: int = 10,
) -> InterventionResult:
    """Re-run the prompt with neurons scaled; report new top-k and m against the old."""
    adapter = get_adapter(model)
    ids = as_id_list(input_ids, adapter.vocab_size)
    parsed = [e if isinstance(e, NeuronEdit) else NeuronEdit.model_validate(e) for e in edits]
    check_edits(adapter, parsed, len(ids))
    if target_a is not None:
        check_targets(target_a, target_b, adapter.vocab_size)
    elif target_b is not None:
        raise InputError("target_b needs target_a", field="target_a")
    if not isinstance(top_k, int) or not 1 <= top_k <= 1000:
        raise InputError("top_k must be in [1, 1000]", field="top_k")

    scales: dict[int, torch.Tensor] = {}
    for edit in parsed:
        s = scales.setdefault(edit.layer, torch.ones(len(ids), adapter.n_neurons))
        positions = edit.positions if edit.positions is not None else list(range(len(ids)))
        s[positions, edit.neuron] *= edit.scale

    def patch(layer: int, h: torch.Tensor) -> torch.Tensor | None:
        if layer not in scales:
            return None
        factor = torch.stack([torch.ones_like(scales[layer]), scales[layer]])
        return h * factor.to(h.device, h.dtype)

    last = patched_last(adapter, ids, 2, patch)
    logits = last_full_logits(adapter, last)
    probs = logits.softmax(-1)
    result = InterventionResult(
        edits=parsed,
        target_a=target_a,
        target_b=target_b,
        top_before=_top(tokenizer, logits[0], probs[0], top_k),
        top_after=_top(tokenizer, logits[1], probs[1], top_k),
    )
    if target_a is not None:
        m = metric_from_logits(last_metric_logits(adapter, last, target_a, target_b))
        result.m_before, result.m_after = float(m[0]), float(m[1])
        result.prob_a_before = float(probs[0, target_a])
        result.prob_a_after = float(probs[1, target_a])
        if target_b is not None:
            result.prob_b_before = float(probs[0, target_b])
            result.prob_b_after = float(probs[1, target_b])
    return result


def _top(
    tokenizer: object | None, logits: torch.Tensor, probs: torch.Tensor, k: int
) -> list[TokenProb]:
    top = probs.topk(k)
    ids = top.indices.tolist()
    texts = decode_tokens(tokenizer, ids) or [None] * len(ids)
    return [
        TokenProb(id=i, token=t, logit=float(logits[i]), prob=float(p))
        for i, t, p in zip(ids, texts, top.values.tolist(), strict=True)
    ]
