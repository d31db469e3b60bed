"""The circuit browser's pages and fragments on a tiny local model (no browser): a run is
saved and reopened, the graph re-filters, the neuron panel answers, exports download, and
bad input comes back as an inline message naming its field."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from fastapi.testclient import TestClient

from analysis.attribution.results import CircuitResult

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
FORM = {"prompt": PROMPT, "answer_a": " aldosterone", "answer_b": " renin", "tau": "0.02",
        "method": "grad_x_act", "max_nodes": "60"}


def figure(html: str) -> dict:
    match = re.search(r'<script type="application/json" class="plotly-figure" '
                      r'data-target="graph-plot">(.*?)</script>', html, re.S)
    assert match, "the fragment carries the graph's figure JSON"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def marker_count(fig: dict) -> int:
    return sum(len(t["x"]) for t in fig["data"] if t.get("name", "").startswith("towards"))


def middle_tau(result: CircuitResult) -> float:
    """A tau that keeps about half of the stored nodes (a random model's scale varies)."""
    ranked = sorted(abs(n.influence) for n in result.nodes)
    return min(1.0, ranked[len(ranked) // 2] / abs(result.m))


def inline_error(r, field: str) -> str:  # type: ignore[no-untyped-def]
    assert 400 <= r.status_code < 500, r.text
    assert f'data-field="{field}' in r.text, r.text
    return re.sub(r"\s+", " ", r.text)


@pytest.fixture(scope="module")
def run(client: TestClient) -> dict:
    r = client.post("/analyze/run", data=FORM)
    assert r.status_code == 200, r.text
    run_id = r.headers["HX-Push-Url"].rsplit("/", 1)[1]
    stored = client.get(f"/api/v1/runs/{run_id}").json()["result"]
    return {"id": run_id, "html": r.text, "result": CircuitResult.model_validate(stored)}


def test_analyze_run_shows_prediction_metric_graph_and_table(run: dict) -> None:
    html, result = run["html"], run["result"]
    assert result.nodes and result.top and result.rank_a is not None
    assert marker_count(figure(html)) == len(result.nodes)
    assert html.count('class="node-row') == len(result.nodes)
    assert f"{result.m:+.3f}" in html
    assert 'id="faithfulness"' in html and 'id="topk"' in html
    assert f"/runs/{run['id']}/export/nodes.csv" in html


def test_permalink_reopens_the_run_with_the_form_filled(client: TestClient, run: dict) -> None:
    page = client.get(f"/runs/{run['id']}")
    assert page.status_code == 200
    assert PROMPT in page.text and 'value=" aldosterone"' in page.text
    assert '<option value="grad_x_act" selected title=' in page.text
    assert marker_count(figure(page.text)) == len(run["result"].nodes)
    listing = client.get("/runs").text
    assert f'href="/runs/{run["id"]}"' in listing and "aldosterone" in listing
    missing = client.get("/runs/00000000000000000000")
    assert missing.status_code == 404 and "no run with id" in missing.text


def test_graph_fragment_refilters_nodes_table_and_edges_together(client: TestClient,
                                                                 run: dict) -> None:
    result = run["result"]
    tau = middle_tau(result)
    r = client.get(f"/runs/{run['id']}/graph", params={"tau": tau, "edge_threshold": 0})
    assert r.status_code == 200
    expected = [n for n in result.nodes if abs(n.influence) >= tau * abs(result.m)]
    assert 0 < len(expected) < len(result.nodes)
    assert marker_count(figure(r.text)) == len(expected)
    assert r.text.count('class="node-row') == len(expected)
    strong = max(abs(e.weight) for e in result.edges)
    none_left = client.get(f"/runs/{run['id']}/graph",
                           params={"edge_threshold": strong * 2}).text
    assert not [t for t in figure(none_left)["data"] if t["mode"] == "lines" and t["x"]]
    inline_error(client.get(f"/runs/{run['id']}/graph", params={"tau": 2}), "tau")


def test_neuron_panel_label_and_intervention(client: TestClient, run: dict) -> None:
    top = max(run["result"].nodes, key=lambda n: abs(n.influence))
    q = {"layer": top.layer, "neuron": top.neuron, "position": top.position}
    panel = client.get(f"/runs/{run['id']}/neuron", params=q)
    assert panel.status_code == 200 and f"L{top.layer}/N{top.neuron}" in panel.text
    assert 'id="promotes"' in panel.text and 'data-target="position-plot"' in panel.text
    saved = client.post(f"/runs/{run['id']}/label", data={**q, "label": "renin booster"})
    assert saved.status_code == 200 and 'value="renin booster"' in saved.text
    assert "Saved." in saved.text
    # The label shows on the run when it is reopened, in the table and the hover text.
    again = client.get(f"/runs/{run['id']}").text
    assert '<td class="label-cell">renin booster</td>' in again
    assert "renin booster" in json.dumps(figure(again))
    zeroed = client.post(f"/runs/{run['id']}/intervene",
                         data={"layer": top.layer, "neuron": top.neuron, "scale": "0"})
    assert zeroed.status_code == 200, zeroed.text
    after = float(re.search(r'id="m-after"><b>([-+0-9.]+)', zeroed.text).group(1))
    assert after != pytest.approx(run["result"].m, abs=1e-4)
    inline_error(client.get(f"/runs/{run['id']}/neuron",
                            params={"layer": 999, "neuron": 0}), "layer")
    inline_error(client.post(f"/runs/{run['id']}/intervene",
                             data={"layer": 0, "neuron": 0, "scale": "abc"}), "scale")


def test_exports_download_json_circuit_tracer_and_csv(client: TestClient, run: dict) -> None:
    base = f"/runs/{run['id']}/export"
    ours = client.get(f"{base}/json")
    assert "attachment" in ours.headers["content-disposition"]
    assert len(CircuitResult.model_validate_json(ours.text).nodes) == len(run["result"].nodes)
    ct = client.get(f"{base}/circuit-tracer.json").json()
    assert {"metadata", "nodes", "links"} <= set(ct)
    rows = list(csv.reader(io.StringIO(client.get(f"{base}/nodes.csv").text)))
    assert rows[0][0] == "layer" and len(rows) == 1 + len(run["result"].nodes)
    tau = middle_tau(run["result"])
    strict = list(csv.reader(io.StringIO(
        client.get(f"{base}/nodes.csv", params={"tau": tau}).text)))
    assert len(strict) < len(rows)
    assert client.get(f"{base}/pdf").status_code == 404


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"prompt": ""}, "prompt", "empty"),
    ({"answer_b": " aldosterone"}, "answer_b", "same"),
    ({"tau": "0"}, "tau", "greater than 0"),
    ({"tau": "2"}, "tau", "less than or equal to 1"),
    ({"answer_a": ""}, "answer_a", "needs answer A"),
    ({"max_nodes": "100000"}, "max_nodes", "over the limit"),
])
def test_bad_analyze_input_answers_inline(client: TestClient, change: dict, field: str,
                                          words: str) -> None:
    text = inline_error(client.post("/analyze/run", data={**FORM, **change}), field)
    assert words in text


