"""Plotly figures for circuits, built as plain dicts (no server, no plotly import needed).

The attribution-graph layout: x is the token position, y the layer, with the input
embeddings on the bottom row and the two answer logits on the top row. Every node gets
its own slot, so no two markers overlap:

* a position's column is as many slots wide as its busiest (layer, position) cell needs
  (capped; a crowded cell wraps onto sub-rows), and a position with no node is narrow;
* a layer's row is as many units tall as its deepest cell wraps, and a layer with no node
  is a thin band, so the survivors of a filter spread over the canvas;
* slots are one unit apart both ways, and the page sizes the markers from the pixels one
  unit gets (``layout.meta.unit``), so a click lands on exactly one node.

Edges are drawn as a handful of line traces (by sign and width bucket) plus one invisible
marker per edge at its midpoint that carries its hover (source, target, weight); the
server sends only the view's edges: each node's strongest few in and out, capped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import markupsafe

from analysis.attribution.results import METRIC_NODE_ID, CircuitResult, Edge, Node

TOWARDS_A = "#1d4ed8"  # blue: pushes m = logit A - logit B up
TOWARDS_B = "#c2410c"  # orange-red: pushes towards B
GROUP_COLOUR = "#7c3aed"  # a collapsed supernode's outline
EDGE_POS = "rgba(29, 78, 216, {a})"
EDGE_NEG = "rgba(194, 65, 12, {a})"
MAX_EDGES = 1200  # the most edges one view sends to the browser
EDGES_PER_NODE = 6  # each node's strongest incoming and outgoing edges are always drawn
MAX_SLOTS = 24.0  # widest column, in slots; a busier cell wraps onto sub-rows
EMPTY_COLUMN = 1.5  # width of a position with no node (room for its tick label)
EMPTY_ROW = 0.4  # height of a layer with no node
UNIT_PX = 20  # the pixels one slot gets in a static export (the page refits markers)
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


@dataclass
class Layout:
    """Where everything sits: column centres per position, row centres per layer (the
    embedding row is layer -1, the logits row layer n_layers) and each node's (x, y)."""

    centres: list[float]
    widths: list[float]
    rows: dict[int, float]
    xy: dict[str, tuple[float, float]]
    width: float
    height: float


def _cells(nodes: list[Node]) -> dict[tuple[int, int], list[Node]]:
    cells: dict[tuple[int, int], list[Node]] = defaultdict(list)
    for node in nodes:
        cells[(node.layer, node.position)].append(node)
    for members in cells.values():
        members.sort(key=lambda n: n.neuron)  # stable across filters and across runs
    return cells


def column_layout(nodes: list[Node], n_pos: int) -> tuple[list[float], list[float]]:
    """x centre and width (in slots) of each position's column: as wide as its busiest
    cell, capped at MAX_SLOTS; a position with no node is narrow."""
    busiest = [0] * n_pos
    for (_, position), members in _cells(nodes).items():
        if 0 <= position < n_pos:
            busiest[position] = max(busiest[position], len(members))
    widths = [max(EMPTY_COLUMN, min(MAX_SLOTS, float(c))) for c in busiest]
    centres, left = [], 0.0
    for w in widths:
        centres.append(round(left + w / 2, 4))
        left += w
    return centres, widths


def graph_layout(nodes: list[Node], n_pos: int, n_layers: int) -> Layout:
    """Every node in its own slot, one unit from its neighbours in x and y."""
    centres, widths = column_layout(nodes, n_pos)
    cells = _cells(nodes)
    # How many sub-rows each cell wraps onto, and so how tall each layer's row is.
    wrap: dict[tuple[int, int], tuple[int, int]] = {}
    heights = {layer: EMPTY_ROW for layer in range(n_layers)}
    for (layer, position), members in cells.items():
        per_row = max(1, min(len(members), int(widths[position])))
        sub_rows = math.ceil(len(members) / per_row)
        wrap[(layer, position)] = (per_row, sub_rows)
        heights[layer] = max(heights.get(layer, EMPTY_ROW), float(sub_rows))
    rows: dict[int, float] = {-1: 0.0}
    bottom = 0.5  # the embedding row's upper half
    for layer in range(n_layers):
        h = heights.get(layer, EMPTY_ROW)
        rows[layer] = round(bottom + h / 2, 4)
        bottom += h
    rows[n_layers] = round(bottom + 0.7, 4)
    xy: dict[str, tuple[float, float]] = {}
    for (layer, position), members in cells.items():
        per_row, sub_rows = wrap[(layer, position)]
        left = centres[position] - widths[position] / 2
        step = widths[position] / per_row
        for i, node in enumerate(members):
            col, sub = i % per_row, i // per_row
            # The last, partly filled sub-row is centred too.
            in_row = min(per_row, len(members) - sub * per_row)
            x = left + (col + 0.5) * step + (per_row - in_row) * step / 2
            y = rows[layer] + (sub - (sub_rows - 1) / 2)
            xy[node.node_id] = (round(x, 4), round(y, 4))
    return Layout(centres=centres, widths=widths, rows=rows, xy=xy,
                  width=sum(widths), height=rows[n_layers] + 0.5)


