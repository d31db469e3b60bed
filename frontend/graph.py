"""Plotly figures for circuits, built as plain dicts (no server, no plotly import needed).

The attribution-graph layout: x is the token position, y the layer, with the input
embeddings on the bottom row and the two answer logits on the top row. Nodes that share
a (layer, position) cell are spread sideways inside it. Edges are drawn as a handful of
line traces (by sign and width bucket) rather than one trace per edge, so a graph of
several hundred nodes and a couple of thousand edges stays a small, fast figure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import markupsafe

from analysis.attribution.results import METRIC_NODE_ID, CircuitResult, Node

TOWARDS_A = "#1d4ed8"  # blue: pushes m = logit A - logit B up
TOWARDS_B = "#c2410c"  # orange-red: pushes towards B
EDGE_POS = "rgba(29, 78, 216, {a})"
EDGE_NEG = "rgba(194, 65, 12, {a})"
MAX_EDGES = 1500
CELL_WIDTH = 0.75  # share of a position column that one cell's nodes may spread over
MAX_COLUMN = 5.0  # widest column, in units of a plain one
WIDTH_BUCKETS = (0.75, 2.0, 4.0)  # line widths for weak / medium / strong edges


def show_token(text: str | None) -> str:
    """A token as it appears on an axis: visible spaces and newlines."""
    if text is None:
        return "?"
    return text.replace(" ", "·").replace("\n", "⏎") or "∅"


def n_layers_of(result: CircuitResult) -> int:
    sums = len(result.completeness.layer_sums)
    deepest = max((n.layer for n in result.nodes), default=-1) + 1
    return max(sums, deepest, 1)


def column_layout(nodes: list[Node], n_pos: int) -> tuple[list[float], list[float]]:
    """x of each position's column. A column is as wide as its busiest cell needs (the
    last position usually holds most nodes), so crowded cells get room to spread out."""
    busiest = [1] * n_pos
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for node in nodes:
        counts[(node.layer, node.position)] += 1
    for (_, position), count in counts.items():
        if 0 <= position < n_pos:
            busiest[position] = max(busiest[position], count)
    widths = [min(MAX_COLUMN, max(1.0, math.sqrt(c) / 1.5)) for c in busiest]
    centres, left = [], 0.0
    for w in widths:
        centres.append(left + w / 2)
        left += w
    return centres, widths


def node_positions(nodes: list[Node], centres: list[float],
                   widths: list[float]) -> dict[str, tuple[float, int]]:
    """(x, y) of every node: its cell's nodes spread evenly across its column, by neuron."""
    cells: dict[tuple[int, int], list[Node]] = defaultdict(list)
    for node in nodes:
        cells[(node.layer, node.position)].append(node)
    placed: dict[str, tuple[float, int]] = {}
    for (layer, position), members in cells.items():
        members.sort(key=lambda n: n.neuron)
        k = len(members)
        spread = CELL_WIDTH * widths[position]
        for i, node in enumerate(members):
            offset = 0.0 if k == 1 else (i / (k - 1) - 0.5) * spread
            placed[node.node_id] = (round(centres[position] + offset, 4), layer)
    return placed


def answer_labels(result: CircuitResult) -> tuple[str, str | None]:
    a = f"A {show_token(result.target_a_text)}"
    b = f"B {show_token(result.target_b_text)}" if result.target_b is not None else None
    return a, b