def test_screening_page_highlights_targets_and_links_to_analyze(client: TestClient) -> None:
    assert client.get("/screen").status_code == 200
    # Make a target case from the model's own runner-up: wrong top-1, answer at rank 2.
    top = client.post("/api/v1/predict", json={"prompt": PROMPT, "top_k": 2}).json()["top"]
    second = top[1]["text"]
    items = [{"prompt": PROMPT, "answer": second},
             {"prompt": "The capital of France is", "answer": "Paris"}]
    r = client.post("/screen/run", data={"items_json": json.dumps(items), "top_k": "5"})
    assert r.status_code == 200, r.text
    assert r.text.count("<tr class=") == 2
    targets = r.text.count('<tr class="target">')
    api = client.post("/api/v1/screen", json={"items": items, "top_k": 5,
                                              "skip_filler": False}).json()
    assert targets == api["n_targets"] >= 1
    links = re.findall(r'class="open-analyze" href="([^"]+)"', r.text)
    assert len(links) == targets
    page = client.get(links[0].replace("&amp;", "&"))
    assert page.status_code == 200 and PROMPT in page.text
    upload = client.post("/screen/run", files={"upload": ("p.json", json.dumps(items))},
                         data={"top_k": "5"})
    assert upload.status_code == 200 and upload.text.count("<tr class=") == 2


