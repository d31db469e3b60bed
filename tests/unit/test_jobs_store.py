"""The job store on SQLite and on the real PostgreSQL server: the state machine, atomic
claims under concurrent workers, cancel, re-queue, delete, crash recovery, the 0002
migration, and what the queue checks before it accepts a job."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

import app.store.tables
from analysis.correction.config import CorrectionTarget, TrainingCaps, TrainingConfig
from analysis.errors import LimitExceeded, UnknownModel
from analysis.models import ModelSpec
from app.jobs import JobQueue, JobSettings, target_key
from app.jobs.runner import reserve_variant_name
from app.store.jobs import (
    CANCELLED,
    EVALUATING,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobNotFound,
    JobStateError,
    JobStore,
    now,
)
from app.store.tables import Job, JobMetric, Variant, init_db, make_engine
from tests.unit.test_db import _pg_url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        yield from _pg_url()


@pytest.fixture
def store(db_url: str) -> JobStore:
    return JobStore(init_db(db_url))


def _new(store: JobStore, name: str = "fix", **kw: object) -> Job:
    return store.create(name=name, base_model="tiny", config={"name": name}, **kw)  # type: ignore[arg-type]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_state_machine_allows_only_legal_transitions(store: JobStore) -> None:
    job = _new(store)
    assert job.state == QUEUED and job.attempt == 1 and not job.cancel_requested
    with pytest.raises(JobStateError, match="queued; it cannot become evaluating"):
        store.transition(job.id, EVALUATING)
    claimed = store.claim_next("w1", pid=123, host="h")
    assert claimed is not None and claimed.id == job.id
    assert (claimed.state, claimed.worker, claimed.worker_pid, claimed.worker_host) == (
        RUNNING, "w1", 123, "h")
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    with pytest.raises(JobStateError):
        store.transition(job.id, SUCCEEDED)  # running -> succeeded skips the evaluation
    store.transition(job.id, EVALUATING)
    done = store.transition(job.id, SUCCEEDED, evaluation={"ok": True})
    assert done.state == SUCCEEDED and done.finished_at is not None
    assert done.evaluation == {"ok": True}
    for to in (RUNNING, FAILED, CANCELLED, INTERRUPTED):
        with pytest.raises(JobStateError, match="succeeded"):
            store.transition(job.id, to)
    with pytest.raises(JobNotFound):
        store.transition("nope", RUNNING)
    assert store.claim_next("w1") is None  # nothing left
    assert not store.heartbeat(job.id)  # a finished job is held by nobody


def test_progress_and_metrics_are_appended_per_step(store: JobStore) -> None:
    job = _new(store)
    store.claim_next("w")
    for step in (1, 2, 3):
        loss = float("nan") if step == 2 else 5.0 - step  # a diverged step stays storable
        store.report_step(job.id, {"phase": "training", "step": step, "loss": loss},
                          step=step, loss=loss, learning_rate=1e-4, epoch=step / 3,
                          elapsed_s=0.1 * step)
    got = store.require(job.id)
    assert got.progress == {"phase": "training", "step": 3, "loss": 2.0}
    rows = store.metrics(job.id)
    assert [r.step for r in rows] == [1, 2, 3]
    assert rows[0].loss == 4.0 and rows[2].epoch == pytest.approx(1.0)
    assert [r.step for r in store.metrics(job.id, after_step=2)] == [3]
    assert store.set_progress(job.id, {"phase": "x", "bad": float("inf")})
    assert store.require(job.id).progress == {"phase": "x", "bad": None}
    # Once the job is no longer held (e.g. a sweep marked it interrupted), a late step
    # from its worker changes nothing and tells the worker to stop.
    assert store.interrupt(job.id, "test")
    assert not store.report_step(job.id, {"step": 4}, step=4, loss=1.0, learning_rate=0.1)
    assert not store.set_progress(job.id, {"step": 4})
    assert store.require(job.id).progress.get("step") != 4
    assert [r.step for r in store.metrics(job.id)] == [1, 2, 3]


def _claim_all(url: str, workers: int) -> Counter[str]:
    """`workers` threads, each with its own engine (its own connections, as separate
    processes would have), claiming until the queue is empty."""
    claimed: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            mine = JobStore(sessionmaker(make_engine(url), expire_on_commit=False))
            start.wait()
            while (job := mine.claim_next(f"w{i}", pid=i)) is not None:
                with lock:
                    claimed[job.id] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return claimed


def test_concurrent_workers_claim_each_job_exactly_once(store: JobStore, db_url: str) -> None:
    ids = [_new(store, f"j{i}").id for i in range(24)]
    claimed = _claim_all(db_url, workers=4)
    assert sorted(claimed) == sorted(ids)
    assert set(claimed.values()) == {1}, "a job was claimed twice"
    rows = store.list(limit=100)
    assert {j.state for j in rows} == {RUNNING}
    # Each row names the worker whose claim won, and that worker counted it.
    assert all(j.worker is not None and j.worker_pid is not None for j in rows)


def test_claims_follow_submission_order(store: JobStore) -> None:
    first, second = _new(store, "a"), _new(store, "b")
    assert store.claim_next("w").id == first.id  # type: ignore[union-attr]
    assert store.claim_next("w").id == second.id  # type: ignore[union-attr]


def test_cancel_queued_is_immediate_and_running_sets_the_flag(store: JobStore) -> None:
    queued = _new(store, "q")
    running = _new(store, "r")
    assert store.claim_next("w").id == queued.id  # type: ignore[union-attr]
    # `queued` is now running; cancel it and the one still queued.
    store.transition(queued.id, FAILED)  # make room: the first one failed
    cancelled = store.request_cancel(running.id)
    assert cancelled.state == CANCELLED and cancelled.finished_at is not None
    again = _new(store, "r2")
    store.claim_next("w")
    flagged = store.request_cancel(again.id)
    assert flagged.state == RUNNING and flagged.cancel_requested
    assert store.cancel_requested(again.id)
    with pytest.raises(JobStateError, match="only queued or running"):
        store.request_cancel(queued.id)  # failed
    with pytest.raises(JobNotFound):
        store.request_cancel("missing")


def test_requeue_makes_a_new_attempt_and_keeps_the_old_record(store: JobStore) -> None:
    job = _new(store, "fix", target_key="k1")
    store.claim_next("w")
    store.report_step(job.id, {"step": 1}, step=1, loss=3.0, learning_rate=1e-5)
    with pytest.raises(JobStateError, match="only failed, cancelled, interrupted"):
        store.requeue(job.id)  # still running
    store.transition(job.id, FAILED, error="boom")
    new = store.requeue(job.id)
    assert new.id != job.id and new.state == QUEUED
    assert (new.attempt, new.parent_id, new.name, new.config, new.target_key) == (
        2, job.id, "fix", {"name": "fix"}, "k1")
    old = store.require(job.id)
    assert old.state == FAILED and old.error == "boom" and old.progress == {"step": 1}
    assert len(store.metrics(job.id)) == 1 and store.metrics(new.id) == []
    assert [c.id for c in store.children(job.id)] == [new.id]
    third = store.requeue(job.id)  # the same failed job can be re-queued again
    assert third.attempt == 2 and third.parent_id == job.id
    assert store.claim_next("w").id == new.id  # type: ignore[union-attr]


def test_delete_refuses_running_jobs_and_removes_metrics_and_log(store: JobStore,
                                                                 tmp_path: Path) -> None:
    job = _new(store)
    store.claim_next("w")
    store.report_step(job.id, {"step": 1}, step=1, loss=1.0, learning_rate=1e-5)
    with pytest.raises(JobStateError, match="cancel it before deleting"):
        store.delete(job.id)
    store.transition(job.id, EVALUATING)
    store.transition(job.id, SUCCEEDED)
    with store.sessions.begin() as s:
        s.add(Variant(name="fix", kind="full", base="tiny", path="variants/fix",
                      job_id=job.id, meta={}))
    log_dir = tmp_path / "jobs" / job.id
    log_dir.mkdir(parents=True)
    (log_dir / "job.log").write_text("step 1\n")
    store.delete(job.id, tmp_path)
    assert store.get(job.id) is None and not log_dir.exists()
    with store.sessions() as s:
        assert s.scalar(select(JobMetric).where(JobMetric.job_id == job.id)) is None
        kept = s.get(Variant, "fix")
        assert kept is not None and kept.job_id is None  # the variant outlives its job
    with pytest.raises(JobNotFound):
        store.delete(job.id)


def test_mark_interrupted_on_start(store: JobStore) -> None:
    host = "this-host"
    dead = _new(store, "dead")
    store.claim_next("w-dead", pid=_dead_pid(), host=host)
    store.report_step(dead.id, {"phase": "training", "step": 7}, step=7, loss=2.0,
                      learning_rate=1e-5)
    alive = _new(store, "alive")
    store.claim_next("w-alive", pid=os.getpid(), host=host)  # this process: alive, fresh
    stale = _new(store, "stale")
    store.claim_next("w-stale", pid=os.getpid(), host=host)
    store.update_fields(stale.id, heartbeat_at=now() - timedelta(seconds=600))
    remote = _new(store, "remote")
    store.claim_next("w-remote", pid=_dead_pid(), host="another-host")  # fresh heartbeat
    queued = _new(store, "queued")

    marked = store.mark_interrupted_on_start(stale_after_s=60, host=host)

    assert sorted(marked) == sorted([dead.id, stale.id])
    got = store.require(dead.id)
    assert got.state == INTERRUPTED and got.finished_at is not None
    assert "at step 7" in (got.error or "") and "worker process is gone" in (got.error or "")
    assert "re-queue" in (got.error or "")
    assert got.progress["step"] == 7 and got.progress["phase"] == INTERRUPTED
    assert len(store.metrics(dead.id)) == 1  # partial state kept
    assert "no heartbeat" in (store.require(stale.id).error or "")
    assert store.require(alive.id).state == RUNNING
    assert store.require(remote.id).state == RUNNING  # other host: only staleness counts
    assert store.require(queued.id).state == QUEUED  # nothing queued is lost
    assert store.mark_interrupted_on_start(stale_after_s=60, host=host) == []
    # The interrupted job is re-queueable.
    assert store.requeue(dead.id).state == QUEUED


def test_interrupt_process_jobs(store: JobStore) -> None:
    job = _new(store)
    store.claim_next("w", pid=4242, host="h")
    assert store.interrupt_process_jobs(4241, "x", host="h") == []
    assert store.interrupt_process_jobs(4242, "exited with code -9", host="h") == [job.id]
    assert "exited with code -9" in (store.require(job.id).error or "")


def test_listing_by_target_and_state(store: JobStore) -> None:
    key = target_key("tiny", "The primary hormone ... is", " aldosterone", " renin")
    assert key == target_key("tiny", "The primary hormone ... is", " aldosterone", " renin")
    assert key != target_key("tiny", "The primary hormone ... is", " renin", " aldosterone")
    a = _new(store, "a", target_key=key)
    _new(store, "b", target_key="other")
    c = _new(store, "c", target_key=key)
    assert [j.id for j in store.list(target_key=key)] == [c.id, a.id]  # newest first
    store.claim_next("w")
    assert [j.id for j in store.list(states=[RUNNING])] == [a.id]
    assert store.counts() == {QUEUED: 2, RUNNING: 1}


def test_variant_names_are_reserved_uniquely(store: JobStore, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "variants" / "fix-2").mkdir(parents=True)  # files of an earlier variant
    with store.sessions.begin() as s:
        s.add(Variant(name="fix", kind="full", base="tiny", path="variants/fix", meta={}))
    jobs = [_new(store, f"j{i}") for i in range(3)]
    names = [reserve_variant_name(store, j.id, "fix", cache, taken={"fix-3"}) for j in jobs]
    assert names == ["fix-4", "fix-5", "fix-6"]
    assert store.require(jobs[0].id).result_path == "variants/fix-4"
    assert reserve_variant_name(store, _new(store).id, "my fix!", cache, set()) == "my-fix"


def test_migration_0002_upgrades_an_existing_database(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    migrations = Path(app.store.tables.__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(migrations))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    command.upgrade(cfg, "0001")
    engine = make_engine(db_url)
    with engine.begin() as c:  # a job written by the previous version
        c.execute(text(
            "insert into jobs (id, name, state, created_at, base_model, config, progress, "
            "evaluation) values ('old', 'n', 'failed', CURRENT_TIMESTAMP, 'm', '{}', '{}', "
            "'{}')"))
    sessions = init_db(db_url)  # upgrades to head
    cols = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert {"target_key", "cancel_requested", "worker_pid", "worker_host", "attempt",
            "parent_id", "variant", "result_path"} <= cols
    metric_cols = {c["name"] for c in inspect(engine).get_columns("job_metrics")}
    assert {"epoch", "elapsed_s", "grad_norm"} <= metric_cols
    old = JobStore(sessions).require("old")
    assert old.cancel_requested is False and old.attempt == 1
    assert JobStore(sessions).requeue("old").attempt == 2
    command.downgrade(cfg, "0001")  # and back, on both databases
    assert "variant" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    engine.dispose()


# -- what the queue accepts ------------------------------------------------------------------


def _queue(sessions: sessionmaker[Session], db_url: str, tmp_path: Path,
           caps: TrainingCaps | None = None) -> JobQueue:
    spec = ModelSpec(name="tiny", source="local", path=tmp_path, device="cpu")
    return JobQueue(db_url=db_url, cache_dir=tmp_path / "cache", data_dir=tmp_path / "data",
                    specs=[spec], sessions=sessions,
                    settings=JobSettings(start_worker=False, caps=caps or TrainingCaps()))


def _cfg(**kw: object) -> TrainingConfig:
    fields: dict[str, object] = dict(
        name="fix", base_model="tiny", texts=["Aldosterone is a hormone."],
        target=CorrectionTarget(prompt="The primary hormone is", answer_a=" aldosterone",
                                answer_b=" renin"))
    fields.update(kw)
    return TrainingConfig.model_validate(fields)


def test_submit_checks_caps_and_the_base_model(db_url: str, tmp_path: Path) -> None:
    queue = _queue(init_db(db_url), db_url, tmp_path,
                   TrainingCaps(max_texts=2, max_epochs=5))
    job_id = queue.submit(_cfg())
    job = queue.get(job_id)
    assert job.state == QUEUED and job.base_model == "tiny" and job.name == "fix"
    assert job.target_key == target_key("tiny", "The primary hormone is", " aldosterone",
                                        " renin")
    assert TrainingConfig.model_validate(job.config) == _cfg()
    with pytest.raises(LimitExceeded, match="max_epochs=5") as err:
        queue.submit(_cfg(epochs=6))
    assert err.value.field == "epochs"
    with pytest.raises(LimitExceeded, match="max_texts=2"):
        queue.submit(_cfg(texts=["a", "b", "c"]))
    with pytest.raises(UnknownModel, match="not registered") as unknown:
        queue.submit(_cfg(base_model="nope"))
    assert unknown.value.field == "base_model"
    assert [j.id for j in queue.list()] == [job_id]  # refused jobs left no row
    assert queue.log_tail(job_id) == []
    queue.cancel(job_id)
    assert queue.get(job_id).state == CANCELLED
    new_id = queue.requeue(job_id)
    assert queue.get(new_id).state == QUEUED
    queue.delete(job_id)
    with pytest.raises(JobNotFound):
        queue.get(job_id)
