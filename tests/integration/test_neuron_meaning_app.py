"""Neuron meaning through the app on the default embedded model: a corpus is uploaded,
an index is built by the real job worker (same queue as corrections), then the seed
prompt's run shows what its drivers respond to, concept candidates with topic words and a
search hit - and asking for the same index again builds nothing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analysis.neurons.corpus import default_corpus
from app.jobs.job_settings import JobSettings
from app.main import create_app
from app.settings import Settings
from tests.conftest import CACHE_DIR, SEED_PROMPT
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

TOPICS = ("blood", "kidney", "hormone", "gland", "pressure", "enzyme")


@pytest.fixture(scope="module")
def app_client(embedded_lm: Any, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[TestClient]:
    settings = Settings(cache_dir=CACHE_DIR, data_dir=tmp_path_factory.mktemp("meaning"),
                        jobs=JobSettings(heartbeat_s=0.5, poll_s=0.2, workers=1))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _corpus_file(path: Path) -> bytes:
    texts = [t for t in default_corpus().texts if any(w in t.lower() for w in TOPICS)]
    return ("\n".join(texts[:160]) + "\n").encode()


@pytest.fixture(scope="module")
def index(app_client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict:
    data = _corpus_file(tmp_path_factory.mktemp("corpus"))
    up = app_client.post("/api/v1/corpora", files={"file": ("bio.txt", data)})
    assert up.status_code == 200, up.text
    assert up.json()["texts"] == 160
    queued = app_client.post("/api/v1/indexes", json={"corpus": up.json()["key"]})
    assert queued.status_code == 202, queued.text
    row = queued.json()
    assert row["state"] in ("queued", "building") and row["job_id"]
    def ready() -> dict | None:
        nonlocal row
        row = next(r for r in app_client.get("/api/v1/indexes").json()["indexes"]
                   if r["id"] == row["id"])
        assert row["state"] not in ("failed", "cancelled", "interrupted"), row
        return row if row["state"] == "ready" else None

    row = wait_for(ready, "the index to be built")
    row["corpus_key_upload"] = up.json()["key"]
    return row


def test_the_index_job_ran_in_the_shared_queue(app_client: TestClient, index: dict) -> None:
    assert index["tokens_done"] == index["tokens_total"] > 1000
    page = app_client.get(f"/indexes/jobs/{index['job_id']}")
    assert page.status_code == 200 and "succeeded" in page.text and "tokens/s" in page.text
    # The job page redirects index builds to their own page; corrections list skips them.
    assert app_client.get(f"/jobs/{index['job_id']}", follow_redirects=False
                          ).status_code == 303
    assert all(j["id"] != index["job_id"] for j in app_client.get("/api/v1/jobs").json()["jobs"])
    again = app_client.post("/api/v1/indexes", json={"corpus": index["corpus_key_upload"]})
    assert again.status_code == 202
    assert (again.json()["id"], again.json()["state"]) == (index["id"], "ready")


def test_seed_run_reads_the_index(app_client: TestClient, index: dict) -> None:
    run = app_client.post("/api/v1/attribute", json={
        "prompt": SEED_PROMPT, "answer_a": " aldosterone", "answer_b": " renin",
        "edges": True}).json()
    result = run["result"]
    # The complete index's always-on flags joined the prompt's: none is left in the circuit.
    assert result["always_on_source"].startswith(f"index {index['id'][:8]}")
    from_index = {(f["layer"], f["neuron"]) for f in result["always_on"]
                  if f["reason"] == "index"}
    assert from_index and all(f["dropped"] for f in result["always_on"])
    assert not from_index & {(n["layer"], n["neuron"]) for n in result["nodes"]}
    drivers = sorted((n for n in result["neurons"] if n["influence"] < 0),
                     key=lambda n: n["influence"])[:5]
    for n in drivers:
        got = app_client.get(f"/api/v1/neurons/{n['layer']}/{n['neuron']}").json()
        meaning = got["meaning"]
        assert meaning and meaning["index_id"] == index["id"]
        assert len(meaning["exemplars"]) == 12 and meaning["description"]
        assert meaning["description_source"] == "data"
    panel = app_client.get("/neurons/meaning", params={
        "model": result["model_name"], "layer": drivers[0]["layer"],
        "neuron": drivers[0]["neuron"]})
    assert panel.status_code == 200
    assert panel.text.count("<mark") >= 12 and 'id="neuron-description"' in panel.text
    # The neurons table says what each kept neuron responds to (its strongest exemplar),
    # on the run page and on every re-filter of the graph.
    page = app_client.get(f"/runs/{run['run_id']}").text
    assert page.count('<div class="gist"') == len(result["nodes"]) > 0
    top = app_client.get(
        f"/api/v1/neurons/{drivers[0]['layer']}/{drivers[0]['neuron']}").json()
    seed_exemplar = top["meaning"]["exemplars"][0]
    assert f"<mark>{seed_exemplar['token']}</mark>" in page
    refiltered = app_client.get(f"/runs/{run['run_id']}/graph", params={"tau": 0.5}).text
    assert 0 < refiltered.count('<div class="gist"') < len(result["nodes"])
    concepts = app_client.get(f"/api/v1/runs/{run['run_id']}/concepts").json()
    assert concepts["index_id"] == index["id"] and concepts["candidates"]
    words = [w for c in concepts["candidates"] for w in c["topic_words"]]
    assert words and not any("renin" in w or "aldosterone" in w for w in words)
    html = app_client.get(f"/runs/{run['run_id']}/concepts").text
    assert "Write texts on" in html and "/jobs?run=" in html and "&amp;topics=" not in html
    # The link opens the Jobs page with the candidate in a Concept box, not in Topic words.
    from html import unescape

    first = concepts["candidates"][0]
    href = unescape(re.search(r'class="button small write-texts" href="([^"]+)"', html)[1])
    jobs = app_client.get(href).text
    box = jobs.split('id="concept-box"')[1].split("</section>")[0]
    assert f"L{first['layer']}/N{first['neuron']}" in box
    assert all(f'<span class="word">{w}</span>' in box for w in first["topic_words"])
    hits = app_client.get("/api/v1/neurons/search", params={"q": "kidney"}).json()["hits"]
    assert hits and all("layer" in h and "example" in h for h in hits)


def _rows(app_client: TestClient) -> dict[str, dict]:
    return {r["id"]: r for r in app_client.get("/api/v1/indexes").json()["indexes"]}


def test_a_build_whose_worker_is_killed_is_interrupted_and_resumes(
        app_client: TestClient, index: dict) -> None:
    """SIGKILL the worker mid-build: it cannot write its index row, yet the list says
    "interrupted" (the row follows its job, which the queue marks interrupted), and the
    start-up resume queues it again and finishes it - nothing is lost, nothing stays
    "building" forever."""
    import os
    import signal

    # Enough texts that the build is still running when the test sees its first progress
    # (the first snapshot comes early), few enough that the resumed build is short.
    texts = default_corpus().texts[2000:3000]
    up = app_client.post("/api/v1/corpora", files={
        "file": ("killed.txt", ("\n".join(texts) + "\n").encode())})
    assert up.status_code == 200, up.text
    row = app_client.post("/api/v1/indexes", json={"corpus": up.json()["key"]}).json()
    # States, not speed: each wait ends on the state it waits for; PATIENCE_S only stops
    # a real hang (a loaded machine makes this slower, never red).
    index_id = row["id"]

    def in_state(*wanted: str, progress: bool = False) -> Callable[[], dict | None]:
        def check() -> dict | None:
            now = _rows(app_client)[index_id]
            assert now["state"] in ("queued", "building", *wanted), now
            if now["state"] in wanted and (not progress or now["tokens_done"] > 0):
                return now  # type: ignore[no-any-return]
            return None
        return check

    row = wait_for(in_state("building", progress=True), "the build to make progress",
                   poll_s=0.1)
    queue = app_client.app.state.jobs  # type: ignore[attr-defined]
    pid = queue.get(row["job_id"]).worker_pid
    assert pid
    os.kill(pid, signal.SIGKILL)

    row = wait_for(in_state("interrupted"), "the killed build to read 'interrupted'")
    assert queue.get(row["job_id"]).state == "interrupted" and row["error"]

    [resumed] = app_client.app.state.index_builds.resume_interrupted()  # type: ignore[attr-defined]
    assert resumed.id == row["id"] and resumed.job_id != row["job_id"]
    row = wait_for(in_state("ready"), "the resumed build to finish")
    assert row["tokens_done"] == row["tokens_total"] > 0
    assert app_client.app.state.index_builds.resume_interrupted() == []  # type: ignore[attr-defined]
