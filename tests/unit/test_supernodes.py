"""Supernodes: the store on SQLite and PostgreSQL, suggestions on a graph with two obvious
communities, and the JSON and HTML routes on a tiny model (validation 4xx naming the bad
member, group interventions, the partial's buttons)."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from analysis.attribution import CircuitSettings
from analysis.attribution.groups import GroupMember, group_edits, run_graph, suggest_groups
from analysis.attribution.results import CircuitResult, Completeness, Edge, Node, TokenInfo
from analysis.errors import InputError
from app.store.runs import RunStore
from app.store.supernodes import SupernodeStore
from app.store.tables import Run, init_db
from tests.unit.test_api import api_error
from tests.unit.test_db import db_url  # noqa: F401  (the SQLite + PostgreSQL fixture)

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
BODY = {"prompt": PROMPT, "answer_a": " aldosterone", "answer_b": " renin", "tau": 0.02,
        "method": "grad_x_act", "max_nodes": 40}


def test_store_round_trip(db_url: str) -> None:  # noqa: F811
    sessions = init_db(db_url)
    run = RunStore(sessions).add(Run(model="m", prompt="p", result={}))
    store = SupernodeStore(sessions)
    members = [{"layer": 3, "neuron": 7, "position": None},
               {"layer": 4, "neuron": 1, "position": 2}]
    first = store.add(run.id, "renin pathway", members)
    second = store.add(run.id, "aldosterone", members[:1])
    assert [g.name for g in store.listing(run.id)] == ["renin pathway", "aldosterone"]
    got = store.get(run.id, first.id)
    assert got is not None and got.members == members and got.created_at is not None
    assert store.get("other-run", first.id) is None  # ids are scoped to their run
    with pytest.raises(InputError, match="already has a group named 'aldosterone'"):
        store.add(run.id, "aldosterone", members)
    assert store.delete(run.id, second.id) and not store.delete(run.id, second.id)
    assert [g.id for g in store.listing(run.id)] == [first.id]


def _synthetic() -> CircuitResult:
    """Two triangles of strongly linked nodes, one pushing A and one B, joined by a weak
    edge into a node with a strong input; every node also has an edge into the metric
    (which must not merge them)."""
    nodes = [Node(layer=layer, position=pos, neuron=neuron, influence=infl, activation=1.0)
             for layer, pos, neuron, infl in [
                 (0, 1, 10, 0.5), (1, 1, 11, 0.4), (2, 1, 12, 0.3),     # towards A
                 (0, 3, 20, -0.9), (1, 3, 21, -0.8), (2, 3, 22, -0.7),  # towards B
             ]]
    ids = [n.node_id for n in nodes]
    edges = [Edge(source=ids[s], target=ids[t], weight=w, raw=w) for s, t, w in [
        (0, 1, 1.0), (0, 2, 0.8), (1, 2, -0.9),
        (3, 4, -1.2), (3, 5, 0.7), (4, 5, 1.1),
        (0, 4, 0.05),
    ]] + [Edge(source=i, target="metric", weight=2.0, raw=2.0) for i in ids]
    return CircuitResult(
        input_ids=[1, 2, 3, 4], target_a=5, target_b=6, m=-1.2, logit_a=1.0, logit_b=2.2,
        tokens=[TokenInfo(position=i, id=i + 1, text=f" t{i}") for i in range(4)],
        params=CircuitSettings(), nodes=nodes, edges=edges,
        completeness=Completeness(m=-1.2, influence_sum=-1.2, target=-1.2, ratio=1.0))


def test_suggestions_find_two_obvious_communities() -> None:
    result = _synthetic()
    graph = run_graph(result)
    assert graph.number_of_edges() == 7  # the metric edges are left out
    # Each edge weighs its share of the target's input: node 4 takes 1.2 from node 3 and
    # 0.05 from node 0.
    ids = [n.node_id for n in result.nodes]
    assert graph[ids[3]][ids[4]]["weight"] == pytest.approx(1.2 / 1.25)
    assert graph[ids[0]][ids[4]]["weight"] == pytest.approx(0.05 / 1.25)
    groups = suggest_groups(result)
    as_sets = [{(m.layer, m.neuron, m.position) for m in g.members} for g in groups]
    assert as_sets == [{(0, 20, 3), (1, 21, 3), (2, 22, 3)},   # strongest |influence| first
                       {(0, 10, 1), (1, 11, 1), (2, 12, 1)}]
    assert [g.towards for g in groups] == ["B", "A"]
    assert groups[0].influence == pytest.approx(-2.4)
    assert groups[0].internal_weight == pytest.approx(3.0)
    assert groups[0].name == "L0-L2 at 't3' → B, led by L0/N20"
    assert suggest_groups(result) == groups  # seeded: the same on every call


def test_group_edits_cover_the_kept_positions_and_name_a_bad_member() -> None:
    result = _synthetic()
    extra = result.nodes[0].model_copy(update={"position": 2})
    result = result.model_copy(update={"nodes": [*result.nodes, extra]})
    edits = group_edits(result, [GroupMember(layer=0, neuron=10, position=None),
                                 GroupMember(layer=1, neuron=21, position=3)], 0.0)
    assert [(e.layer, e.neuron, e.positions, e.scale) for e in edits] == [
        (0, 10, [1, 2], 0.0), (1, 21, [3], 0.0)]
    with pytest.raises(InputError, match=r"member 2 \(L1/N21 at position 0\)") as info:
        group_edits(result, [GroupMember(layer=0, neuron=10),
                             GroupMember(layer=1, neuron=21, position=0)], 0.0)
    assert info.value.field == "members.1"


@pytest.fixture(scope="module")
def run(client: TestClient) -> dict:
    r = client.post("/api/v1/attribute", json=BODY)
    assert r.status_code == 200, r.text
    body = r.json()
    return {"id": body["run_id"], "result": CircuitResult.model_validate(body["result"])}


def _members(nodes: list[Node]) -> list[dict]:
    return [{"layer": n.layer, "neuron": n.neuron, "position": n.position} for n in nodes]


def test_api_validation_is_4xx_naming_the_problem(client: TestClient, run: dict) -> None:
    url = f"/api/v1/runs/{run['id']}/supernodes"
    node = run["result"].nodes[0]
    good = _members([node])
    assert api_error(client.post(url, json={"name": "", "members": good}), 422)["field"] \
        == "name"
    assert api_error(client.post(url, json={"name": "x" * 81, "members": good}), 422)[
        "field"] == "name"
    assert api_error(client.post(url, json={"name": "g", "members": []}), 422)["field"] \
        == "members"
    assert api_error(client.post(url, json={"name": "g", "members": good * 201}), 422)[
        "field"] == "members"
    bad = {"layer": node.layer, "neuron": node.neuron, "position": 999}
    err = api_error(client.post(url, json={"name": "g", "members": [*good, bad]}), 422)
    assert err["field"] == "members.1" and f"L{node.layer}/N{node.neuron}" in err["message"]
    assert "not a node this run kept" in err["message"]
    api_error(client.post("/api/v1/runs/nope/supernodes", json={"name": "g",
                                                                "members": good}), 404)
    api_error(client.delete(f"{url}/999999"), 404)
    api_error(client.post(f"{url}/999999/intervene", json={"mode": "zero"}), 404)


def test_api_create_list_intervene_delete(client: TestClient, run: dict) -> None:
    result: CircuitResult = run["result"]
    url = f"/api/v1/runs/{run['id']}/supernodes"
    towards_b = sorted((n for n in result.nodes if n.influence < 0), key=lambda n: n.influence)
    top = towards_b[:3]
    made = client.post(url, json={"name": "  top B drivers ", "members": _members(top)})
    assert made.status_code == 201, made.text
    group = made.json()
    assert group["name"] == "top B drivers" and group["towards"] == "B"
    assert group["influence"] == pytest.approx(sum(n.influence for n in top))
    assert sorted(group["nodes"]) == sorted(n.node_id for n in top)
    api_error(client.post(url, json={"name": "top B drivers", "members": _members(top)}), 422)
    assert [g["id"] for g in client.get(url).json()] == [group["id"]]

    zeroed = client.post(f"{url}/{group['id']}/intervene", json={"mode": "zero"})
    assert zeroed.status_code == 200, zeroed.text
    out = zeroed.json()
    assert {"m_before", "m_after", "prob_a_before", "prob_b_after", "top_before",
            "top_after", "edits"} <= set(out)
    assert out["m_before"] == pytest.approx(result.m, abs=1e-3)
    assert out["m_after"] != pytest.approx(out["m_before"], abs=1e-5)
    assert all(e["scale"] == 0 for e in out["edits"])
    doubled = client.post(f"{url}/{group['id']}/intervene",
                          json={"mode": "scale", "factor": 2}).json()
    assert all(e["scale"] == 2 for e in doubled["edits"])
    api_error(client.post(f"{url}/{group['id']}/intervene",
                          json={"mode": "scale", "factor": 1000}), 422)

    assert client.delete(f"{url}/{group['id']}").status_code == 204
    assert client.get(url).json() == []


def test_api_suggestions_cover_kept_nodes(client: TestClient, run: dict) -> None:
    got = client.get(f"/api/v1/runs/{run['id']}/supernode-suggestions")
    assert got.status_code == 200, got.text
    kept = {(n.layer, n.neuron, n.position) for n in run["result"].nodes}
    for group in got.json():
        assert len(group["members"]) >= 2 and group["name"]
        assert {(m["layer"], m["neuron"], m["position"]) for m in group["members"]} <= kept


def test_html_partials(client: TestClient, run: dict) -> None:
    base = f"/runs/{run['id']}/supernodes"
    page = client.get(base)
    assert page.status_code == 200 and 'id="supernodes"' in page.text
    suggestion = re.search(r'name="name" value="([^"]*)">\s*<input type="hidden" '
                           r'name="members" value="([^"]*)"', page.text)
    assert suggestion, "the partial offers at least one suggestion with a save button"
    name, members = (s.replace("&#34;", '"').replace("&quot;", '"').replace("&#39;", "'")
                     .replace("&amp;", "&") for s in suggestion.groups())
    saved = client.post(base, data={"name": name, "members": members})
    assert saved.status_code == 200 and "Saved group" in saved.text
    gid = re.search(r'data-supernode="(\d+)"', saved.text).group(1)
    assert len(json.loads(members)) == saved.text.count("<code>L")

    zeroed = client.post(f"{base}/{gid}/intervene", data={"mode": "zero"})
    assert zeroed.status_code == 200, zeroed.text
    assert "Group “" in zeroed.text and 'id="m-after"' in zeroed.text

    bad = client.post(base, data={"name": "x", "members": "not json"})
    assert bad.status_code == 422 and 'data-field="members"' in bad.text
    assert 'data-supernode="' in bad.text  # the groups stay on screen beside the message
    dup = client.post(base, data={"name": name, "members": members})
    assert dup.status_code == 422 and 'data-field="name"' in dup.text
    odd = client.post(f"{base}/{gid}/intervene", data={"mode": "melt"})
    assert odd.status_code == 422 and 'data-field="mode"' in odd.text

    gone = client.post(f"{base}/{gid}/delete")
    assert gone.status_code == 200 and "Deleted group" in gone.text
    assert 'data-supernode="' not in gone.text