def node_positions(nodes: list[Node], n_pos: int,
                   n_layers: int) -> dict[str, tuple[float, float]]:
    """(x, y) of every node (see graph_layout)."""
    return graph_layout(nodes, n_pos, n_layers).xy


def answer_labels(result: CircuitResult) -> tuple[str, str | None]:
    a = f"A {show_token(result.target_a_text)}"
    b = f"B {show_token(result.target_b_text)}" if result.target_b is not None else None
    return a, b


def view_edges(edges: list[Edge], per_node: int = EDGES_PER_NODE,
               cap: int = MAX_EDGES) -> list[Edge]:
    """The edges a view draws: every node's ``per_node`` strongest incoming and outgoing
    edges (so a global cut leaves no node unconnected; when even those exceed ``cap``,
    each node's strongest goes first, then its second...), then the strongest of the
    rest, at most ``cap`` in all, strongest first."""
    ranked = sorted(edges, key=lambda e: -abs(e.weight))
    outgoing: dict[str, int] = defaultdict(int)
    incoming: dict[str, int] = defaultdict(int)
    rank: list[int] = []  # the edge's place among its source's or target's edges
    for e in ranked:
        rank.append(min(outgoing[e.source], incoming[e.target]))
        outgoing[e.source] += 1
        incoming[e.target] += 1
    order = sorted(range(len(ranked)), key=lambda i: (min(rank[i], per_node), i))
    return [ranked[i] for i in sorted(order[:cap])]


# --- supernodes ---------------------------------------------------------------------

@dataclass
class GroupNode:
    """A collapsed supernode: its members drawn as one node, their influence summed."""

    name: str
    node_ids: list[str]
    influence: float

    @property
    def node_id(self) -> str:
        return f"group:{self.name}"


def _member_of(node: Node, members: list[dict[str, Any]]) -> bool:
    return any(m.get("layer") == node.layer and m.get("neuron") == node.neuron
               and m.get("position") in (None, node.position) for m in members)


def collapse(result: CircuitResult, supernodes: list[dict[str, Any]] | None,
             collapsed: set[str] | frozenset[str] | None
             ) -> tuple[list[Node], list[GroupNode], list[Edge]]:
    """The graph with each collapsed supernode as one node: the nodes left as they are,
    the groups, and the edges with every member replaced by its group (parallel edges
    summed, edges inside a group dropped). A node in two collapsed groups joins the
    first listed."""
    group_of: dict[str, str] = {}
    groups: list[GroupNode] = []
    for spec in supernodes or []:
        name = str(spec.get("name", ""))
        if name not in (collapsed or set()):
            continue
        ids = [n.node_id for n in result.nodes
               if n.node_id not in group_of and _member_of(n, list(spec.get("members", [])))]
        if not ids:
            continue
        group = GroupNode(name=name, node_ids=ids, influence=0.0)
        for node_id in ids:
            group_of[node_id] = group.node_id
        groups.append(group)
    if not groups:
        return list(result.nodes), [], list(result.edges)
    by_id = {n.node_id: n for n in result.nodes}
    for group in groups:
        group.influence = sum(by_id[i].influence for i in group.node_ids)
    nodes = [n for n in result.nodes if n.node_id not in group_of]
    summed: dict[tuple[str, str], list[float]] = {}
    for e in result.edges:
        source = group_of.get(e.source, e.source)
        target = group_of.get(e.target, e.target)
        if source == target:
            continue
        acc = summed.setdefault((source, target), [0.0, 0.0])
        acc[0] += e.weight
        acc[1] += e.raw
    edges = [Edge(source=s, target=t, weight=w, raw=r) for (s, t), (w, r) in summed.items()]
    return nodes, groups, edges


# --- the figure -----------------------------------------------------------------------

