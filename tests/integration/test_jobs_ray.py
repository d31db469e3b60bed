"""The Ray backend on a local Ray instance started here: a job submitted through the same
JobQueue interface runs as a Ray task, writes its progress into the app's database, and
ends with the same loss curve as the local worker; cancel reaches a running Ray task
through the database flag."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.jobs import JobQueue, JobSettings
from app.store.jobs import CANCELLED, INTERRUPTED
from tests.integration.test_jobs_worker import (
    TEXTS,
    Env,
    check_succeeded,
    make_cfg,
    step_of,
    variant_row,
    wait_until,
)
from tests.waiting import PATIENCE_S

# Trains with TRL, or starts worker processes or Ray: the integration tier.
pytestmark = pytest.mark.integration

try:
    import ray
except ImportError as exc:  # the `ray` extra is not installed
    pytest.skip(f"Ray is not installed ({exc}); install circuitlab[ray]",
                allow_module_level=True)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    # One local instance for the module (~5 s to start here); the backend joins it.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def env(tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("ray-jobs")
    return Env(root, f"sqlite:///{root / 'c.db'}", tiny_dirs["llama"])


@pytest.fixture(scope="module")
def ray_queue(env: Env, ray_instance: None) -> Iterator[JobQueue]:
    # A tiny model's step takes ~10 ms in a Ray task: read the cancel flag every 0.05 s
    # (a real model's step takes seconds; the default is 1 s).
    queue = env.queue(JobSettings(backend="ray", heartbeat_s=0.5, poll_s=0.2,
                                  cancel_poll_s=0.05, stale_after_s=30))
    queue.start()
    yield queue
    queue.stop()


def test_a_ray_job_reaches_the_local_workers_result(
        ray_queue: JobQueue, tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    cfg = make_cfg("on-ray", epochs=2)
    on_ray = check_succeeded(ray_queue, ray_queue.submit(cfg), cfg)
    assert on_ray.worker is not None and on_ray.worker.startswith("ray@")
    assert ray_queue.status()["backend"] == "ray"

    # The same job on the local backend (its own database: the Ray dispatcher would take
    # any job queued in the first one).
    local = Env(tmp_path, f"sqlite:///{tmp_path / 'local.db'}", tiny_dirs["llama"]).queue()
    local.start()
    try:
        local_cfg = cfg.model_copy(update={"name": "on-local"})
        on_local = check_succeeded(local, local.submit(local_cfg), local_cfg)
    finally:
        local.stop()
    assert on_local.worker is not None and on_local.worker.startswith("local@")
    ray_losses = [m.loss for m in ray_queue.metrics(on_ray.id)]
    local_losses = [m.loss for m in local.metrics(on_local.id)]
    assert ray_losses == pytest.approx(local_losses, rel=1e-4)
    assert on_ray.progress["loss"] == pytest.approx(on_local.progress["loss"], rel=1e-4)
    ray_target = on_ray.evaluation["items"][0]["after"]["expected"]["prob"]
    local_target = on_local.evaluation["items"][0]["after"]["expected"]["prob"]
    assert ray_target == pytest.approx(local_target, rel=1e-3)
    assert variant_row(ray_queue, on_ray.id) is not None


def test_cancel_reaches_a_running_ray_task(ray_queue: JobQueue) -> None:
    # 16 texts x 50 epochs = 800 steps: a few seconds even at a Ray task's ~100 steps/s.
    cfg = make_cfg("ray-cancel", epochs=50, texts=TEXTS * 4)
    job_id = ray_queue.submit(cfg)
    wait_until(lambda: step_of(ray_queue, job_id) >= 3, "the Ray job to reach step 3")
    ray_queue.cancel(job_id)
    cancelled_at = datetime.now(UTC)
    job = ray_queue.wait(job_id, timeout=PATIENCE_S)
    assert job.state == CANCELLED, job.error
    assert job.progress["step"] < job.progress["max_steps"]
    # Steps here are ~10 ms, so "a few steps" is measured in time: the task stopped within
    # one flag read (cancel_poll_s = 0.05 s) plus the database's latency.
    last = max(m.at for m in ray_queue.metrics(job_id))
    last = last if last.tzinfo else last.replace(tzinfo=UTC)
    assert (last - cancelled_at).total_seconds() < 0.5
    assert variant_row(ray_queue, job_id) is None
    # The task returned and the dispatcher let go of it: the next job can be submitted.
    wait_until(lambda: not ray_queue.backend.inflight,  # type: ignore[attr-defined]
               "the dispatcher to reap the task")


def test_stopping_the_queue_interrupts_a_running_ray_task(ray_queue: JobQueue) -> None:
    # 32 texts x 50 epochs: the task is interrupted a few steps in, so the length only
    # decides how much slack there is (with 16 texts a loaded machine once saw it finish
    # between the step-3 poll and the stop).
    job_id = ray_queue.submit(make_cfg("ray-stop", epochs=50, texts=TEXTS * 8))
    wait_until(lambda: step_of(ray_queue, job_id) >= 3, "the Ray job to reach step 3")
    ray_queue.stop(timeout=30)  # the server shutting down
    job = ray_queue.get(job_id)
    assert job.state == INTERRUPTED, (job.state, job.error)
    assert "re-queue" in (job.error or "") and job.progress["step"] >= 3
    assert variant_row(ray_queue, job_id) is None
