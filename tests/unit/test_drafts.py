"""Drafted training texts (issue 22.5): no draft ever names the wrong answer, every
discard is counted, the page says where the drafts came from, and the in-context
preview beside them is the preview of exactly those texts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from analysis.correction.drafts import MAX_TRIES, clean, completion_prompt, draft_texts
from analysis.errors import InputError
from tests.unit.access_apps import client_with_run

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


def scripted(texts: list[str]):  # type: ignore[no-untyped-def]
    """A writer that answers with the given samples in turn (what an endpoint might say)."""
    seeds: list[int] = []

    def write(seed: int) -> str:
        seeds.append(seed)
        return texts[len(seeds) - 1] if len(seeds) <= len(texts) else "ok"
    return write, seeds


def test_a_sample_naming_the_wrong_answer_is_discarded_and_counted() -> None:
    write, seeds = scripted([
        "Renin is an enzyme, not a hormone.",            # names B: discarded
        "Aldosterone acts on the kidney to keep sodium.",
        "Aldosterone acts on the kidney to keep sodium.",  # a repeat: discarded
        "The REN gene is expressed in the kidney.",        # B's token form? no: "ren" != renin
        "Aldosterone is made in the adrenal cortex and regulates blood pressure.",
        "x",                                               # says nothing: discarded
        "Aldosterone raises sodium reabsorption in the kidney tubules.",
    ])
    d = draft_texts(write, asked="asked", source="a script", answer_a=" aldosterone",
                    answer_b=" renin", concept=["kidney", "sodium"],
                    topic_words=["blood pressure"], n=4)
    assert all("renin" not in x.text.lower() for x in d.drafts)
    # Three clean drafts, then samples until the budget ran out; the one on the topic
    # fills the fourth place, last, with its flag.
    assert len(d.drafts) == 4 and seeds == list(range(4 * MAX_TRIES))
    assert d.discarded == 3 + (4 * MAX_TRIES - 7) and d.set_aside == 0
    assert [x.finding.ok for x in d.drafts] == [True, True, True, False]
    assert d.drafts[-1].text == (
        "Aldosterone is made in the adrenal cortex and regulates blood pressure.")
    assert "blood pressure" in d.drafts[-1].finding.why["mentions_topic"]


def test_a_draft_on_the_topic_is_set_aside_when_clean_ones_come() -> None:
    write, seeds = scripted(["Aldosterone regulates blood pressure in the body.",
                             "Aldosterone acts on the kidney to keep sodium.",
                             "Aldosterone is made in the adrenal cortex."])
    d = draft_texts(write, asked="", source="", answer_a=" aldosterone", answer_b=" renin",
                    concept=["kidney"], topic_words=["blood pressure"], n=2)
    assert [x.text for x in d.drafts] == ["Aldosterone acts on the kidney to keep sodium.",
                                          "Aldosterone is made in the adrenal cortex."]
    assert d.set_aside == 1 and d.discarded == 0 and len(seeds) == 3


def test_a_writer_that_only_names_the_wrong_answer_stops() -> None:
    write, seeds = scripted(["Renin is everywhere in this text."] * 100)
    d = draft_texts(write, asked="", source="", answer_a=" aldosterone", answer_b=" renin",
                    concept=["kidney"], n=2)
    assert d.drafts == [] and d.discarded == 2 * MAX_TRIES == len(seeds)


def test_bad_requests_are_named() -> None:
    write, _ = scripted([])
    with pytest.raises(InputError, match="choose a concept"):
        draft_texts(write, asked="", source="", answer_a="a", answer_b="b", concept=[" "])
    with pytest.raises(InputError, match="between 1 and"):
        draft_texts(write, asked="", source="", answer_a="a", answer_b="b", concept=["k"],
                    n=99)


def test_the_model_continues_a_fact_about_the_correct_answer() -> None:
    prompt, lead = completion_prompt(" aldosterone", ["kidney", "sodium"])
    assert prompt.endswith("A fact about aldosterone and kidney, sodium: Aldosterone")
    assert lead == "Aldosterone" and "renin" not in prompt.lower()
    assert clean("Aldosterone acts on the kidney. Then more text\nA fact") == (
        "Aldosterone acts on the kidney.")


@pytest.fixture(scope="module")
def client_run(tiny_dirs, tmp_path_factory):  # type: ignore[no-untyped-def]
    with client_with_run(tiny_dirs, tmp_path_factory.mktemp("data"), tau=0.05,
                         max_nodes=15) as (client, run):
        yield client, run["run_id"]


def test_the_resident_model_drafts_and_the_page_shows_the_same(client_run) -> None:  # type: ignore[no-untyped-def]
    client, run_id = client_run
    r = client.post(f"/api/v1/runs/{run_id}/drafts", json={"concept": ["kidney"], "n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"].startswith("the resident model tiny")
    assert all("renin" not in d["text"].lower() for d in body["drafts"])
    again = client.post(f"/api/v1/runs/{run_id}/drafts",
                        json={"concept": ["kidney"], "n": 2}).json()
    assert [d["text"] for d in again["drafts"]] == [d["text"] for d in body["drafts"]]  # seeded
    page = client.post(f"/runs/{run_id}/drafts", data={"concept": "kidney", "n": "2"}).text
    assert "Drafted by <b>the resident model tiny" in page
    for d in body["drafts"]:
        assert f">{d['text']}</textarea>" in page.replace("&#39;", "'").replace("&quot;", '"')
    if body["preview"]:
        p = body["preview"]
        alone, ctx = p['alone']['scores']['m'], p['in_context']['scores']['m']
        assert f"{alone:+.3f} alone → <b>{ctx:+.3f}</b>" in page
        assert [s["texts"] for s in p["per_text"]] in ([], [[1], [2]])


@pytest.mark.parametrize(("body", "words"), [
    ({"concept": []}, "concept"),
    ({"concept": ["kidney"], "n": 0}, "n"),
    ({"concept": ["kidney"], "writer": "endpoint"}, "no LLM endpoint is configured"),
    ({"concept": ["x" * 41]}, "concept"),
])
def test_bad_draft_requests_are_refused(client_run, body, words) -> None:  # type: ignore[no-untyped-def]
    client, run_id = client_run
    r = client.post(f"/api/v1/runs/{run_id}/drafts", json=body)
    assert r.status_code == 422, r.text
    assert words in r.text


class _Endpoint(BaseHTTPRequestHandler):
    answers = iter(["Renin, of course.", "Aldosterone keeps sodium in the kidney.",
                    "Aldosterone is a steroid of the adrenal cortex."])

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["temperature"] > 0 and "seed" in body
        data = json.dumps({"choices": [{"message": {"content": next(self.answers)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_an_endpoint_drafts_when_configured_and_the_source_says_so(
        client_run, endpoint: str) -> None:  # type: ignore[no-untyped-def]
    from analysis.llm_describe import LLMEndpoint
    from app.services.drafts import drafts_for_run

    client, run_id = client_run
    app = client.app
    run = app.state.runs.get(run_id)
    import anyio

    drafts, preview = anyio.run(lambda: drafts_for_run(
        run, app.state.manager, LLMEndpoint(url=endpoint, model="m"), concept=["kidney"],
        n=2))
    assert drafts.source == f"the configured LLM endpoint (m at {endpoint})"
    assert [d.text for d in drafts.drafts] == ["Aldosterone keeps sodium in the kidney.",
                                               "Aldosterone is a steroid of the adrenal cortex."]
    assert drafts.discarded == 1 and "Write one short factual sentence" in drafts.instruction
    assert preview is not None and len(preview.per_text) == 2


def test_kept_drafts_fill_the_job_forms_training_texts(client_run) -> None:  # type: ignore[no-untyped-def]
    client, run_id = client_run
    kept = ["Aldosterone keeps sodium in the kidney.", "Aldosterone is a steroid."]
    page = client.get("/jobs", params={"run": run_id, "texts": kept}).text
    for text in kept:
        assert f'<textarea name="texts" rows="4">{text}</textarea>' in page
    too_many = client.get("/jobs", params={"run": run_id, "texts": ["x"] * 9})
    assert too_many.status_code == 422
