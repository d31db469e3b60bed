"""The Compare page's view model, figures and CSV exports (no web framework here).

Both graphs are drawn on one layout (the union of their nodes decides where every node
sits) and one marker scale, so the eye can match a node across them; the difference view
draws each node's influence change, tuned minus base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.attribution import CircuitResult, Edge, Node
from analysis.comparison import ComparisonResult, NeuronChange, layer_weight_totals
from frontend.csv_cells import csv_text
from frontend.graph import TOWARDS_A, TOWARDS_B, graph_figure, show_token

CATEGORY_TEXT = {
    "persistent": "persistent driver",
    "strengthened": "strengthened",
    "weakened": "weakened",
    "new": "new",
    "gone": "gone",
    "sign_flip": "sign flip",
}
VERDICT_CLASS = {"pathway removed": "good", "compensated": "warn", "no change": "neutral",
                 "made worse": "bad"}


@dataclass
class NeuronChangeRow:
    name: str
    layer: int
    neuron: int
    base: float
    tuned: float
    delta: float
    category: str
    label: str | None


@dataclass
class TopPair:
    rank: int
    base_token: str
    base_prob: float
    tuned_token: str
    tuned_prob: float


@dataclass
class CompareView:
    run_id: str
    result: ComparisonResult
    base_name: str
    variant_name: str
    a_text: str
    b_text: str | None
    verdict_class: str
    top: list[TopPair]
    neurons: list[NeuronChangeRow]
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_run: str | None = None
    tuned_run: str | None = None


def union_nodes(base: CircuitResult, tuned: CircuitResult) -> list[Node]:
    seen: dict[str, Node] = {}
    for node in [*base.nodes, *tuned.nodes]:
        seen.setdefault(node.node_id, node)
    return list(seen.values())


def difference_circuit(base: CircuitResult, tuned: CircuitResult) -> CircuitResult:
    """Every node of either circuit with influence = tuned - base, and every edge of
    either with weight = tuned - base (a node or edge kept in only one circuit counts as
    0 in the other: it was below that circuit's threshold)."""
    b = {n.node_id: n for n in base.nodes}
    t = {n.node_id: n for n in tuned.nodes}
    nodes = []
    for node_id, node in {**b, **t}.items():
        delta = (t[node_id].influence if node_id in t else 0.0) - (
            b[node_id].influence if node_id in b else 0.0)
        nodes.append(node.model_copy(update={"influence": delta}))
    weights: dict[tuple[str, str], list[float]] = {}
    for sign, circuit in ((-1.0, base), (1.0, tuned)):
        for e in circuit.edges:
            acc = weights.setdefault((e.source, e.target), [0.0, 0.0])
            acc[0] += sign * e.weight
            acc[1] += sign * e.raw
    edges = [Edge(source=s, target=d, weight=w, raw=r)
             for (s, d), (w, r) in weights.items() if w != 0.0]
    return tuned.model_copy(update={"nodes": nodes, "edges": edges})


def compare_figures(base: CircuitResult, tuned: CircuitResult) -> dict[str, dict[str, Any]]:
    placed = union_nodes(base, tuned)
    biggest = max((abs(n.influence) for n in placed), default=0.0) or 1.0
    figures = {
        "base": graph_figure(base, layout_nodes=placed, size_max=biggest, height=460),
        "tuned": graph_figure(tuned, layout_nodes=placed, size_max=biggest, height=460),
    }
    diff = difference_circuit(base, tuned)
    figure = graph_figure(diff, layout_nodes=placed, size_max=biggest, height=460)
    for trace in figure["data"]:
        name = trace.get("name", "")
        if name.startswith("towards "):
            trace["name"] = name.replace("towards", "moved towards", 1)
    figure["layout"]["meta"]["summary"] = (f"{len(diff.nodes)} nodes · influence change, "
                                           "variant minus base")
    figures["difference"] = figure
    return figures


def weights_figure(result: ComparisonResult) -> dict[str, Any]:
    per_layer = layer_weight_totals(result.weight_changes)
    what = "adapter norm ‖s·B·A‖/‖W‖" if result.weight_kind == "lora" else "‖ΔW‖/‖W‖"
    return {
        "data": [{"type": "bar", "x": [f"L{k}" for k in per_layer],
                  "y": list(per_layer.values()), "marker": {"color": "#6b7280"},
                  "hovertemplate": "%{x}: %{y:.3g}<extra></extra>", "name": what}],
        "layout": {"height": 260, "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
                   "title": {"text": f"largest change per layer ({what})",
                             "font": {"size": 13}},
                   "yaxis": {"rangemode": "tozero"}, "plot_bgcolor": "white",
                   "paper_bgcolor": "white", "meta": {"summary": what}},
    }


def patching_figure(result: ComparisonResult) -> dict[str, Any]:
    layers = [f"L{p.layer}" for p in result.patching]
    return {
        "data": [
            {"type": "bar", "x": layers, "y": [p.mlp_share for p in result.patching],
             "name": "MLP output", "marker": {"color": TOWARDS_A},
             "hovertemplate": "%{x} MLP: %{y:.1%} of Δm<extra></extra>"},
            {"type": "scatter", "mode": "lines+markers", "x": layers,
             "y": [p.residual_share for p in result.patching], "name": "residual stream",
             "line": {"color": TOWARDS_B},
             "hovertemplate": "%{x} residual: %{y:.1%} of Δm<extra></extra>"},
        ],
        "layout": {"height": 280, "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
                   "title": {"text": "share of Δm carried, patched variant → base",
                             "font": {"size": 13}},
                   "yaxis": {"tickformat": ".0%"}, "legend": {"orientation": "h"},
                   "plot_bgcolor": "white", "paper_bgcolor": "white",
                   "meta": {"summary": "activation patching"}},
    }


def neuron_rows(changes: list[NeuronChange],
                labels: dict[tuple[int, int], str] | None = None) -> list[NeuronChangeRow]:
    labels = labels or {}
    return [NeuronChangeRow(name=c.name, layer=c.layer, neuron=c.neuron, base=c.base,
                            tuned=c.tuned, delta=c.delta, category=CATEGORY_TEXT[c.category],
                            label=labels.get((c.layer, c.neuron)))
            for c in changes]


def compare_view(run_id: str, result: ComparisonResult, base_name: str, variant_name: str,
                 labels: dict[tuple[int, int], str] | None = None,
                 base_run: str | None = None, tuned_run: str | None = None) -> CompareView:
    top = [TopPair(rank=i + 1, base_token=show_token(b["token"]), base_prob=b["prob"],
                   tuned_token=show_token(t["token"]), tuned_prob=t["prob"])
           for i, (b, t) in enumerate(zip(result.base.top, result.tuned.top, strict=False))]
    circuit = result.tuned_circuit or result.base_circuit
    figures: dict[str, dict[str, Any]] = {}
    if result.base_circuit is not None and result.tuned_circuit is not None:
        figures = compare_figures(result.base_circuit, result.tuned_circuit)
    if result.weight_changes:
        figures["weights"] = weights_figure(result)
    if result.patching:
        figures["patching"] = patching_figure(result)
    return CompareView(
        run_id=run_id, result=result, base_name=base_name, variant_name=variant_name,
        a_text=show_token(circuit.target_a_text) if circuit else "A",
        b_text=show_token(circuit.target_b_text) if circuit and circuit.target_b_text
        else None,
        verdict_class=VERDICT_CLASS[result.comparison.verdict], top=top,
        neurons=neuron_rows(result.comparison.neurons, labels), figures=figures,
        base_run=base_run, tuned_run=tuned_run,
    )


def neurons_csv(result: ComparisonResult,
                labels: dict[tuple[int, int], str] | None = None) -> str:
    return csv_text(["neuron", "layer", "index", "influence_base", "influence_variant",
                     "delta", "category", "label"],
                    ([row.name, row.layer, row.neuron, f"{row.base:.6g}", f"{row.tuned:.6g}",
                      f"{row.delta:.6g}", row.category, row.label or ""]
                     for row in neuron_rows(result.comparison.neurons, labels)))


def prompts_csv(result: ComparisonResult) -> str:
    rows = []
    for r in result.prompts:
        b, t = r.before, r.after
        rows.append([r.kind, r.prompt, r.expected, r.wrong or "",
                     f"{b.expected.prob:.6g}", f"{t.expected.prob:.6g}",
                     "" if b.wrong is None else f"{b.wrong.prob:.6g}",
                     "" if t.wrong is None else f"{t.wrong.prob:.6g}",
                     b.top1.text, t.top1.text, r.outcome])
    return csv_text(["kind", "prompt", "expected", "wrong", "p_expected_base",
                     "p_expected_variant", "p_wrong_base", "p_wrong_variant", "top1_base",
                     "top1_variant", "outcome"], rows)
