"""A TestClient on tiny local checkpoints, shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from analysis.models import ModelSpec
from analysis.predict import Limits
from app.jobs.job_settings import JobSettings
from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="session")
def client(tiny_dirs, tmp_path_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = Settings(
        jobs=JobSettings(start_worker=False),  # these tests queue no jobs
        data_dir=tmp_path_factory.mktemp("data"),
        include_embedded=False,
        default_model="tiny-llama",
        models=[ModelSpec(name=f"tiny-{a}", source="local", path=p, device="cpu")
                for a, p in tiny_dirs.items()],
        limits=Limits(max_prompt_tokens=40, max_batch_size=4, max_top_k=20),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c
