"""The JSON API and the Analyze page on a tiny local model: shapes, limits, and that a
user's mistake is a clear 4xx after which the server keeps serving."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def api_error(resp, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["status"] == status and err["message"]
    assert "Traceback" not in resp.text
    return err  # type: ignore[no-any-return]


def test_health_reports_the_resident_model(client: TestClient) -> None:
    h = client.get("/api/v1/health").json()
    assert h["status"] == "ok" and h["model_loaded"] is True
    assert h["device"] == "cpu" and h["dtype"] == "float32"
    assert h["default_model"] == "tiny-llama"


def test_models_lists_registered_names_without_paths(client: TestClient) -> None:
    body = client.get("/api/v1/models").json()
    names = [m["name"] for m in body["models"]]
    assert names == ["tiny-llama", "tiny-gemma3", "tiny-qwen3"]
    assert all("path" not in m for m in body["models"])
    assert body["models"][0]["loaded"] is True


def test_predict(client: TestClient) -> None:
    r = client.post("/api/v1/predict", json={"prompt": "The capital of France is",
                                             "answers": [" Paris", "Paris"], "top_k": 3})
    assert r.status_code == 200, r.text
    p = r.json()
    assert len(p["top"]) == 3 and p["top"][0]["rank"] == 1
    assert p["prompt"]["text"] == "The capital of France is"
    assert [t["id"] for t in p["prompt"]["tokens"]] == p["prompt"]["input_ids"]
    assert p["answers"][1]["answer"]["note"]  # no leading space is pointed out


def test_predict_on_another_registered_model(client: TestClient) -> None:
    r = client.post("/api/v1/predict", json={"model": "tiny-gemma3", "prompt": "hi",
                                             "chat_template": True, "answer_prefix": " A:"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny-gemma3"
    assert r.json()["prompt"]["text"].endswith("<|assistant|> A:")


def test_screen(client: TestClient) -> None:
    items = [{"prompt": "The capital of France is", "answer": "Paris"},
             {"prompt": "A common side effect is", "answer": "constipation"}]
    r = client.post("/api/v1/screen", json={"items": items, "top_k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["rows"]) == 2
    assert body["n_targets"] == sum(row["target"] for row in body["rows"])


@pytest.mark.parametrize(
    ("path", "body", "status", "field", "words"),
    [
        ("/api/v1/predict", {"prompt": ""}, 422, "prompt", "empty"),
        ("/api/v1/predict", {"prompt": "blood pressure " * 40}, 413, "prompt",
         "max_prompt_tokens"),
        ("/api/v1/predict", {"prompt": "x", "top_k": 21}, 413, "top_k", "max_top_k=20"),
        ("/api/v1/predict", {"prompt": "x", "top_k": 0}, 422, "top_k", "greater than"),
        ("/api/v1/predict", {"prompt": "x", "model": "gpt-9"}, 404, "model",
         "registered models"),
        ("/api/v1/predict", {"prompt": "x", "model": "../../etc"}, 422, "model", "pattern"),
        ("/api/v1/predict", {"prompt": "x", "answers": [""]}, 422, "answers[0]", "empty"),
        ("/api/v1/predict", {"prompt": "x", "chat_template": True, "model": "tiny-qwen3",
                             "bogus": 1}, 422, "bogus", "not permitted"),
        ("/api/v1/predict", {"prompt": "x" * 5000}, 422, "prompt", "at most"),
        ("/api/v1/screen", {"items": []}, 422, "items", "at least 1"),
        ("/api/v1/screen", {"items": [{"prompt": "p"}]}, 422, "items.0.answer", "required"),
        ("/api/v1/screen", {"items": [{"prompt": "p", "answer": "a"}] * 5}, 413, "items",
         "max_batch_size=4"),
    ],
)
def test_bad_input_is_a_clear_4xx(client: TestClient, path: str, body: dict, status: int,
                                  field: str, words: str) -> None:
    err = api_error(client.post(path, json=body), status)
    assert err["field"] == field
    assert words in err["message"]
    # ...and the server keeps serving.
    assert client.post("/api/v1/predict", json={"prompt": "hi"}).status_code == 200


def test_malformed_json_body(client: TestClient) -> None:
    r = client.post("/api/v1/screen", content=b"[{not json",
                    headers={"content-type": "application/json"})
    err = api_error(r, 422)
    assert "JSON" in err["message"]


def test_unknown_route_is_json_404(client: TestClient) -> None:
    err = api_error(client.get("/api/v1/nothing"), 404)
    assert "/api/v1/nothing" in err["message"]


def test_openapi_lists_the_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in ["/api/v1/health", "/api/v1/models", "/api/v1/predict", "/api/v1/screen"]:
        assert p in paths
    assert client.get("/docs").status_code == 200


def test_analyze_page_and_fragment(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert '/vendor/htmx.min.js' in page.text and 'hx-post="/analyze/predict"' in page.text
    assert "cdn" not in page.text.lower()
    frag = client.post("/analyze/predict", data={"model": "tiny-llama",
                                                 "prompt": "The capital of France is",
                                                 "answer_a": " Paris", "answer_b": " the",
                                                 "top_k": "5"})
    assert frag.status_code == 200
    assert 'id="topk"' in frag.text and "<html" not in frag.text
    assert "m = logit(A)" in frag.text
    # Whole-answer probabilities and both formats side by side come with every prediction.
    assert "whole-answer P" in frag.text and 'id="formats"' in frag.text
    assert frag.text.count('class="format-col') == 2
    # The page carries the one-click format switch, declared once in analysis.prompts.
    assert 'data-prompt-format="seeds_chat"' in page.text


def test_a_blank_system_prompt_in_a_form_is_an_empty_system_turn(client: TestClient) -> None:
    """The seeds' format: form parsing drops blank fields, which must not mean 'no system
    turn' (SmolLM2's template would then insert its default persona)."""
    frag = client.post("/analyze/predict", data={
        "model": "tiny-llama", "prompt": "The capital of France is", "chat_template": "true",
        "system_prompt": "", "answer_prefix": " Answer:"})
    assert frag.status_code == 200, frag.text
    assert "&lt;|system|&gt;&lt;|end|&gt;&lt;|user|&gt;The capital" in frag.text
    assert "Seeds&#39; chat format" in frag.text


def test_page_errors_are_html_fragments(client: TestClient) -> None:
    r = client.post("/analyze/predict", data={"model": "tiny-llama", "prompt": "  "})
    assert r.status_code == 422
    assert 'class="error"' in r.text and 'data-field="prompt"' in r.text
    assert r.headers["content-type"].startswith("text/html")


def test_vendored_scripts_are_served(client: TestClient) -> None:
    for name, marker in [("htmx.min.js", b"htmx"), ("plotly.min.js", b"plotly")]:
        r = client.get(f"/vendor/{name}")
        assert r.status_code == 200 and marker in r.content[:5000].lower()
        assert len(r.content) > 10_000
    assert client.get("/vendor/evil.js").status_code == 404
