"""Pruning a dense attribution into the nodes worth showing.

Two selection rules, both after a per-layer pre-filter that keeps at most
``per_layer_top_k`` nodes of each layer by ``|influence|``:

* ``tau`` (the lab notes' ``--tau``): keep nodes with ``|I| >= tau * |m|``, or with
  ``|I| >= min_influence`` when an absolute threshold is given (Compare cuts both sides
  at ``tau * |m of the base|``);
* ``cumulative`` (Transluce / circuit-tracer): rank by ``|I|`` and keep the smallest
  prefix whose ``|I|`` adds up to ``mass`` of the total ``|I|`` of *all* nodes (the
  denominator is taken before the pre-filter, so the fraction is honest).

``max_nodes`` then caps the result (largest ``|I|`` first). Nodes come back sorted by
``|influence|``, largest first.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from analysis.attribution.core import Attribution
from analysis.attribution.results import NeuronTotal, Node
from analysis.errors import InputError

PruneMode = Literal["tau", "cumulative"]


def check_prune_params(
    tau: float, per_layer_top_k: int, mode: str, mass: float, max_nodes: int | None
) -> None:
    if mode not in ("tau", "cumulative"):
        raise InputError("mode must be 'tau' or 'cumulative'", field="mode")
    if not isinstance(tau, int | float) or not math.isfinite(tau) or not 0 < tau <= 1:
        raise InputError("tau must be in (0, 1]", field="tau")
    if not isinstance(mass, int | float) or not math.isfinite(mass) or not 0 < mass <= 1:
        raise InputError("mass must be in (0, 1]", field="mass")
    if not isinstance(per_layer_top_k, int) or per_layer_top_k < 1:
        raise InputError("per_layer_top_k must be a positive integer", field="per_layer_top_k")
    if max_nodes is not None and (not isinstance(max_nodes, int) or max_nodes < 1):
        raise InputError("max_nodes must be a positive integer", field="max_nodes")


def prune(
    attr: Attribution,
    *,
    tau: float = 0.15,
    per_layer_top_k: int = 300,
    mode: PruneMode | str = "tau",
    mass: float = 0.8,
    max_nodes: int | None = None,
    min_influence: float | None = None,
) -> list[Node]:
    """Kept nodes, sorted by ``|influence|`` (see module docstring)."""
    check_prune_params(tau, per_layer_top_k, mode, mass, max_nodes)
    if min_influence is not None and not (math.isfinite(min_influence) and min_influence > 0):
        raise InputError("min_influence must be a positive number", field="min_influence")
    n_layers, n_pos, n_neurons = attr.influence.shape
    flat = attr.influence.reshape(n_layers, n_pos * n_neurons)
    k = min(per_layer_top_k, n_pos * n_neurons)
    top = flat.abs().topk(k, dim=1)
    layers = torch.arange(n_layers).unsqueeze(1).expand(-1, k).reshape(-1)
    cells = top.indices.reshape(-1)
    scores = top.values.reshape(-1)
    order = scores.argsort(descending=True, stable=True)
    layers, cells, scores = layers[order], cells[order], scores[order]

    if mode == "tau":
        keep = scores >= threshold(attr.m, tau, min_influence)
        keep &= scores > 0
    else:
        total = float(attr.influence.abs().sum())
        before = torch.cumsum(scores, 0) - scores  # mass of the nodes ranked above
        keep = (before < mass * total) & (scores > 0)
    layers, cells = layers[keep], cells[keep]
    if max_nodes is not None:
        layers, cells = layers[:max_nodes], cells[:max_nodes]
    return [
        make_node(attr, int(layer), int(cell) // n_neurons, int(cell) % n_neurons)
        for layer, cell in zip(layers.tolist(), cells.tolist(), strict=True)
    ]


def threshold(m: float, tau: float, min_influence: float | None = None) -> float:
    """The tau mode's cut in logit units: the absolute one when given, else tau * |m|."""
    return min_influence if min_influence is not None else tau * abs(m)


def count_above(attr: Attribution, cut: float) -> tuple[int, int]:
    """How many nodes reach ``cut`` in all, and in the fullest layer (before any cap): what
    tells whether max_nodes or per_layer_top_k bound."""
    above = attr.influence.abs() >= cut
    per_layer = above.reshape(above.shape[0], -1).sum(dim=1)
    return int(per_layer.sum()), int(per_layer.max()) if per_layer.numel() else 0


def make_node(attr: Attribution, layer: int, position: int, neuron: int) -> Node:
    return Node(
        layer=layer,
        position=position,
        neuron=neuron,
        influence=float(attr.influence[layer, position, neuron]),
        activation=float(attr.activation[layer, position, neuron]),
        token=attr.token(position),
        token_id=attr.input_ids[position],
    )


def top_neurons(attr: Attribution, k: int = 20) -> list[tuple[int, int, float]]:
    """Neurons ranked by ``|influence summed over positions|``: (layer, neuron, total)."""
    totals = attr.neuron_totals()
    n_neurons = totals.shape[1]
    _, idx = totals.reshape(-1).abs().topk(min(k, totals.numel()))
    out = []
    for i in idx.tolist():
        layer, neuron = divmod(i, n_neurons)
        out.append((layer, neuron, float(totals[layer, neuron])))
    return out


def neuron_totals(attr: Attribution, nodes: list[Node]) -> list[NeuronTotal]:
    """Each distinct kept (layer, neuron), with its influence summed over all positions;
    sorted by |total|."""
    positions: dict[tuple[int, int], list[int]] = {}
    labels: dict[tuple[int, int], str | None] = {}
    for node in nodes:
        positions.setdefault((node.layer, node.neuron), []).append(node.position)
        labels.setdefault((node.layer, node.neuron), node.label)
    totals = attr.neuron_totals()
    out = [
        NeuronTotal(
            layer=layer,
            neuron=neuron,
            influence=float(totals[layer, neuron]),
            positions=sorted(pos),
            label=labels[(layer, neuron)],
            by_position=attr.influence[layer, :, neuron].tolist(),
            activations=attr.activation[layer, :, neuron].tolist(),
        )
        for (layer, neuron), pos in positions.items()
    ]
    return sorted(out, key=lambda n: -abs(n.influence))