def graph_figure(result: CircuitResult, *, max_edges: int = MAX_EDGES,
                 height: int | None = None, layout_nodes: list[Node] | None = None,
                 size_max: float | None = None) -> dict[str, Any]:
    """The attribution graph of a (possibly re-filtered) circuit as a Plotly figure dict.

    ``layout_nodes`` (a superset of the circuit's nodes) and ``size_max`` put several
    graphs on one layout and one marker scale: a node sits at the same spot and a given
    influence draws the same size in each (the Compare page's side-by-side graphs)."""
    n_layers = n_layers_of(result)
    n_pos = len(result.tokens)
    last = n_pos - 1
    placed = layout_nodes if layout_nodes is not None else result.nodes
    centres, widths = column_layout(placed, n_pos)
    xy = node_positions(placed, centres, widths)
    half = widths[last] / 2 if n_pos else 0.5
    logit_a_xy = (centres[last] - half / 2 if result.target_b is not None else centres[last],
                  n_layers)
    logit_b_xy = (centres[last] + half / 2, n_layers)
    a_label, b_label = answer_labels(result)

    traces: list[dict[str, Any]] = []
    edges = sorted(result.edges, key=lambda e: -abs(e.weight))[:max_edges]
    strongest = max((abs(e.weight) for e in edges), default=0.0)
    buckets: dict[tuple[bool, int], tuple[list[float | None], list[float | None]]] = {}
    for edge in edges:
        if edge.source not in xy:
            continue
        if edge.target == METRIC_NODE_ID:
            end = logit_a_xy if edge.weight > 0 or result.target_b is None else logit_b_xy
        elif edge.target in xy:
            end = xy[edge.target]
        else:
            continue
        share = abs(edge.weight) / strongest if strongest else 0.0
        width = 0 if share < 0.2 else (1 if share < 0.6 else 2)
        xs, ys = buckets.setdefault((edge.weight > 0, width), ([], []))
        start = xy[edge.source]
        xs.extend([start[0], end[0], None])
        ys.extend([start[1], end[1], None])
    for (positive, width), (xs, ys) in sorted(buckets.items()):
        alpha = (0.25, 0.45, 0.7)[width]
        traces.append({
            "type": "scatter", "mode": "lines", "x": xs, "y": ys,
            "line": {"width": WIDTH_BUCKETS[width],
                     "color": (EDGE_POS if positive else EDGE_NEG).format(a=alpha)},
            "hoverinfo": "skip", "showlegend": False,
            "name": f"edges {'+' if positive else '-'} {width}",
        })

    # The embedding row: one marker per input token.
    traces.append({
        "type": "scatter", "mode": "markers", "name": "embeddings",
        "x": centres, "y": [-1] * n_pos, "customdata": list(range(n_pos)),
        "marker": {"symbol": "square", "size": 9, "color": "#9ca3af"},
        "text": [show_token(t.text) for t in result.tokens],
        "hovertemplate": "embedding of %{text} (position %{customdata})<extra></extra>",
        "showlegend": False,
    })
    biggest = size_max or max((abs(n.influence) for n in result.nodes), default=0.0) or 1.0
    for towards, colour, answer in (("A", TOWARDS_A, a_label), ("B", TOWARDS_B, b_label)):
        members = [n for n in result.nodes if n.towards == towards]
        if towards == "B" and answer is None:
            answer = "lowers A"
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"towards {answer}",
            "x": [xy[n.node_id][0] for n in members],
            "y": [n.layer for n in members],
            "marker": {
                "size": [round(6 + 22 * math.sqrt(abs(n.influence) / biggest), 2)
                         for n in members],
                "color": colour, "line": {"width": 1, "color": "white"},
            },
            # customdata drives the click handler: node id, layer, neuron, position.
            "customdata": [[n.node_id, n.layer, n.neuron, n.position] for n in members],
            "text": [hover_text(n) for n in members],
            "hovertemplate": "%{text}<extra></extra>",
        })
    logit_x = [logit_a_xy[0]] + ([logit_b_xy[0]] if b_label else [])
    traces.append({
        "type": "scatter", "mode": "markers+text", "name": "answer logits",
        "x": logit_x, "y": [n_layers] * len(logit_x),
        "marker": {"symbol": "diamond", "size": 14,
                   "color": [TOWARDS_A, TOWARDS_B][: len(logit_x)]},
        "text": [a_label] + ([b_label] if b_label else []),
        "textposition": ["top left", "top right"][: len(logit_x)],
        "hovertemplate": "logit of %{text}<extra></extra>",
        "showlegend": False,
    })
    layer_ticks = list(range(-1, n_layers + 1))
    layer_text = ["emb"] + [f"L{i}" for i in range(n_layers)] + ["logits"]
    shown = len(edges)
    title = (f"{len(result.nodes)} nodes · {shown} edges"
             + (f" (the strongest {shown} of {len(result.edges)})"
                if shown < len(result.edges) else "")
             + " · node→logit edges included")
    layout = {
        "meta": {"summary": title, "edges_drawn": shown, "edges_total": len(result.edges)},
        "height": height or max(420, 24 * (n_layers + 2) + 140),
        "margin": {"l": 50, "r": 50, "t": 30, "b": 70},
        "xaxis": {"tickmode": "array", "tickvals": centres,
                  "ticktext": [show_token(t.text) for t in result.tokens],
                  "tickangle": -40,
                  # Room on the right for the B logit's label, written beside it.
                  "range": [-0.3, (centres[-1] + half + 1.2) if centres else 1],
                  "zeroline": False,
                  "showgrid": False},
        "yaxis": {"tickmode": "array", "tickvals": layer_ticks, "ticktext": layer_text,
                  "range": [-1.6, n_layers + 1.4], "zeroline": False,
                  "gridcolor": "#eef0f3"},
        "legend": {"orientation": "h", "y": 1.0, "x": 0, "yanchor": "bottom"},
        "hovermode": "closest", "clickmode": "event", "plot_bgcolor": "white",
        "paper_bgcolor": "white", "dragmode": "pan",
    }
    return {"data": traces, "layout": layout}


def hover_text(node: Node) -> str:
    label = f"<br><i>{escape(node.label)}</i>" if node.label else ""
    return (f"<b>{node.name}</b> at {escape(show_token(node.token))} (pos {node.position})"
            f"<br>influence {node.influence:+.3f} · activation {node.activation:+.3f}{label}")


def escape(text: str) -> str:
    """Plotly renders hover text as HTML-ish markup (and decodes entities): escape what a
    token or label holds."""
    return str(markupsafe.escape(text))


def position_figure(tokens: list[str | None], influence: list[float],
                    activation: list[float], kept: list[int]) -> dict[str, Any]:
    """One neuron across the prompt: influence (bars) and activation (line) per position."""
    x = list(range(len(tokens)))
    colours = [TOWARDS_A if v > 0 else TOWARDS_B for v in influence]
    return {
        "data": [
            {"type": "bar", "x": x, "y": influence, "name": "influence",
             "marker": {"color": colours,
                        "line": {"width": [2 if p in kept else 0 for p in x],
                                 "color": "#111827"}},
             "hovertemplate": "pos %{x}: influence %{y:+.3f}<extra></extra>"},
            {"type": "scatter", "mode": "lines+markers", "x": x, "y": activation,
             "name": "activation", "yaxis": "y2", "line": {"color": "#6b7280", "width": 1},
             "marker": {"size": 4},
             "hovertemplate": "pos %{x}: activation %{y:+.3f}<extra></extra>"},
        ],
        "layout": {
            "height": 200, "margin": {"l": 40, "r": 40, "t": 10, "b": 60},
            "xaxis": {"tickmode": "array", "tickvals": x,
                      "ticktext": [show_token(t) for t in tokens], "tickangle": -50},
            "yaxis": {"zeroline": True, "tickfont": {"size": 9}},
            "yaxis2": {"overlaying": "y", "side": "right", "showgrid": False,
                       "tickfont": {"size": 9, "color": "#6b7280"}},
            "showlegend": False, "plot_bgcolor": "white", "paper_bgcolor": "white",
            "bargap": 0.3,
        },
    }
