"""Neuron-meaning routes on a tiny local model, without an index: the run page lazy-loads
concept candidates, the panel says no index exists and how to get one, the Neurons page
lists none, and bad input to the index routes is a clear 4xx that writes nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.test_pages import FORM


def _run_id(client: TestClient) -> str:
    r = client.post("/analyze/run", data=FORM)
    assert r.status_code == 200, r.text
    assert 'hx-get="/runs/' in r.text and '/concepts"' in r.text
    return r.headers["HX-Push-Url"].rsplit("/", 1)[1]


def test_concept_candidates_without_an_index(client: TestClient) -> None:
    run_id = _run_id(client)
    api = client.get(f"/api/v1/runs/{run_id}/concepts").json()
    assert api["index_id"] is None
    result = client.get(f"/api/v1/runs/{run_id}").json()["result"]
    towards_b = {(n["layer"], n["neuron"]) for n in result["neurons"] if n["influence"] < 0}
    got = [(c["layer"], c["neuron"]) for c in api["candidates"]]
    assert got and set(got) <= towards_b
    page = client.get(f"/runs/{run_id}/concepts")
    assert page.status_code == 200
    assert 'id="concepts-table"' in page.text and "No exemplar index" in page.text
    assert client.get("/runs/nope/concepts").status_code == 404


def test_panel_meaning_and_indexes_pages_without_an_index(client: TestClient) -> None:
    r = client.get("/neurons/meaning", params={"model": "tiny-llama", "layer": 0,
                                               "neuron": 3})
    assert r.status_code == 200 and "No exemplar index for tiny-llama" in r.text
    assert client.get("/neurons/meaning", params={"model": "nope", "layer": 0,
                                                  "neuron": 3}).status_code == 404
    page = client.get("/indexes")
    assert page.status_code == 200 and "No index yet" in page.text
    assert client.get("/api/v1/indexes").json() == {"indexes": []}
    missing = client.get("/api/v1/neurons/search", params={"q": "kidney"})
    assert missing.status_code == 404 and "build one" in missing.json()["error"]["message"]


def test_bad_corpus_uploads_are_refused_and_leave_nothing(client: TestClient) -> None:
    data_dir = client.app.state.settings.data_dir  # type: ignore[attr-defined]
    for name, body, words in (("empty.txt", b"\n\n  \n", "empty"),
                              ("bin.txt", bytes(range(256)) * 8, "binary"),
                              ("bad.jsonl", b'{"text": "ok"}\nnot json\n', "line 2")):
        r = client.post("/api/v1/corpora", files={"file": (name, body)})
        assert r.status_code in (400, 413, 415, 422), (name, r.status_code, r.text)
        assert words in r.json()["error"]["message"].lower(), (name, r.json())
    corpora = data_dir / "corpora"
    assert not corpora.exists() or not any(corpora.iterdir())
    unknown = client.post("/api/v1/indexes", json={"model": "nope"})
    assert unknown.status_code == 404
    bad_key = client.post("/api/v1/indexes", json={"corpus": "zz"})
    assert bad_key.status_code == 422 and "corpus" in bad_key.text
