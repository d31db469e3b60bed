"""Circuit endpoints on a tiny local model: runs are saved and reused, graphs re-filter
without recomputing, interventions and neuron descriptions answer, labels persist."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_api import api_error

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
BODY = {"prompt": PROMPT, "answer_a": " aldosterone", "answer_b": " renin", "tau": 0.02,
        "method": "grad_x_act"}


@pytest.fixture(scope="module")
def run(client: TestClient) -> dict:
    r = client.post("/api/v1/attribute", json=BODY)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_attribute_returns_a_saved_circuit(client: TestClient, run: dict) -> None:
    res = run["result"]
    assert run["cached"] is False and run["run_id"]
    assert res["model_name"] == "tiny-llama" and res["params"]["method"] == "grad_x_act"
    assert res["nodes"], "a random model still has influential neurons at tau=0.02"
    assert all(abs(n["influence"]) >= 0.02 * abs(res["m"]) for n in res["nodes"])
    assert res["faithfulness"]["m_clean"] == pytest.approx(res["m"], abs=1e-3)
    again = client.post("/api/v1/attribute", json=BODY).json()
    assert again["cached"] is True and again["run_id"] == run["run_id"]
    fresh = client.post("/api/v1/attribute", json={**BODY, "use_cache": False}).json()
    assert fresh["cached"] is False and fresh["run_id"] != run["run_id"]
    assert fresh["result"]["m"] == pytest.approx(res["m"], abs=1e-5)
    stored = client.get(f"/api/v1/runs/{run['run_id']}").json()
    assert stored["result"]["nodes"] == res["nodes"]


def test_graph_refilters_without_recomputing(client: TestClient, run: dict) -> None:
    res = run["result"]
    full = client.get("/api/v1/graph", params={"run_id": run["run_id"]}).json()
    assert len(full["nodes"]) == len(res["nodes"])
    strict = client.get("/api/v1/graph", params={"run_id": run["run_id"], "tau": 0.2}).json()
    expected = [n for n in res["nodes"] if abs(n["influence"]) >= 0.2 * abs(res["m"])]
    assert len(strict["nodes"]) == len(expected) < len(res["nodes"])
    kept = {n["node_id"] for n in strict["nodes"]}
    assert all(e["source"] in kept for e in strict["edges"])
    ct = client.get("/api/v1/graph", params={"run_id": run["run_id"],
                                             "format": "circuit-tracer"}).json()
    assert {"metadata", "nodes", "links"} <= set(ct)
    api_error(client.get("/api/v1/graph", params={"run_id": "nope"}), 404)
    api_error(client.get("/api/v1/graph", params={"run_id": run["run_id"], "tau": 2}), 422)


def test_intervene_zeroing_the_top_neuron_moves_m(client: TestClient, run: dict) -> None:
    top = max(run["result"]["nodes"], key=lambda n: abs(n["influence"]))
    r = client.post("/api/v1/intervene", json={
        "prompt": PROMPT, "answer_a": " aldosterone", "answer_b": " renin",
        "edits": [{"layer": top["layer"], "neuron": top["neuron"], "scale": 0}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["m_before"] == pytest.approx(run["result"]["m"], abs=1e-4)
    assert body["m_after"] != pytest.approx(body["m_before"], abs=1e-6)
    assert len(body["top_after"]) == 10


def test_neuron_description_and_label(client: TestClient) -> None:
    r = client.get("/api/v1/neurons/1/5", params={"prompt": PROMPT})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["name"] == "L1/N5" and len(d["promotes"]) == 10 and d["label"] is None
    assert len(d["activations"]) == len(client.post(
        "/api/v1/predict", json={"prompt": PROMPT}).json()["prompt"]["input_ids"])
    saved = client.put("/api/v1/neurons/1/5/label", json={"label": "kidney"}).json()
    assert saved["label"] == "kidney"
    assert client.get("/api/v1/neurons/1/5").json()["label"] == "kidney"
    # Labels show up on new runs that keep that neuron.
    res = client.post("/api/v1/attribute", json={**BODY, "use_cache": False}).json()["result"]
    for n in res["nodes"]:
        assert (n["label"] == "kidney") == (n["layer"] == 1 and n["neuron"] == 5)
    client.put("/api/v1/neurons/1/5/label", json={"label": ""})
    assert client.get("/api/v1/neurons/1/5").json()["label"] is None


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("post", "/api/v1/attribute", {**BODY, "answer_b": " aldosterone"}, 422, "answer_b"),
        ("post", "/api/v1/attribute", {**BODY, "tau": 0}, 422, "tau"),
        ("post", "/api/v1/attribute", {**BODY, "tau": 2}, 422, "tau"),
        ("post", "/api/v1/attribute", {**BODY, "method": "magic"}, 422, "method"),
        ("post", "/api/v1/attribute", {**BODY, "answer_a": ""}, 422, "answer_a"),
        ("post", "/api/v1/attribute", {**BODY, "max_nodes": 5000}, 413, "max_nodes"),
        ("post", "/api/v1/intervene", {"prompt": PROMPT, "edits": [{"layer": 9, "neuron": 0}]},
         422, "layer"),
        ("post", "/api/v1/intervene", {"prompt": PROMPT, "edits": [{"layer": 0,
                                                                    "neuron": 10_000}]},
         422, "neuron"),
        ("post", "/api/v1/intervene", {"prompt": PROMPT, "edits": []}, 422, "edits"),
        # A layer or neuron the model lacks: the path names nothing (issue 16).
        ("get", "/api/v1/neurons/7/0", None, 404, "layer"),
        ("put", "/api/v1/neurons/0/99999/label", {"label": "x"}, 404, "neuron"),
    ],
)
def test_bad_circuit_input(client: TestClient, method: str, path: str, body: dict | None,
                           status: int, field: str) -> None:
    resp = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    err = api_error(resp, status)
    assert err["field"] == field, err
