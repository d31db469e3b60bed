"""Bodies over their route class's cap are refused before parsing, with the app's error
shape and the limit named (the server's memory under a 100 MB body is measured in
tests/integration/test_body_limit_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


def test_a_declared_oversize_json_body_is_refused_with_the_limit_named(client: TestClient) -> None:
    body = b'{"prompt": "' + b"x" * 9_000_000 + b'"}'
    r = client.post("/api/v1/predict", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["status"] == 413 and error["field"] == "body"
    assert "8 MB" in error["message"] and "CIRCUITLAB_BODY_LIMITS__API" in error["message"]


def test_a_streamed_body_is_cut_off_at_the_cap(client: TestClient) -> None:
    # No Content-Length: the body is counted as it arrives.
    r = client.post("/api/v1/predict", content=_chunks(20_000_000),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "8 MB" in r.json()["error"]["message"]


def test_a_page_form_over_its_cap_gets_the_inline_error(client: TestClient) -> None:
    r = client.post("/analyze/predict", data={"prompt": "x" * 2_500_000})
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("text/html")
    assert 'class="error"' in r.text and "2 MB" in r.text


def test_bodies_under_the_cap_pass(client: TestClient) -> None:
    r = client.post("/api/v1/predict", json={"model": "tiny-llama", "prompt": "hi " * 10})
    assert r.status_code == 200, r.text
