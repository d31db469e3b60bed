"""Figure builders and view models in frontend/, without a server or a model."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import parse_qs, urlparse

import pytest

from analysis.attribution.logit_lens import NeuronDescription
from analysis.attribution.results import (
    CircuitResult,
    CircuitSettings,
    Completeness,
    Edge,
    Faithfulness,
    NeuronTotal,
    Node,
    TokenInfo,
    TokenProb,
    TokenScore,
)
from frontend.graph import (
    collapse,
    column_layout,
    graph_figure,
    graph_layout,
    show_token,
    view_edges,
)
from frontend.views import (
    analyze_link,
    graph_view,
    neuron_panel,
    node_rows,
    nodes_csv,
    run_view,
)

TOKENS = ["<bos>", "The", " hormone", " is"]


def node(layer: int, pos: int, neuron: int, influence: float, label: str | None = None) -> Node:
    return Node(layer=layer, position=pos, neuron=neuron, influence=influence,
                activation=influence * 2, token=TOKENS[pos], label=label)


@pytest.fixture()
def result() -> CircuitResult:
    nodes = [node(0, 0, 5, -0.3), node(1, 3, 7, 0.9, label="<b>booster</b>"),
             node(1, 3, 2, -0.4), node(1, 3, 9, 0.2), node(2, 3, 1, -1.2)]
    edges = [
        Edge(source="L0/N5@0", target="L1/N7@3", weight=0.5, raw=0.5),
        Edge(source="L1/N7@3", target="L2/N1@3", weight=-0.8, raw=-0.8),
        Edge(source="L1/N2@3", target="L2/N1@3", weight=0.1, raw=0.1),
        Edge(source="L2/N1@3", target="metric", weight=-1.2, raw=-1.0),
        Edge(source="L1/N7@3", target="metric", weight=0.9, raw=0.7),
    ]
    neurons = [NeuronTotal(layer=1, neuron=7, influence=0.95, positions=[3],
                           by_position=[0.0, 0.05, 0.0, 0.9],
                           activations=[0.1, 0.2, 0.3, 1.8])]
    return CircuitResult(
        input_ids=[1, 2, 3, 4],
        tokens=[TokenInfo(position=i, id=i + 1, text=t) for i, t in enumerate(TOKENS)],
        target_a=10, target_b=11, target_a_text=" aldosterone", target_b_text=" renin",
        m=-1.5, logit_a=1.0, logit_b=2.5, prob_a=0.04, prob_b=0.12, rank_a=7, rank_b=2,
        top=[TokenProb(id=11, token=" renin", logit=2.5, prob=0.12),
             TokenProb(id=12, token=" the", logit=2.4, prob=0.11),
             TokenProb(id=10, token=" aldosterone", logit=1.0, prob=0.04)],
        params=CircuitSettings(tau=0.1),
        completeness=Completeness(m=-1.5, influence_sum=-0.8, target=-1.5, ratio=0.53,
                                  layer_sums=[0.0, 0.0, 0.0]),
        nodes=nodes, neurons=neurons, edges=edges,
        faithfulness=Faithfulness(
            mode="zero", m_clean=-1.5, m_without_circuit=0.5, m_without_towards_a=-2.5,
            m_without_towards_b=1.0, m_circuit_only=-1.2, m_all_ablated=0.1, recovered=0.8,
            n_nodes=5, n_towards_a=2, n_towards_b=3, influence_towards_a=1.1,
            influence_towards_b=-1.9),
    )


def traces(fig: dict, name_prefix: str) -> list[dict]:
    return [t for t in fig["data"] if t.get("name", "").startswith(name_prefix)]


def test_graph_figure_draws_every_node_coloured_by_the_answer_it_pushes(result) -> None:
    fig = graph_figure(result)
    json.dumps(fig)  # the template embeds it as JSON
    (to_a,) = traces(fig, "towards A")
    (to_b,) = traces(fig, "towards B")
    assert "aldosterone" in to_a["name"] and "renin" in to_b["name"]
    ids_a = {c[0] for c in to_a["customdata"]}
    ids_b = {c[0] for c in to_b["customdata"]}
    assert ids_a == {"L1/N7@3", "L1/N9@3"}
    assert ids_b == {"L0/N5@0", "L1/N2@3", "L2/N1@3"}
    assert to_a["marker"]["color"] != to_b["marker"]["color"]
    # y is the layer; the strongest node is drawn largest.
    sizes = dict(zip((c[0] for c in to_b["customdata"]), to_b["marker"]["size"], strict=True))
    assert sizes["L2/N1@3"] == max(sizes.values())
    rows = dict(zip(fig["layout"]["yaxis"]["ticktext"], fig["layout"]["yaxis"]["tickvals"],
                    strict=True))
    assert to_b["y"][[c[0] for c in to_b["customdata"]].index("L2/N1@3")] == rows["L2"]
    # Hover names the neuron and escapes the label's markup.
    hover = to_a["text"][[c[0] for c in to_a["customdata"]].index("L1/N7@3")]
    assert "L1/N7" in hover and "&lt;b&gt;booster" in hover
    # Axis: tokens on x, embeddings below layer 0 and logits above the last layer.
    assert fig["layout"]["xaxis"]["ticktext"] == ["<bos>", "The", "·hormone", "·is"]
    assert fig["layout"]["yaxis"]["ticktext"][0] == "emb"
    assert fig["layout"]["yaxis"]["ticktext"][-1] == "logits"


def test_edges_are_bucketed_lines_and_metric_edges_reach_the_right_logit(result) -> None:
    fig = graph_figure(result)
    lines = [t for t in fig["data"] if t["mode"] == "lines" and t["x"]]
    segments = sum(len(t["x"]) // 3 for t in lines)
    assert segments == len(result.edges)
    logits = next(t for t in fig["data"] if t.get("name") == "answer logits")
    a_x, b_x = logits["x"]
    ends = {(t["x"][i + 1], t["y"][i + 1]) for t in lines for i in range(0, len(t["x"]), 3)}
    top = logits["y"][0]
    assert (a_x, top) in ends and (b_x, top) in ends  # +0.9 goes to A, -1.2 to B
    positive = [t for t in lines if t["line"]["color"].startswith("rgba(29")]
    assert positive and all(t["line"]["width"] > 0 for t in lines)
    # The strongest edge is the widest.
    widest = max(lines, key=lambda t: t["line"]["width"])
    assert "L2" not in json.dumps(widest)  # lines carry coordinates only, no payload
    capped = graph_figure(result, max_edges=2)
    assert sum(len(t["x"]) // 3 for t in capped["data"] if t["mode"] == "lines") == 2


def test_crowded_columns_are_wider_and_cell_members_do_not_overlap(result) -> None:
    centres, widths = column_layout(result.nodes, 4)
    assert widths[3] == max(widths) and widths[3] > widths[1]
    assert centres == sorted(centres)
    lay = graph_layout(result.nodes, 4, 3)
    cell = [lay.xy[i][0] for i in ("L1/N2@3", "L1/N7@3", "L1/N9@3")]
    assert len(set(cell)) == 3 and cell == sorted(cell)  # spread by neuron index
    assert all(abs(x - centres[3]) <= widths[3] / 2 for x in cell)


def test_every_node_has_its_own_slot_one_unit_from_any_other() -> None:
    """A crowded graph (60 nodes in one cell, 200 in all): any two nodes are at least one
    unit apart in x or in y, so markers sized under a unit never overlap."""
    nodes = [node(29, 3, i, 0.1 + i / 100) for i in range(60)]
    nodes += [node(layer, pos, 1000 + layer * 10 + pos, -0.2)
              for layer in range(20, 29) for pos in range(4) for _ in [0]]
    nodes += [node(layer, 3, 2000 + j, 0.3) for layer in range(10, 20) for j in range(10)]
    lay = graph_layout(nodes, 4, 30)
    points = list(lay.xy.values())
    assert len(set(points)) == len(nodes)
    for i, (x1, y1) in enumerate(points):
        for x2, y2 in points[i + 1:]:
            assert abs(x1 - x2) >= 1 - 1e-6 or abs(y1 - y2) >= 1 - 1e-6
    # Empty layers are thin bands: layers 0-9 hold nothing, so they share little height.
    assert lay.rows[10] - lay.rows[-1] < 6
    # Filtering re-lays out: the survivors of one cell spread over its (narrower) column.
    few = graph_layout(nodes[:3], 4, 30)
    assert few.width < lay.width


def test_view_edges_keep_each_nodes_strongest_and_respect_the_cap() -> None:
    from analysis.attribution.results import Edge as E

    strong = [E(source=f"s{i}", target=f"t{j}", weight=10.0 + i + j / 10, raw=0.0)
              for i in range(5) for j in range(10)]
    weak = [E(source="lonely", target="t2", weight=0.01, raw=0.0)]
    chosen = view_edges(strong + weak, per_node=3, cap=20)
    assert len(chosen) == 20
    assert any(e.source == "lonely" for e in chosen)  # its only edge survives the cut
    assert [abs(e.weight) for e in chosen] == sorted((abs(e.weight) for e in chosen),
                                                     reverse=True)


def test_a_collapsed_supernode_is_one_node_with_its_members_edges_summed(result) -> None:
    groups = [{"name": "boost", "members": [{"layer": 1, "neuron": 7, "position": None},
                                            {"layer": 1, "neuron": 2, "position": 3}]}]
    nodes, drawn, edges = collapse(result, groups, {"boost"})
    assert {n.node_id for n in nodes} == {"L0/N5@0", "L1/N9@3", "L2/N1@3"}
    (g,) = drawn
    assert g.influence == pytest.approx(0.9 - 0.4)
    weights = {(e.source, e.target): e.weight for e in edges}
    # L1/N7 -> L2/N1 (-0.8) and L1/N2 -> L2/N1 (+0.1) become one edge of -0.7.
    assert weights[("group:boost", "L2/N1@3")] == pytest.approx(-0.7)
    assert weights[("L0/N5@0", "group:boost")] == pytest.approx(0.5)
    assert weights[("group:boost", "metric")] == pytest.approx(0.9)
    fig = graph_figure(result, supernodes=groups, collapsed={"boost"})
    (trace,) = traces(fig, "supernodes")
    assert trace["customdata"][0][0] == "group:boost" and trace["customdata"][0][5] == "boost"
    ids = {c[0] for t in traces(fig, "towards") for c in t["customdata"]}
    assert "L1/N7@3" not in ids and "L2/N1@3" in ids
    hover = next(t for t in fig["data"] if t["name"] == "edge hover")
    assert any(c[0] == "group:boost" and c[1] == "L2/N1@3" and c[2] == pytest.approx(-0.7)
               for c in hover["customdata"])
    # Not collapsed: drawn as before.
    plain = graph_figure(result, supernodes=groups, collapsed=set())
    assert not traces(plain, "supernodes")


def test_node_rows_and_csv_list_the_kept_nodes_strongest_first(result) -> None:
    rows = node_rows(result)
    assert [r.node_id for r in rows][:2] == ["L2/N1@3", "L1/N7@3"]
    assert rows[1].label == "<b>booster</b>" and rows[1].towards == "A"
    parsed = list(csv.reader(io.StringIO(nodes_csv(result))))
    assert parsed[0][:5] == ["layer", "neuron", "position", "token", "influence"]
    assert len(parsed) == 1 + len(result.nodes)
    assert float(parsed[1][4]) == pytest.approx(-1.2)


def test_run_view_summarises_predictions_and_faithfulness(result) -> None:
    view = run_view(result, "abc123")
    assert view.prefers == "B" and view.rank_a == 7
    flags = [(t.token, t.is_a, t.is_b) for t in view.top]
    assert flags[0] == ("·renin", False, True) and flags[2][1] is True
    ablated = next(f for f in view.faithfulness if f.what.startswith("circuit ablated"))
    assert ablated.share == pytest.approx(0.5 / -1.5)
    gv = graph_view(result, 5, None, 0.0)
    assert gv.n_edges == 3  # node->node only; node->metric edges are counted apart


def test_neuron_panel_gathers_edges_and_per_position_values(result) -> None:
    desc = NeuronDescription(layer=1, neuron=7, promotes=[TokenScore(id=3, token=" x",
                                                                    score=2.0)],
                             suppresses=[TokenScore(id=4, token=" y", score=-1.0)])
    panel = neuron_panel(result, 1, 7, desc, "booster", position=3)
    assert [e.name for e in panel.incoming] == ["L0/N5"]
    assert [e.other for e in panel.outgoing] == ["metric", "L2/N1@3"]  # by |weight|
    assert panel.promotes == [("·x", 2.0)]
    bars = panel.figure["data"][0]
    assert bars["y"] == [0.0, 0.05, 0.0, 0.9]
    assert bars["marker"]["line"]["width"][3] > 0  # the kept position is outlined
    # A neuron with no stored totals still gets a panel.
    other = neuron_panel(result, 2, 1, None, None)
    assert other.figure is None and other.incoming and other.label == ""


def test_analyze_link_prefills_the_form() -> None:
    url = analyze_link("Q is", " aldosterone", " renin", answer_prefix="", chat_template=True)
    query = parse_qs(urlparse(url).query, keep_blank_values=True)
    assert query["prompt"] == ["Q is"] and query["answer_a"] == [" aldosterone"]
    assert query["answer_b"] == [" renin"] and query["chat_template"] == ["true"]
    assert "answer_prefix" not in query
    assert show_token(" a\nb") == "·a⏎b"


def test_the_legend_says_when_the_graph_draws_only_the_strongest_edges(result) -> None:  # type: ignore[no-untyped-def]
    from frontend.graph import MAX_EDGES
    from frontend.views import graph_view

    few = graph_view(result, len(result.nodes), None, 0.0)
    assert not few.capped and few.edges_drawn == few.edges_total == len(result.edges)
    many = result.model_copy(update={"edges": [
        Edge(source="L0/N5@0", target="L1/N7@3", weight=0.001 * (i + 1), raw=0.0)
        for i in range(MAX_EDGES + 200)]})
    view = graph_view(many, len(many.nodes), None, 0.0)
    assert view.capped and (view.edges_drawn, view.edges_total) == (MAX_EDGES, MAX_EDGES + 200)
    hover = next(t for t in view.figure["data"] if t["name"] == "edge hover")
    assert len(hover["x"]) == MAX_EDGES  # the browser gets only the edges it draws
    fig = view.figure
    # The logits' labels are never clipped by the axes.
    logits = next(t for t in fig["data"] if t["name"] == "answer logits")
    assert logits["cliponaxis"] is False
    assert fig["layout"]["xaxis"]["automargin"] and fig["layout"]["yaxis"]["automargin"]
