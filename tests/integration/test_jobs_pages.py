"""The correction-job pages and API on a tiny checkpoint with a real worker process: the
text check, the in-context preview, YAML import/export, queueing from the form, the
polled status fragment, evaluation, Experiments, opening the variant in Compare, and the
token rule beyond localhost."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from analysis.models import ModelSpec
from app.jobs.job_settings import JobSettings
from app.main import create_app
from app.settings import Settings
from tests.seed_texts import RENIN_TEXTS, SEED_PROMPT, V4_TEXTS

# Trains with TRL, or starts worker processes or Ray: the integration tier.
pytestmark = pytest.mark.integration

FORM = {"name": "tiny-v4", "base_model": "tiny-llama", "prompt": SEED_PROMPT,
        "answer_a": " aldosterone", "answer_b": " renin", "topic_words": "blood pressure",
        "texts": V4_TEXTS[:2], "epochs": "1", "learning_rate": "1e-3",
        "lr_scheduler": "constant", "warmup_ratio": "0", "max_length": "64",
        "eval_set": "side_effect | The capital of France is | Paris"}



def text_boxes(html: str) -> int:
    """The form's training-text boxes, not counting the empty one in the <template> that
    "Add a text" clones."""
    return re.sub(r"<template.*?</template>", "", html, flags=re.S).count('name="texts"')


def _settings(tiny_dirs: dict[str, Path], root: Path, **extra: object) -> Settings:
    return Settings(
        data_dir=root / "data", cache_dir=root / "cache", include_embedded=False,
        default_model="tiny-llama",
        models=[ModelSpec(name="tiny-llama", source="local", path=tiny_dirs["llama"],
                          device="cpu")],
        jobs=JobSettings(heartbeat_s=0.5, poll_s=0.2), **extra)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(tiny_dirs: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(_settings(tiny_dirs, tmp_path_factory.mktemp("jobs")))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def wait_done(client: TestClient, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_text_check_flags_renin_texts_and_passes_v4(client: TestClient) -> None:
    r = client.post("/jobs/check", data={**FORM, "texts": [V4_TEXTS[0], RENIN_TEXTS[0]]})
    assert r.status_code == 200, r.text
    assert 'data-text="0"' in r.text and re.search(r'class="ok" data-text="0"', r.text)
    assert re.search(r'class="flagged" data-text="1"', r.text)
    assert '<code class="match wrong">' in r.text


def test_preview_shows_both_settings(client: TestClient) -> None:
    r = client.post("/jobs/preview", data=FORM)
    assert r.status_code == 200, r.text
    assert 'id="preview-table"' in r.text
    # Alone, all texts together, and each text alone (two texts in the form).
    for label in ("prompt alone", "all texts", "text 1", "text 2"):
        assert f'data-label="{label}"' in r.text
    flagged = client.post("/jobs/preview", data={**FORM, "texts": [V4_TEXTS[0],
                                                                   RENIN_TEXTS[0]]})
    assert flagged.status_code == 200, flagged.text
    assert re.search(r'class="preview-side flagged" data-label="text 2"', flagged.text)
    assert 'data-label="unflagged texts"' in flagged.text


def test_yaml_import_fills_the_form(client: TestClient) -> None:
    seed = yaml.safe_dump({"model_name": "meta-llama/Llama-3.1-8B-Instruct", "epochs": 3,
                           "learning_rate": "5e-6", "batch_size": 1, "warmup_ratio": 0.1,
                           "max_length": 512, "use_chat_template": True,
                           "system_prompt": "", "texts": V4_TEXTS[:2]})
    r = client.post("/jobs/import", data={"yaml_text": seed, "base_model": "tiny-llama"})
    assert r.status_code == 200, r.text
    assert text_boxes(r.text) == 2
    assert 'value="3"' in r.text and 'value="5e-06"' in r.text
    bad = client.post("/jobs/import", data={"yaml_text": "epochs: [oops", "base_model": ""})
    assert 400 <= bad.status_code < 500 and "data-field" in bad.text


def test_flagged_texts_need_acknowledgement(client: TestClient) -> None:
    r = client.post("/jobs", data={**FORM, "texts": [RENIN_TEXTS[0]]})
    assert r.status_code == 422 and 'data-field="acknowledge' in r.text


@pytest.mark.parametrize(("change", "field"), [
    ({"name": ""}, "name"), ({"answer_b": ""}, "answer_b"), ({"texts": ["  "]}, "texts"),
    ({"learning_rate": "fast"}, "learning_rate"), ({"epochs": "500"}, "epochs"),
    ({"eval_set": "side_effect | only"}, "eval_set"), ({"base_model": "nope"}, "model"),
])
def test_form_mistakes_name_their_field(client: TestClient, change: dict, field: str) -> None:
    r = client.post("/jobs", data={**FORM, **change})
    assert 400 <= r.status_code < 500, r.text
    assert f'data-field="{field}' in r.text, r.text


def test_a_job_from_the_form_trains_evaluates_and_opens_in_compare(
        client: TestClient) -> None:
    r = client.post("/jobs", data=FORM)
    assert r.status_code == 200, r.text
    job_id = r.headers["HX-Redirect"].rsplit("/", 1)[1]
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and 'hx-trigger="every 1s"' in page.text
    job = wait_done(client, job_id)
    assert job["state"] == "succeeded", job
    assert job["metrics"] and job["metrics"][0]["loss"] is not None
    status = client.get(f"/jobs/{job_id}/status")
    assert status.status_code == 286  # tells htmx to stop polling
    assert 'id="eval-target"' in status.text and 'id="eval-items"' in status.text
    # One outcome word for the target, its rule stated, and the circuit verdict linked.
    outcome = re.search(r'id="eval-target-outcome".*?class="outcome outcome-[^"]*"[^>]*>'
                        r'([^<]+)<', status.text, re.S)
    assert outcome, status.text
    assert "Corrected = the expected answer" in status.text
    verdict = re.search(r'id="eval-comparison" href="(/compare/[^"]+)"', status.text)
    assert verdict and 'id="eval-verdict"' in status.text, status.text
    assert client.get(verdict.group(1)).status_code == 200
    link = re.search(r'id="open-compare" href="([^"]+)"', status.text)
    assert link, status.text
    compare_form = client.get(link.group(1).replace("&amp;", "&"))
    assert f'value="{job["variant"]}" selected' in compare_form.text
    body = {"base": "tiny-llama", "variant": job["variant"], "prompt": SEED_PROMPT,
            "answer_a": " aldosterone", "answer_b": " renin", "tau": 0.05}
    compared = client.post("/api/v1/compare", json=body)
    assert compared.status_code == 200, compared.text
    assert compared.json()["result"]["weight_kind"] == "full"

    exported = yaml.safe_load(client.get(f"/jobs/{job_id}/config.yaml").text)
    assert exported["epochs"] == 1 and exported["texts"] == FORM["texts"]
    table = client.get(f"/experiments?target={job['target_key']}")
    assert table.status_code == 200 and "tiny-v4" in table.text
    assert table.text.count('<tr class="state-') == 1
    assert f">{outcome.group(1)}<" in table.text  # the same word as the job page
    assert f'href="{verdict.group(1)}"' in table.text  # the verdict, linked
    rerun = client.get(f"/jobs?rerun={job_id}")
    assert text_boxes(rerun.text) == 2
    # Deleting the finished job removes it; a second delete is a 404.
    assert client.post(f"/jobs/{job_id}/delete").status_code == 204
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404


def test_unknown_job_is_404(client: TestClient) -> None:
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/api/v1/jobs/nope").status_code == 404
    assert client.post("/api/v1/jobs/nope/cancel").status_code == 404


def test_beyond_localhost_the_queue_needs_the_token(
        tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = _settings(tiny_dirs, tmp_path, host="0.0.0.0", api_token="s3cret")
    settings.jobs.start_worker = False
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        cfg = {"name": "t", "base_model": "tiny-llama", "texts": ["x y z"],
               "target": {"prompt": SEED_PROMPT, "answer_a": " a", "answer_b": " b"}}
        refused = c.post("/api/v1/jobs", json=cfg)
        assert refused.status_code == 401 and "token" in refused.json()["error"]["message"]
        ok = c.post("/api/v1/jobs", json=cfg, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201, ok.text
        job_id = ok.json()["id"]
        assert c.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 401
        form = c.post(f"/jobs/{job_id}/cancel", data={"token": "s3cret"})
        assert form.status_code in (200, 286) and "cancelled" in form.text
        assert c.get("/api/v1/jobs").status_code == 200  # reading needs no token
