"""Apps on the tiny checkpoints with the settings a test needs (a fresh database each),
for the access, cross-site and model-queue tests, and a client holding one stored run
for the tests of a run's drivers, probe and drafts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from analysis.models import ModelSpec
from analysis.predict import Limits
from app.jobs.job_settings import JobSettings
from app.main import create_app
from app.settings import Settings

TOKEN = "s3cret-token-for-tests"


def tiny_settings(tiny_dirs: dict[str, Path], data_dir: Path, **extra: Any) -> Settings:
    return Settings(
        jobs=JobSettings(start_worker=False),  # queued jobs stay queued: no training
        data_dir=data_dir, include_embedded=False, default_model="tiny-llama",
        models=[ModelSpec(name=f"tiny-{a}", source="local", path=p, device="cpu")
                for a, p in tiny_dirs.items()],
        limits=Limits(max_prompt_tokens=40, max_batch_size=4, max_top_k=20), **extra)


def tiny_client(tiny_dirs: dict[str, Path], data_dir: Path, base_url: str = "http://testserver",
                **extra: Any) -> TestClient:
    """Use as a context manager (the lifespan loads the tiny default model)."""
    return TestClient(create_app(tiny_settings(tiny_dirs, data_dir, **extra)),
                      base_url=base_url, raise_server_exceptions=False)


SEED = "The primary hormone involved in the regulation of blood pressure and volume is"


@contextmanager
def client_with_run(tiny_dirs: dict[str, Path], data_dir: Path,
                    **circuit: Any) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """A client on the tiny default model and the stored run of the seed prompt
    (aldosterone vs renin) with the circuit settings given; yields (client, its answer)."""
    with tiny_client(tiny_dirs, data_dir) as client:
        r = client.post("/api/v1/attribute", json={
            "prompt": SEED, "answer_a": " aldosterone", "answer_b": " renin", **circuit})
        assert r.status_code == 200, r.text
        yield client, r.json()