def graph_figure(result: CircuitResult, *, max_edges: int = MAX_EDGES,
                 height: int | None = None, layout_nodes: list[Node] | None = None,
                 size_max: float | None = None,
                 supernodes: list[dict[str, Any]] | None = None,
                 collapsed: set[str] | frozenset[str] | None = None) -> dict[str, Any]:
    """The attribution graph of a (possibly re-filtered) circuit as a Plotly figure dict.

    ``layout_nodes`` (a superset of the circuit's nodes) and ``size_max`` put several
    graphs on one layout and one marker scale: a node sits at the same spot and a given
    influence draws the same size in each (the Compare page's side-by-side graphs).
    ``supernodes`` (``{"name", "members"}``) named in ``collapsed`` are drawn as one node
    each, at their members' centre, with their members' edges summed.

    Drawn back to front: the edges, the embeddings, the nodes, the answer logits, then an
    invisible marker per edge for its hover."""
    n_layers = n_layers_of(result)
    n_pos = len(result.tokens)
    placed = layout_nodes if layout_nodes is not None else result.nodes
    lay = graph_layout(placed, n_pos, n_layers)
    xy = dict(lay.xy)
    nodes, groups, all_edges = collapse(result, supernodes, collapsed)
    influence = {n.node_id: abs(n.influence) for n in result.nodes}
    for group in groups:
        # In its strongest member's slot: hidden now, so free, and near its members.
        xy[group.node_id] = xy[max(group.node_ids, key=lambda i: influence[i])]
    last = n_pos - 1
    top = lay.rows[n_layers]
    quarter = lay.widths[last] / 4 if n_pos else 0.25
    logits = (lay.centres[last] - (quarter if result.target_b is not None else 0), top), (
        lay.centres[last] + quarter, top)
    a_label, b_label = answer_labels(result)
    names = {n.node_id: n.name for n in result.nodes}
    names.update({g.node_id: f"group {g.name}" for g in groups})
    names[METRIC_NODE_ID] = "m"

    edge_traces, hover = _edge_traces(view_edges(all_edges, cap=max_edges), xy, logits,
                                      result.target_b is not None, names)
    traces = [*edge_traces, _embedding_trace(result, lay),
              *_node_traces(result, nodes, groups, xy, size_max, a_label, b_label),
              _logit_trace(logits, top, a_label, b_label), hover]
    return {"data": traces, "layout": _figure_layout(result, lay, placed, groups,
                                                     len(hover["x"]), len(all_edges),
                                                     height)}


