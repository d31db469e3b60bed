"""Estimates before a run and the size refusal, through the app's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from analysis.analyze import CircuitLimits
from analysis.models import ModelSpec
from analysis.predict import Limits
from app.jobs.job_settings import JobSettings
from app.main import create_app
from app.settings import Settings
from tests.unit.test_api import api_error

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
BODY = {"prompt": PROMPT, "answer_a": " aldosterone", "answer_b": " renin", "tau": 0.02,
        "method": "grad_x_act", "max_nodes": 10}


def _client(tiny_dirs: dict[str, Path], data: Path, pairs: int) -> TestClient:
    settings = Settings(
        jobs=JobSettings(start_worker=False), data_dir=data, include_embedded=False,
        default_model="tiny-llama",
        models=[ModelSpec(name="tiny-llama", source="local", path=tiny_dirs["llama"],
                          device="cpu")],
        # The page also predicts the chat formats, which are longer than the prompt.
        limits=Limits(max_prompt_tokens=200, max_batch_size=4, max_top_k=20),
        circuit_limits=CircuitLimits(max_prompt_tokens=40, max_edge_pairs=pairs))
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("estimate-data")


@pytest.fixture(scope="module")
def roomy(tiny_dirs: dict[str, Path], data: Path) -> Iterator[TestClient]:
    with _client(tiny_dirs, data, 1_000_000) as c:
        yield c


def test_estimate_answers_before_running(roomy: TestClient) -> None:
    est = roomy.post("/api/v1/estimate", json=BODY).json()
    assert est["nodes"] == 10 and est["edge_pairs"] == 100 and est["device"] == "cpu"
    assert 5 < est["tokens"] <= 40 and est["total_s"] > 0 and est["memory_mib"] > 0
    wider = roomy.post("/api/v1/estimate", json={**BODY, "max_nodes": 20}).json()
    assert wider["edges_s"] == pytest.approx(4 * est["edges_s"])
    run = roomy.post("/api/v1/attribute", json=BODY).json()
    assert run["estimate"] == est  # the same estimate comes with the run


def test_over_the_edge_limit_is_413_but_a_stored_run_is_returned(
        roomy: TestClient, tiny_dirs: dict[str, Path], data: Path) -> None:
    first = roomy.post("/api/v1/attribute", json=BODY).json()
    with _client(tiny_dirs, data, 50) as tight:  # same store, a tighter limit
        again = tight.post("/api/v1/attribute", json=BODY)
        assert again.status_code == 200, again.text
        assert again.json()["cached"] is True and again.json()["run_id"] == first["run_id"]
        err = api_error(tight.post("/api/v1/attribute", json={**BODY, "use_cache": False}),
                        413)
        assert "max_edge_pairs=50" in err["message"] and err["field"] == "max_nodes"
        err = api_error(tight.post("/api/v1/estimate", json=BODY), 413)
        assert "max_edge_pairs=50" in err["message"]
        ok = tight.post("/api/v1/estimate", json={**BODY, "edges": False})
        assert ok.status_code == 200 and ok.json()["edge_pairs"] == 0
        long = api_error(tight.post("/api/v1/estimate", json={**BODY, "prompt": PROMPT * 5}),
                         413)
        assert "max_prompt_tokens" in long["message"]
        schema = tight.get("/openapi.json").json()
        for path in ("/api/v1/attribute", "/api/v1/estimate"):
            text = schema["paths"][path]["post"]["responses"]["413"]["description"]
            assert "max_edge_pairs=50" in text and "max_prompt_tokens=40" in text


def test_analyze_page_shows_the_estimate_or_the_refusal(
        roomy: TestClient, tiny_dirs: dict[str, Path], data: Path) -> None:
    form = {"prompt": PROMPT, "answer_a": " aldosterone", "answer_b": " renin",
            "max_nodes": "10", "top_k": "5"}
    page = roomy.post("/analyze/predict", data=form)
    assert page.status_code == 200, page.text
    assert 'id="estimate"' in page.text and "edge pairs" in page.text
    with _client(tiny_dirs, data, 50) as tight:
        page = tight.post("/analyze/predict", data=form)
        assert page.status_code == 200, page.text
        assert "would be refused" in page.text and "max_edge_pairs=50" in page.text