@pytest.mark.parametrize(("data", "files", "field"), [
    ({"items_json": "{not json"}, None, "items_json"),
    ({"items_json": "[]"}, None, "items_json"),
    ({"items_json": '[{"prompt": "x"}]'}, None, "items_json"),
    ({"items_json": ""}, None, "items_json"),
    ({}, {"upload": ("p.json", b"\xff\xfe\x00garbage")}, "upload"),
    ({}, {"upload": ("p.json", b'{"rows": 3}')}, "upload"),
])
def test_malformed_screening_input_answers_inline(client: TestClient, data: dict,
                                                  files: dict | None, field: str) -> None:
    inline_error(client.post("/screen/run", data=data, files=files), field)


def test_concept_link_opens_a_concept_box_and_never_fills_the_flagged_words(
        client: TestClient, run: dict) -> None:
    """Issue 21.9: "Write texts on blood, vessel, brain" put the words into Topic words,
    the field whose mentions get flagged. The link opens a Concept box with the neuron,
    its words and exemplars; the flagged field keeps the words suggested from the prompt."""
    from html import unescape
    from urllib.parse import parse_qs, urlsplit

    from analysis.concepts import ConceptCandidate

    words = ["blood", "vessel", "brain", "capillary"]
    exemplars = ["the wall of a blood[ vessel] carries", "oxygen to the[ brain] through"]
    candidate = ConceptCandidate(
        layer=1, neuron=17, influence=-0.4, direct=-0.1, indirect_share=0.75, upstream=True,
        conceptual=True, reasons=["upstream"], score=0.3, exemplars=exemplars,
        topic_words=words)
    html = client.app.state.templates.get_template("_concepts.html").render(  # type: ignore[attr-defined]
        candidates=[candidate], index=None, run_id=run["id"], model="tiny-llama",
        answer_b=" renin")
    link = re.search(r'<a class="button small write-texts" href="([^"]+)"', html)
    assert link and "Write texts on blood, vessel, brain" in html
    href = unescape(link.group(1))
    url = urlsplit(href)
    query = parse_qs(url.query)
    assert url.path == "/jobs" and "topics" not in query
    assert query["run"] == [run["id"]] and query["concept"] == ["L1/N17"]
    assert query["words"] == [",".join(words)] and query["ex"] == exemplars

    page = client.get(href)
    assert page.status_code == 200, page.text
    box = page.text.split('id="concept-box"')[1].split("</section>")[0]
    assert "L1/N17" in box and f'href="/runs/{run["id"]}"' in box
    assert all(f'<span class="word">{w}</span>' in box for w in words)
    assert all(e in unescape(box) for e in exemplars)
    assert "not</b> topic words" in box
    topic = re.search(r'<input id="topic_words" name="topic_words" type="text" value="([^"]*)"',
                      page.text)
    assert topic is not None
    assert not any(w in topic.group(1).split(", ") for w in ("vessel", "brain", "capillary"))
    # Without a concept there is no box; a malformed concept name is refused.
    assert 'id="concept-box"' not in client.get(f"/jobs?run={run['id']}").text
    assert client.get("/jobs?concept=<script>").status_code == 422
