"""Top-k paths by dynamic programme: equal to brute-force enumeration on random DAGs, and
the path scores through a node add up to its (linear) influence."""

from __future__ import annotations

import random

import pytest

from analysis.attribution.paths import PathGraph, top_paths
from analysis.attribution.results import (
    CircuitResult,
    CircuitSettings,
    Completeness,
    Edge,
    Node,
    TokenInfo,
)
from analysis.errors import InputError


def random_circuit(seed: int, n_layers: int = 5, per_layer: int = 4,
                   density: float = 0.5) -> CircuitResult:
    """A random layered DAG whose influences obey I_s = direct_s + sum_t share(s,t) I_t,
    the linear relation the path scores decompose."""
    rng = random.Random(seed)
    nodes: list[Node] = []
    for layer in range(n_layers):
        for j in range(per_layer):
            nodes.append(Node(layer=layer, position=j % 3, neuron=j, influence=0.0,
                              activation=rng.choice([-1, 1]) * rng.uniform(0.5, 2.0),
                              token=f"t{j % 3}"))
    edges: list[Edge] = []
    shares: dict[tuple[str, str], float] = {}
    for s in nodes:
        for t in nodes:
            if s.layer < t.layer and s.position <= t.position and rng.random() < density:
                share = rng.uniform(-0.4, 0.4)
                shares[(s.node_id, t.node_id)] = share
                edges.append(Edge(source=s.node_id, target=t.node_id,
                                  weight=share, raw=share * t.activation))
    direct = {n.node_id: rng.uniform(-1, 1) for n in nodes}
    influence: dict[str, float] = {}
    for n in sorted(nodes, key=lambda n: -n.layer):
        influence[n.node_id] = direct[n.node_id] + sum(
            f * influence[t] for (s, t), f in shares.items() if s == n.node_id)
    nodes = [n.model_copy(update={"influence": influence[n.node_id]}) for n in nodes]
    edges += [Edge(source=i, target="metric", weight=influence[i], raw=d)
              for i, d in direct.items()]
    return CircuitResult(
        input_ids=[1, 2, 3], tokens=[TokenInfo(position=i, id=i + 1, text=f"t{i}")
                                     for i in range(3)],
        target_a=1, target_b=2, m=1.0, logit_a=1.0, logit_b=0.0,
        params=CircuitSettings(), nodes=nodes, edges=edges,
        completeness=Completeness(m=1.0, influence_sum=0.0, target=1.0, ratio=None))


def all_paths(result: CircuitResult, coherent: bool = False
              ) -> list[tuple[float, tuple[str, ...]]]:
    """Every path and its score, by plain enumeration (the reference). ``coherent``: only
    paths whose rest and shares are all positive (what "why A/B" ranks)."""
    g = PathGraph(result)
    found: list[tuple[float, tuple[str, ...]]] = []

    def walk(path: tuple[str, ...], value: float) -> None:
        last = path[-1]
        found.append((value * g.direct.get(last, 0.0), path))
        for u, share in g.out[last]:
            if share > 0 or not coherent:
                walk((*path, u), value * share)

    for start in g.order:
        if g.rest[start] > 0 or not coherent:
            walk((start,), g.rest[start])
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_finds_the_same_top_paths_as_enumeration(seed: int) -> None:
    result = random_circuit(seed)
    every = all_paths(result)
    coherent = all_paths(result, coherent=True)
    assert len(every) > 100  # enough paths that the ranking means something
    for towards, keep in ((None, lambda v: v != 0), ("A", lambda v: v > 0),
                          ("B", lambda v: v < 0)):
        pool = every if towards is None else coherent
        expected = sorted((p for p in pool if keep(p[0])), key=lambda p: -abs(p[0]))[:7]
        got = top_paths(result, k=7, towards=towards)
        assert [p.score for p in got] == pytest.approx([v for v, _ in expected])
        assert all(keep(p.score) for p in got)
    through = "L2/N1@1"
    expected = sorted((p for p in every if through in p[1]), key=lambda p: -abs(p[0]))[:5]
    got = top_paths(result, through=through, k=5)
    assert [p.score for p in got] == pytest.approx([v for v, _ in expected])
    assert all(through in p.nodes for p in got)
    assert {tuple(p.nodes) for p in got} == {p for _, p in expected}
    why_b = top_paths(result, through=through, k=5, towards="B")
    expected = sorted((p for p in coherent if through in p[1] and p[0] < 0),
                      key=lambda p: -abs(p[0]))[:5]
    assert [p.score for p in why_b] == pytest.approx([v for v, _ in expected])
    assert all(p.score < 0 and p.towards == "B" for p in why_b)


