"""Bounded waiting for the model (issue 16): past the queue's depth a request is told to
retry (429 + Retry-After) instead of waiting unbounded, past the longest wait it gives up
(503 + Retry-After), and /api/v1/health reports the depth."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from analysis.errors import Busy
from analysis.models import ModelRegistry, ModelSpec
from app.services.model_manager import ModelManager
from app.settings import ModelQueueLimits
from tests.unit.access_apps import tiny_client

PREDICT = {"prompt": "The capital of France is"}


@contextmanager
def holding(manager: ModelManager, name: str = "tiny-llama") -> Iterator[None]:
    """A blocking work item occupies the model until the block ends."""
    started, release = threading.Event(), threading.Event()

    def work(_lm: object) -> None:
        started.set()
        release.wait(60)

    thread = threading.Thread(target=manager.run_sync, args=(name, work))
    thread.start()
    assert started.wait(60)
    try:
        yield
    finally:
        release.set()
        thread.join(60)


def test_the_request_past_the_depth_is_refused_at_once(tiny_dirs: dict[str, Path]) -> None:
    spec = ModelSpec(name="tiny-llama", source="local", path=tiny_dirs["llama"], device="cpu")
    manager = ModelManager(ModelRegistry([spec]), tiny_dirs["llama"].parent,
                           queue=ModelQueueLimits(max_depth=2, max_wait_s=60))
    manager.get_sync("tiny-llama")
    with holding(manager):
        waiting = threading.Thread(target=manager.run_sync, args=("tiny-llama", lambda lm: 1))
        waiting.start()
        for _ in range(1000):  # the second one has registered (it waits for the lock)
            if manager.queue_status()["depth"] == 2:
                break
            threading.Event().wait(0.01)
        assert manager.queue_status()["depth"] == 2
        with pytest.raises(Busy) as refused:
            manager.run_sync("tiny-llama", lambda lm: 1)
        assert refused.value.status == 429 and refused.value.retry_after >= 1
        assert "limit is 2" in refused.value.message
    waiting.join(60)
    assert manager.queue_status()["depth"] == 0
    assert manager.run_sync("tiny-llama", lambda lm: 7) == 7


def test_a_full_queue_answers_429_with_retry_after(tiny_dirs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    with tiny_client(tiny_dirs, tmp_path,
                     model_queue=ModelQueueLimits(max_depth=1, max_wait_s=60)) as c:
        manager = c.app.state.manager  # type: ignore[attr-defined]
        with holding(manager):
            assert c.get("/api/v1/health").json()["model_queue"]["depth"] == 1
            r = c.post("/api/v1/predict", json=PREDICT)
            assert r.status_code == 429
            assert int(r.headers["Retry-After"]) >= 1
            assert "busy" in r.json()["error"]["message"]
            page = c.post("/analyze/predict", data=PREDICT)  # the pages say it inline
            assert page.status_code == 429 and 'class="error"' in page.text
        assert c.get("/api/v1/health").json()["model_queue"]["depth"] == 0
        assert c.post("/api/v1/predict", json=PREDICT).status_code == 200


def test_waiting_past_the_longest_wait_answers_503(tiny_dirs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    limits = ModelQueueLimits(max_depth=5, max_wait_s=0.2)
    with (tiny_client(tiny_dirs, tmp_path, model_queue=limits) as c,
          holding(c.app.state.manager)):  # type: ignore[attr-defined]
        r = c.post("/api/v1/predict", json=PREDICT)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert "stayed busy" in r.json()["error"]["message"]
