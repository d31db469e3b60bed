"""Supernodes on the seed prompt with the default embedded model, through the server:
zeroing the group of the strongest drivers towards B (renin) moves m towards A, scaling it
up moves m further towards B; the suggested groups and the export are checked too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator

from analysis.attribution import CircuitResult
from tests.conftest import CACHE_DIR, SEED_PROMPT

pytestmark = pytest.mark.integration
SCHEMA = Path(__file__).parents[1] / "fixtures" / "conformance" / "neuronpedia-graph-schema.json"


@pytest.fixture(scope="module")
def server(embedded_lm, tmp_path_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(cache_dir=CACHE_DIR, data_dir=tmp_path_factory.mktemp("data")))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def run(server: TestClient) -> dict:
    r = server.post("/api/v1/attribute", json={
        "prompt": SEED_PROMPT, "answer_a": " aldosterone", "answer_b": " renin",
        "tau": 0.15, "method": "relp"})
    assert r.status_code == 200, r.text
    body = r.json()
    return {"id": body["run_id"], "result": CircuitResult.model_validate(body["result"])}


def test_zeroing_the_top_b_drivers_moves_m_towards_a(server: TestClient, run: dict) -> None:
    result: CircuitResult = run["result"]
    assert result.m < 0  # the model prefers renin
    drivers = sorted((n for n in result.nodes if n.influence < 0), key=lambda n: n.influence)[:5]
    assert len(drivers) >= 3
    url = f"/api/v1/runs/{run['id']}/supernodes"
    made = server.post(url, json={"name": "top renin drivers", "members": [
        {"layer": n.layer, "neuron": n.neuron, "position": n.position} for n in drivers]})
    assert made.status_code == 201, made.text
    gid = made.json()["id"]
    zeroed = server.post(f"{url}/{gid}/intervene", json={"mode": "zero"}).json()
    boosted = server.post(f"{url}/{gid}/intervene", json={"mode": "scale", "factor": 2}).json()
    print(f"\nseed group {[n.node_id for n in drivers]} influence "
          f"{sum(n.influence for n in drivers):+.3f}: m {zeroed['m_before']:+.3f} -> zeroed "
          f"{zeroed['m_after']:+.3f} (P(A) {zeroed['prob_a_before']:.3f}->"
          f"{zeroed['prob_a_after']:.3f}, P(B) {zeroed['prob_b_before']:.3f}->"
          f"{zeroed['prob_b_after']:.3f}), x2 {boosted['m_after']:+.3f}")
    assert zeroed["m_before"] == pytest.approx(result.m, abs=1e-3)
    # The drivers push B (negative influence on m = logit A - logit B): without them m rises,
    # with them doubled it falls.
    assert zeroed["m_after"] > zeroed["m_before"] + 0.1
    assert zeroed["prob_a_after"] / zeroed["prob_b_after"] > \
        zeroed["prob_a_before"] / zeroed["prob_b_before"]
    assert boosted["m_after"] < boosted["m_before"]


def test_suggestions_and_export_on_the_seed_prompt(server: TestClient, run: dict) -> None:
    got = server.get(f"/api/v1/runs/{run['id']}/supernode-suggestions")
    assert got.status_code == 200, got.text
    groups = got.json()
    print("\nseed suggestions:", [(g["name"], len(g["members"]), round(g["influence"], 3))
                                  for g in groups])
    kept = {(n.layer, n.neuron, n.position) for n in run["result"].nodes}
    assert groups, "the seed circuit's edges form at least one community"
    for group in groups:
        assert {(m["layer"], m["neuron"], m["position"]) for m in group["members"]} <= kept
    graph = server.get("/api/v1/graph", params={"run_id": run["id"],
                                                "format": "circuit-tracer"}).json()
    validator = Draft7Validator(json.loads(SCHEMA.read_text()))
    assert [e.message for e in validator.iter_errors(graph)] == []