def _suffix_signs(result: CircuitResult, nodes: list[str]) -> list[float]:
    """The product from each node of a path to m: that node's part of the path."""
    g = PathGraph(result)
    share = {(s, t): f for s in g.nodes for t, f in g.out[s]}
    out, value = [], g.direct.get(nodes[-1], 0.0)
    for i in range(len(nodes) - 1, -1, -1):
        if i < len(nodes) - 1:
            value *= share[(nodes[i], nodes[i + 1])]
        out.append(value)
    return out[::-1]


@pytest.mark.parametrize("seed", [0, 1, 2, 6])
def test_why_b_lists_only_paths_whose_every_step_pushes_b(seed: int) -> None:
    """Issue 21.5: 'Why B' listed L0/N585, a node pushing A (+0.393), on a path 'into B'
    whose sign came from a negative share further on. Every node's part of a Why-B path
    now pushes B, and the path starts from a positive rest."""
    result = random_circuit(seed)
    for towards, sign in (("B", -1), ("A", 1)):
        for p in top_paths(result, k=20, towards=towards):
            assert all(v * sign > 0 for v in _suffix_signs(result, p.nodes))
            assert PathGraph(result).rest[p.nodes[0]] > 0


def test_a_node_pushing_a_is_not_made_a_path_into_b() -> None:
    """The reported case in small: X (layer 0) pushes A directly (+0.9) and feeds Y with a
    negative share; Y pushes A directly. X -> Y scores -0.5, a 'path into B' by sign alone."""
    x = Node(layer=0, position=0, neuron=585, influence=0.4, activation=1.0, token="t0")
    y = Node(layer=1, position=0, neuron=7, influence=1.0, activation=1.0, token="t0")
    result = random_circuit(0).model_copy(update={
        "nodes": [x, y],
        "edges": [Edge(source=x.node_id, target=y.node_id, weight=-0.5, raw=-0.5),
                  Edge(source=x.node_id, target="metric", weight=0.4, raw=0.9),
                  Edge(source=y.node_id, target="metric", weight=1.0, raw=1.0)]})
    signed = [p.nodes for p in top_paths(result, k=5) if p.score < 0]
    assert signed == [[x.node_id, y.node_id]]  # the decomposition still has it
    assert top_paths(result, k=5, towards="B") == []


def test_paths_through_a_node_add_up_to_its_influence() -> None:
    result = random_circuit(3, n_layers=4, per_layer=3)
    every = all_paths(result)
    for node in result.nodes:
        total = sum(v for v, p in every if node.node_id in p)
        assert total == pytest.approx(node.influence, abs=1e-9)


def test_paths_read_from_first_to_last_and_name_their_tokens() -> None:
    result = random_circuit(4)
    (best,) = top_paths(result, k=1)
    layers = [int(i[1:].split("/")[0]) for i in best.nodes]
    assert layers == sorted(layers) and len(best.tokens) == len(best.nodes)


def test_an_unknown_node_or_a_bad_k_is_the_users_mistake() -> None:
    result = random_circuit(5)
    with pytest.raises(InputError, match="not in this view"):
        top_paths(result, through="L9/N9@9")
    with pytest.raises(InputError, match="k must be"):
        top_paths(result, k=0)


def test_paths_endpoints_answer_on_a_stored_run(client) -> None:  # type: ignore[no-untyped-def]
    """The JSON API and the page's path view on a tiny model's stored run; an unknown
    node is a 4xx naming the field."""
    from tests.unit.test_api import api_error
    from tests.unit.test_api_circuits import BODY

    run = client.post("/api/v1/attribute", json=BODY).json()
    run_id = run["run_id"]
    why_b = client.get(f"/api/v1/runs/{run_id}/paths", params={"towards": "B", "k": 3})
    assert why_b.status_code == 200, why_b.text
    assert why_b.json() and all(p["score"] < 0 for p in why_b.json())
    node = why_b.json()[0]["nodes"][-1]
    through = client.get(f"/api/v1/runs/{run_id}/paths", params={"node": node}).json()
    assert through and all(node in p["nodes"] for p in through)
    page = client.get(f"/runs/{run_id}/paths", params={"node": node})
    assert page.status_code == 200 and 'id="paths-through"' in page.text
    assert f'data-node="{node}"' in page.text and 'id="paths-why-b"' in page.text
    api_error(client.get(f"/api/v1/runs/{run_id}/paths", params={"node": "L99/N1@0"}), 422)
