"""The API contract's small promises (issue 16): 405 keeps Allow (every method the path
serves), NaN/Infinity are named as such, a malformed body is "not valid JSON" (no byte
offset as a field), echoed values are cut short, and the OpenAPI documents each route's
errors in the one error shape."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def test_405_keeps_allow_with_every_method_of_the_path(client: TestClient) -> None:
    r = client.request("PATCH", "/api/v1/jobs/some-id")
    assert r.status_code == 405
    assert r.headers["Allow"] == "DELETE, GET"
    assert "DELETE or GET" in r.json()["error"]["message"]
    # A fixed path is its own resource, though /jobs/{job_id} would match it too.
    assert client.get("/api/v1/jobs/check").status_code != 405
    assert client.request("OPTIONS", "/api/v1/jobs/check").headers["Allow"] == "POST"


@pytest.mark.parametrize(("literal", "name"), [("NaN", "NaN"), ("Infinity", "Infinity"),
                                               ("-Infinity", "-Infinity")])
def test_non_finite_numbers_are_named(client: TestClient, literal: str, name: str) -> None:
    body = '{"prompt": "Hi", "answer_a": " a", "answer_b": " b", "tau": ' + literal + "}"
    r = client.post("/api/v1/attribute", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "tau" and name in error["message"]
    assert "≤" not in error["message"] and "less than" not in error["message"]


def test_a_non_finite_query_number_is_named(client: TestClient) -> None:
    r = client.get("/api/v1/graph", params={"run_id": "x", "tau": "nan"})
    assert r.status_code == 422 and "NaN" in r.json()["error"]["message"]


def test_malformed_json_names_the_body_not_a_byte_offset(client: TestClient) -> None:
    r = client.post("/api/v1/predict", content=b'{"prompt": "Hi",,}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "body" and "not valid JSON" in error["message"]
    assert not any(d["field"].isdigit() for d in error["details"])


def test_echoed_values_are_cut_short(client: TestClient) -> None:
    long_id = "a" * 5000
    for url in (f"/api/v1/runs/{long_id}", f"/api/v1/jobs/{long_id}", f"/nothing/{long_id}"):
        r = client.get(url)
        assert r.status_code == 404
        message = r.json()["error"]["message"] if url.startswith("/api/") else r.text
        assert long_id not in message and len(message) < 1000, url
        assert "5,000 characters" in message or "…" in message


def test_a_booleans_is_not_a_number_nor_a_number_a_boolean(client: TestClient) -> None:
    r = client.post("/api/v1/predict", json={"prompt": "Hi", "top_k": True})
    assert r.status_code == 422 and "boolean" in r.json()["error"]["message"]
    r = client.post("/api/v1/predict", json={"prompt": "Hi", "chat_template": 0})
    assert r.status_code == 422 and "true or false" in r.json()["error"]["message"]


def test_the_openapi_documents_each_routes_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    predict = spec["paths"]["/api/v1/predict"]["post"]["responses"]
    for code in ("401", "403", "404", "413", "415", "422", "429", "503"):
        assert predict[code]["content"]["application/json"]["schema"] == error_ref, code
    assert predict["429"]["headers"]["Retry-After"]["required"] is True
    models = spec["paths"]["/api/v1/models"]["get"]["responses"]
    assert "401" not in models and "429" not in models  # reading is open
    neuron = spec["paths"]["/api/v1/neurons/{layer}/{neuron}"]["get"]["responses"]
    assert "401" in neuron  # a GET that computes on the model
    assert "HTTPValidationError" not in str(spec["paths"])  # FastAPI's shape, never sent
    prompt = spec["components"]["schemas"]["PredictRequest"]["properties"]["prompt"]
    assert prompt["pattern"] == r"\S"  # what the app enforces, in the schema