def _edge_traces(edges: list[Edge], xy: dict[str, tuple[float, float]],
                 logits: tuple[tuple[float, float], tuple[float, float]], contrastive: bool,
                 names: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The edges as line traces bucketed by sign and width, and the invisible hover
    trace with one marker per edge (kept apart from any node)."""
    logit_a_xy, logit_b_xy = logits
    slots: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for x, y in [*xy.values(), logit_a_xy, logit_b_xy]:
        slots[(math.floor(x), math.floor(y))].append((x, y))
    strongest = max((abs(e.weight) for e in edges), default=0.0)
    buckets: dict[tuple[bool, int], tuple[list[float | None], list[float | None]]] = {}
    mid_x: list[float] = []
    mid_y: list[float] = []
    mid_data: list[list[Any]] = []
    for edge in edges:
        if edge.source not in xy:
            continue
        if edge.target == METRIC_NODE_ID:
            end = logit_a_xy if edge.weight > 0 or not contrastive else logit_b_xy
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
        hx, hy = hover_point(start, end, slots)
        mid_x.append(hx)
        mid_y.append(hy)
        # source, target, weight, their names, and where a node->logit edge ends.
        mid_data.append([edge.source, edge.target, round(edge.weight, 5),
                         names.get(edge.source, edge.source),
                         names.get(edge.target, edge.target),
                         list(end) if edge.target == METRIC_NODE_ID else None])
    traces = []
    for (positive, width), (xs, ys) in sorted(buckets.items()):
        alpha = (0.25, 0.45, 0.7)[width]
        traces.append({
            "type": "scatter", "mode": "lines", "x": xs, "y": ys,
            "line": {"width": WIDTH_BUCKETS[width],
                     "color": (EDGE_POS if positive else EDGE_NEG).format(a=alpha)},
            "hoverinfo": "skip", "showlegend": False,
            "name": f"edges {'+' if positive else '-'} {width}",
        })
    hover = {
        "type": "scatter", "mode": "markers", "name": "edge hover",
        "x": mid_x, "y": mid_y, "customdata": mid_data,
        "marker": {"size": 7, "opacity": 0},
        "hovertemplate": "%{customdata[3]} → %{customdata[4]}<br>weight "
                         "%{customdata[2]:+.4f}<extra>edge</extra>",
        "showlegend": False,
    }
    return traces, hover


def _embedding_trace(result: CircuitResult, lay: Layout) -> dict[str, Any]:
    """The embedding row: one marker per input token."""
    n_pos = len(result.tokens)
    return {
        "type": "scatter", "mode": "markers", "name": "embeddings",
        "x": lay.centres, "y": [lay.rows[-1]] * n_pos, "customdata": list(range(n_pos)),
        "marker": {"symbol": "square", "size": 9, "color": "#9ca3af"},
        "text": [show_token(t.text) for t in result.tokens],
        "hovertemplate": "embedding of %{text} (position %{customdata})<extra></extra>",
        "showlegend": False,
    }


def _node_traces(result: CircuitResult, nodes: list[Node], groups: list[Any],
                 xy: dict[str, tuple[float, float]], size_max: float | None,
                 a_label: str, b_label: str | None) -> list[dict[str, Any]]:
    """The neurons, one trace per answer they push towards, and the collapsed groups."""
    biggest = size_max or max((abs(n.influence) for n in result.nodes), default=0.0) or 1.0

    def size(influence: float) -> float:
        return round(min(1.0, abs(influence) / biggest), 4)

    traces = []
    for towards, colour, answer in (("A", TOWARDS_A, a_label), ("B", TOWARDS_B, b_label)):
        members = [n for n in nodes if n.towards == towards]
        if towards == "B" and answer is None:
            answer = "lowers A"
        rel = [size(n.influence) for n in members]
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"towards {answer}", "meta": "nodes",
            "x": [xy[n.node_id][0] for n in members],
            "y": [xy[n.node_id][1] for n in members],
            "marker": {"size": [marker_px(r, UNIT_PX) for r in rel], "color": colour,
                       "line": {"width": 1, "color": "white"}},
            # customdata drives the click handler: node id, layer, neuron, position,
            # and the marker's relative size (the page refits sizes to its pixels).
            "customdata": [[n.node_id, n.layer, n.neuron, n.position, r]
                           for n, r in zip(members, rel, strict=True)],
            "text": [hover_text(n) for n in members],
            "hovertemplate": "%{text}<extra></extra>",
        })
    if groups:
        rel = [size(g.influence) for g in groups]
        traces.append({
            "type": "scatter", "mode": "markers+text", "name": "supernodes", "meta": "nodes",
            "x": [xy[g.node_id][0] for g in groups], "y": [xy[g.node_id][1] for g in groups],
            "marker": {"symbol": "hexagon", "size": [marker_px(r, UNIT_PX) for r in rel],
                       "color": [TOWARDS_A if g.influence > 0 else TOWARDS_B for g in groups],
                       "line": {"width": 2, "color": GROUP_COLOUR}},
            "customdata": [[g.node_id, None, None, None, r, g.name]
                           for g, r in zip(groups, rel, strict=True)],
            "text": [escape(g.name) for g in groups], "textposition": "middle right",
            "cliponaxis": False,
            "hovertext": [f"<b>group {escape(g.name)}</b> ({len(g.node_ids)} nodes)"
                          f"<br>influence {g.influence:+.3f}" for g in groups],
            "hovertemplate": "%{hovertext}<extra></extra>",
        })
    return traces


def _logit_trace(logits: tuple[tuple[float, float], tuple[float, float]], top: float,
                 a_label: str, b_label: str | None) -> dict[str, Any]:
    """The answer logits at the top: A's diamond, and B's in a contrastive run."""
    logit_x = [logits[0][0]] + ([logits[1][0]] if b_label else [])
    return {
        "type": "scatter", "mode": "markers+text", "name": "answer logits",
        "x": logit_x, "y": [top] * len(logit_x),
        "marker": {"symbol": "diamond", "size": 14,
                   "color": [TOWARDS_A, TOWARDS_B][: len(logit_x)]},
        "text": [a_label] + ([b_label] if b_label else []),
        "textposition": "top center", "cliponaxis": False,
        "hovertemplate": "logit of %{text}<extra></extra>",
        "showlegend": False,
    }


def _figure_layout(result: CircuitResult, lay: Layout, placed: list[Node], groups: list[Any],
                   shown: int, total: int, height: int | None) -> dict[str, Any]:
    """Axes (tokens across, layers up), the legend, and the summary the page shows."""
    n_layers = n_layers_of(result)
    layer_ticks = [lay.rows[i] for i in range(-1, n_layers + 1)]
    # A thin empty row keeps its tick only every fifth layer, so labels never collide.
    busy = {n.layer for n in placed}
    layer_text = (["emb"] + [f"L{i}" if i in busy or i % 5 == 0 else "" for i in range(n_layers)]
                  + ["logits"])
    title = (f"{len(result.nodes)} nodes · {shown} edges"
             + (f" (of {total})" if shown < total else "")
             + " · node→logit edges included")
    plot_h = lay.height + 1.6
    return {
        "meta": {"summary": title, "edges_drawn": shown, "edges_total": total,
                 "unit": UNIT_PX, "groups": [g.name for g in groups]},
        "height": height or int(min(1400, max(440, UNIT_PX * plot_h + 150))),
        "margin": {"l": 50, "r": 30, "t": 40, "b": 70},
        "xaxis": {"tickmode": "array", "tickvals": lay.centres,
                  "ticktext": [show_token(t.text) for t in result.tokens],
                  "tickangle": -60, "automargin": True,
                  "range": [-1.0, lay.width + 1.0], "zeroline": False, "showgrid": False},
        "yaxis": {"tickmode": "array", "tickvals": layer_ticks, "ticktext": layer_text,
                  "automargin": True, "range": [-0.8, lay.height + 0.8],
                  "zeroline": False, "gridcolor": "#eef0f3"},
        "legend": {"orientation": "h", "y": 1.0, "x": 0, "yanchor": "bottom"},
        "hovermode": "closest", "clickmode": "event", "plot_bgcolor": "white",
        "paper_bgcolor": "white", "dragmode": "pan",
    }


HOVER_AT = (0.5, 0.4, 0.6, 0.3, 0.7, 0.45, 0.55, 0.35, 0.65, 0.25, 0.75)


def hover_point(start: tuple[float, float], end: tuple[float, float],
                slots: dict[tuple[int, int], list[tuple[float, float]]]
                ) -> tuple[float, float]:
    """Where an edge's hover marker sits: the point nearest its middle that is at least
    half a unit from every node (``slots``: nodes bucketed by their floored (x, y);
    markers are under a unit wide), so hovering or clicking a node never lands on an
    edge's hover instead."""
    for t in HOVER_AT:
        x = start[0] + t * (end[0] - start[0])
        y = start[1] + t * (end[1] - start[1])
        fx, fy = math.floor(x), math.floor(y)
        if all(math.hypot(x - px, y - py) >= 0.5
               for dx in (-1, 0, 1) for dy in (-1, 0, 1)
               for px, py in slots.get((fx + dx, fy + dy), [])):
            return round(x, 4), round(y, 4)
    return round((start[0] + end[0]) / 2, 4), round((start[1] + end[1]) / 2, 4)


MIN_MARKER_PX = 3.0


def marker_px(rel: float, unit_px: float) -> float:
    """A node's marker diameter: its area is proportional to |influence| (``rel``, a share
    of the largest), at most 90% of a slot so neighbours never touch, and at least
    ``MIN_MARKER_PX`` so the faintest node can still be clicked. (An offset floor of 6 px
    drew every node at 6.6-8 px on a dense graph: sizes said nothing.) The page's
    ``fitMarkers`` applies the same rule to its pixels."""
    biggest = min(26.0, 0.9 * unit_px)
    return round(max(min(MIN_MARKER_PX, biggest), biggest * math.sqrt(rel)), 2)


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


@dataclass
class PathRow:
    """One path for the path view: its nodes in order and its signed score."""

    node_ids: list[str]
    steps: list[str]  # "L16/N1998 ·is"
    score: float
    towards: str
    totals: list[float] = field(default_factory=list)  # each node's total influence


def path_rows(result: CircuitResult, paths: list[Any]) -> list[PathRow]:
    """Paths (analysis.attribution.paths.CircuitPath) as rows that name each step."""
    by_id = {n.node_id: n for n in result.nodes}
    return [PathRow(node_ids=list(p.nodes),
                    steps=[f"{by_id[i].name} {show_token(by_id[i].token)}" for i in p.nodes],
                    score=p.score, towards=p.towards,
                    totals=[by_id[i].influence for i in p.nodes]) for p in paths]
