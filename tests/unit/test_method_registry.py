"""Adding an attribution method is one registration (issue 25.2): after ``register``, the
settings accept it, the schema lists it, ``attribute`` dispatches to it, the forms offer
it and the cache key tells it apart; nothing else is edited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from analysis.attribution import CircuitSettings
from analysis.attribution.core import METHODS, AttributionMethod, attribute, register

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


@pytest.fixture
def plain_again() -> Iterator[AttributionMethod]:
    """A second name for ordinary activation x gradient, registered as a new method is."""
    method = register(AttributionMethod(
        name="plain_again", label="activation × gradient, again",
        summary="the same numbers as grad_x_act, under another name",
        run=METHODS["grad_x_act"].run))
    yield method
    del METHODS[method.name]


def test_a_registered_method_runs_everywhere(plain_again, tiny_lms, tiny_dirs,  # type: ignore[no-untyped-def]
                                             tmp_path) -> None:
    settings = CircuitSettings(method="plain_again")
    assert "plain_again" in CircuitSettings.model_json_schema()["properties"]["method"]["enum"]
    assert settings.normalized().method == "plain_again"
    lm = tiny_lms["llama"]
    ids = lm.tokenizer(PROMPT)["input_ids"]
    again = attribute(lm.model, lm.tokenizer, ids, 5, 7, method="plain_again")
    plain = attribute(lm.model, lm.tokenizer, ids, 5, 7, method="grad_x_act")
    assert torch.equal(again.influence, plain.influence) and again.method == "plain_again"

    from analysis.models import ModelSpec
    from app.jobs.job_settings import JobSettings
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(jobs=JobSettings(start_worker=False), data_dir=tmp_path,
                              cache_dir=tiny_dirs["llama"].parent, include_embedded=False,
                              default_model="tiny",
                              models=[ModelSpec(name="tiny", source="local",
                                                path=tiny_dirs["llama"], device="cpu")]))
    with TestClient(app) as client:
        page = client.get("/").text
        assert '<option value="plain_again"  title="the same numbers as grad_x_act' in page
        r = client.post("/api/v1/attribute", json={
            "prompt": PROMPT, "answer_a": " aldosterone", "answer_b": " renin",
            "method": "plain_again", "max_nodes": 10})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["params"]["method"] == "plain_again"


def test_an_unknown_method_is_refused_with_the_list() -> None:
    with pytest.raises(ValueError, match="choose one of relp, grad_x_act, integrated_gradients"):
        CircuitSettings(method="saliency")


def test_settings_only_another_method_reads_do_not_split_the_cache() -> None:
    assert CircuitSettings(method="relp", ig_steps=5).normalized() == CircuitSettings()
    assert CircuitSettings(method="integrated_gradients",
                           ig_steps=5).normalized().ig_steps == 5
