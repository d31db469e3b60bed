"""View models: what the templates show, computed from results without a server.

Everything here takes analysis results (pydantic objects) and returns plain data for
Jinja templates, CSV text or Plotly figure dicts; nothing imports FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from analysis.attribution.always_on import AlwaysOnNeuron
from analysis.attribution.logit_lens import NeuronDescription
from analysis.attribution.results import METRIC_NODE_ID, CircuitResult, Edge, Node
from analysis.neuron_ref import neuron_name
from frontend.csv_cells import csv_text
from frontend.graph import graph_figure, position_figure, show_token
from frontend.neurons import NeuronGist

NODE_COLUMNS = ["layer", "neuron", "position", "token", "influence", "activation",
                "towards", "label"]


@dataclass
class TopRow:
    rank: int
    token: str
    prob: float
    logit: float
    is_a: bool
    is_b: bool


@dataclass
class FaithRow:
    what: str
    m: float
    share: float | None  # m after / m before


@dataclass
class RunView:
    """The summary block of one run: predictions, metric, faithfulness, settings."""

    run_id: str
    created_at: datetime | None
    model: str
    prompt: str
    formatted: str
    tokens: list[str]
    answer_a: str
    answer_b: str | None
    m: float
    influence_sum: float  # over the kept nodes
    all_influence: float  # every neuron at every position (the completeness sum)
    n_dropped: int  # always-on neurons left out of the kept nodes
    prob_a: float | None
    prob_b: float | None
    rank_a: int | None
    rank_b: int | None
    prefers: str  # "A" or "B"
    top: list[TopRow]
    faithfulness: list[FaithRow]
    faith_mode: str | None
    recovered: float | None
    method: str
    tau: float
    mode: str
    mass: float
    max_nodes: int | None
    edge_threshold: float
    n_nodes: int
    n_edges: int
    completeness_ratio: float | None
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    always_on: list[AlwaysOnNeuron] = field(default_factory=list)
    drop_always_on: bool = True
    always_on_source: str | None = None


def run_view(result: CircuitResult, run_id: str, created_at: datetime | None = None,
             model: str | None = None, prompt: str | None = None) -> RunView:
    top = [TopRow(rank=i + 1, token=show_token(t.token), prob=t.prob, logit=t.logit,
                  is_a=t.id == result.target_a, is_b=t.id == result.target_b)
           for i, t in enumerate(result.top)]
    faith: list[FaithRow] = []
    f = result.faithfulness
    if f is not None:
        def share(v: float) -> float | None:
            return v / f.m_clean if abs(f.m_clean) > 1e-9 else None

        faith = [
            FaithRow("clean prompt", f.m_clean, 1.0),
            FaithRow(f"circuit ablated ({f.n_nodes} nodes)", f.m_without_circuit,
                     share(f.m_without_circuit)),
            FaithRow(f"nodes towards A ablated ({f.n_towards_a})", f.m_without_towards_a,
                     share(f.m_without_towards_a)),
            FaithRow(f"nodes towards B ablated ({f.n_towards_b})", f.m_without_towards_b,
                     share(f.m_without_towards_b)),
            FaithRow("only the circuit kept", f.m_circuit_only, share(f.m_circuit_only)),
            FaithRow("every MLP neuron ablated", f.m_all_ablated, share(f.m_all_ablated)),
        ]
    p = result.params
    return RunView(
        run_id=run_id, created_at=created_at, model=model or result.model_name or "?",
        prompt=prompt or result.prompt or "", formatted=result.prompt or "",
        tokens=[show_token(t.text) for t in result.tokens],
        answer_a=result.target_a_text or str(result.target_a),
        answer_b=(result.target_b_text or str(result.target_b))
        if result.target_b is not None else None,
        m=result.m, influence_sum=result.influence_sum,
        all_influence=result.completeness.influence_sum,
        n_dropped=sum(f.dropped for f in result.always_on), prob_a=result.prob_a,
        prob_b=result.prob_b, rank_a=result.rank_a, rank_b=result.rank_b,
        prefers="A" if result.m >= 0 else "B", top=top, faithfulness=faith,
        faith_mode=f.mode if f else None, recovered=f.recovered if f else None,
        method=p.method, tau=p.tau, mode=p.mode, mass=p.mass, max_nodes=p.max_nodes,
        edge_threshold=p.edge_threshold, n_nodes=len(result.nodes), n_edges=len(result.edges),
        completeness_ratio=result.completeness.ratio, seconds=result.timing.total_s,
        always_on=result.always_on, drop_always_on=p.drop_always_on,
        always_on_source=result.always_on_source,
    )


@dataclass
class NodeRow:
    node_id: str
    name: str
    layer: int
    neuron: int
    position: int
    token: str
    influence: float
    activation: float
    towards: str
    label: str
    gist: NeuronGist | None = None  # what it responds to, from an exemplar index


def node_rows(result: CircuitResult,
              gists: dict[tuple[int, int], NeuronGist] | None = None) -> list[NodeRow]:
    """The kept nodes, strongest first (the table re-sorts in the browser)."""
    gists = gists or {}
    return [NodeRow(node_id=n.node_id, name=n.name, layer=n.layer, neuron=n.neuron,
                    position=n.position, token=show_token(n.token), influence=n.influence,
                    activation=n.activation, towards=n.towards, label=n.label or "",
                    gist=gists.get((n.layer, n.neuron)))
            for n in sorted(result.nodes, key=lambda n: -abs(n.influence))]


def nodes_csv(result: CircuitResult) -> str:
    return csv_text(NODE_COLUMNS, ([n.layer, n.neuron, n.position, n.token or "",
                                    f"{n.influence:.6g}", f"{n.activation:.6g}", n.towards,
                                    n.label or ""]
                                   for n in sorted(result.nodes, key=lambda n: -abs(n.influence))))


@dataclass
class GraphView:
    """The filtered graph and its table, as one fragment re-rendered on every filter."""

    figure: dict[str, Any]
    rows: list[NodeRow]
    tau: float | None
    edge_threshold: float
    n_nodes: int
    n_edges: int
    n_nodes_total: int
    edges_drawn: int = 0
    edges_total: int = 0
    supernodes: list[dict[str, Any]] = field(default_factory=list)
    has_gists: bool = False

    @property
    def capped(self) -> bool:
        """More edges than the figure draws (see frontend.graph.view_edges)."""
        return self.edges_drawn < self.edges_total


def graph_view(view: CircuitResult, total_nodes: int, tau: float | None,
               edge_threshold: float, supernodes: list[dict[str, Any]] | None = None,
               collapsed: set[str] | None = None,
               gists: dict[tuple[int, int], NeuronGist] | None = None) -> GraphView:
    figure = graph_figure(view, supernodes=supernodes, collapsed=collapsed)
    meta = figure["layout"]["meta"]
    return GraphView(figure=figure, rows=node_rows(view, gists), tau=tau,
                     has_gists=bool(gists),
                     supernodes=[{"name": g["name"], "size": len(g["members"]),
                                  "collapsed": g["name"] in meta["groups"]}
                                 for g in supernodes or []],
                     edge_threshold=edge_threshold, n_nodes=len(view.nodes),
                     n_edges=sum(1 for e in view.edges if e.target != METRIC_NODE_ID),
                     n_nodes_total=total_nodes, edges_drawn=meta["edges_drawn"],
                     edges_total=meta["edges_total"])


@dataclass
class EdgeLink:
    """One edge seen from a neuron: the neuron at its other end and the weight."""

    other: str  # node id, or "metric"
    name: str
    layer: int | None
    neuron: int | None
    position: int | None
    token: str
    weight: float


@dataclass
class NeuronPanel:
    layer: int
    neuron: int
    name: str
    label: str
    influence_total: float | None
    positions: list[int]
    promotes: list[tuple[str, float]]
    suppresses: list[tuple[str, float]]
    figure: dict[str, Any] | None
    incoming: list[EdgeLink]
    outgoing: list[EdgeLink]
    position: int | None


def _link(node_id: str, by_id: dict[str, Node], weight: float) -> EdgeLink:
    if node_id == METRIC_NODE_ID:
        return EdgeLink(other=node_id, name="m (answer logits)", layer=None, neuron=None,
                        position=None, token="", weight=weight)
    n = by_id[node_id]
    return EdgeLink(other=node_id, name=n.name, layer=n.layer, neuron=n.neuron,
                    position=n.position, token=show_token(n.token), weight=weight)


def neuron_panel(result: CircuitResult, layer: int, neuron: int,
                 description: NeuronDescription | None, label: str | None,
                 position: int | None = None, max_edges: int = 8) -> NeuronPanel:
    """A neuron in the context of one run: its label, what it writes, where it fires and
    matters, and its strongest edges in and out."""
    by_id = {n.node_id: n for n in result.nodes}
    mine = {n.node_id for n in result.nodes if (n.layer, n.neuron) == (layer, neuron)}
    incoming: list[Edge] = [e for e in result.edges if e.target in mine]
    outgoing: list[Edge] = [e for e in result.edges if e.source in mine]
    incoming.sort(key=lambda e: -abs(e.weight))
    outgoing.sort(key=lambda e: -abs(e.weight))
    total = next((t for t in result.neurons if (t.layer, t.neuron) == (layer, neuron)), None)
    tokens = [t.text for t in result.tokens]
    figure = None
    if total is not None and total.by_position:
        figure = position_figure(tokens, total.by_position, total.activations, total.positions)
    elif description is not None and description.activations:
        acts = [a.activation for a in description.activations]
        figure = position_figure(tokens, [0.0] * len(acts), acts, [])
    return NeuronPanel(
        layer=layer, neuron=neuron, name=neuron_name(layer, neuron), label=label or "",
        influence_total=total.influence if total else None,
        positions=total.positions if total else [],
        promotes=[(show_token(t.token), t.score) for t in description.promotes]
        if description else [],
        suppresses=[(show_token(t.token), t.score) for t in description.suppresses]
        if description else [],
        figure=figure,
        incoming=[_link(e.source, by_id, e.weight) for e in incoming[:max_edges]],
        outgoing=[_link(e.target, by_id, e.weight) for e in outgoing[:max_edges]],
        position=position,
    )


def analyze_link(prompt: str, answer_a: str, answer_b: str | None, **extra: Any) -> str:
    """A link to the Analyze page with its form pre-filled (used by screening)."""
    query: dict[str, Any] = {"prompt": prompt, "answer_a": answer_a}
    if answer_b is not None:
        query["answer_b"] = answer_b
    query.update({k: ("true" if v is True else v) for k, v in extra.items()
                  if v not in (None, "", False)})
    return "/?" + urlencode(query)
