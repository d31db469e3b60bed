"""The job queue the app talks to: one interface, two backends.

* :class:`LocalBackend` (default) - worker processes next to the server, one per visible
  GPU (each pinned to its GPU with ``CUDA_VISIBLE_DEVICES``), one on a CPU machine. A
  supervisor thread notices a worker that died (OOM kill, kill -9), marks its job
  interrupted and starts a new worker, so the queue goes on with the next job.
* :class:`app.jobs.ray_backend.RayBackend` - each job is a Ray task with one GPU (none on
  a CPU cluster), submitted by a dispatcher thread in the server; the task writes its
  progress into the same database.

Either way the database is the queue: ``submit`` only inserts a row, so nothing queued is
lost when a process dies, and :meth:`JobQueue.start` first marks interrupted the jobs a
dead worker held (``mark_interrupted_on_start``).

Lifespan::

    queue = JobQueue.from_settings(settings, sessions)
    queue.start()          # on startup (returns at once; workers warm up in the background)
    ...
    queue.stop()           # on shutdown: running jobs end *interrupted*, re-queueable
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from analysis.correction.config import TrainingConfig, validate_caps
from analysis.errors import InputError
from analysis.models import ModelSpec
from app.jobs.backend import Backend, BackendContext
from app.jobs.job_settings import JobSettings
from app.jobs.local_backend import LocalBackend
from app.jobs.runner import log_file, resolve_base, sessions_for
from app.store.jobs import ACTIVE, TERMINAL, JobNotFound, JobStore, MetricRow
from app.store.tables import Job

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger("circuitlab.jobs")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def target_key(base_model: str, prompt: str, answer_a: str, answer_b: str) -> str:
    """Groups every correction attempt on one target case (the Experiments page): the base
    model, the prompt and the contrast. The prompt's formatting (chat template, system
    prompt) is a setting of an experiment, not part of the case, so it is left out."""
    raw = json.dumps([base_model, prompt, answer_a, answer_b], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def config_target_key(cfg: TrainingConfig) -> str | None:
    if cfg.target is None or cfg.base_model is None:
        return None
    t = cfg.target
    return target_key(cfg.base_model, t.prompt, t.answer_a, t.answer_b)


class JobQueue:
    """Submit, watch, cancel, re-queue and delete correction jobs."""

    def __init__(self, *, db_url: str, cache_dir: Path, data_dir: Path,
                 specs: list[ModelSpec], settings: JobSettings | None = None,
                 sessions: sessionmaker[Session] | None = None) -> None:
        self.db_url = db_url
        self.cache_dir = Path(cache_dir)
        self.data_dir = Path(data_dir)
        self.specs = list(specs)
        self.settings = settings or JobSettings()
        self.sessions = sessions or sessions_for(db_url)
        self.store = JobStore(self.sessions)
        self.backend: Backend = self._make_backend()
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        self.wake = threading.Event()  # set by submit: dispatch now, not at the next poll

    @classmethod
    def from_settings(cls, settings: Settings,
                      sessions: sessionmaker[Session] | None = None) -> JobQueue:
        return cls(db_url=settings.db_url(), cache_dir=settings.cache_dir,
                   data_dir=settings.data_dir, specs=settings.all_models(),
                   settings=settings.jobs, sessions=sessions)

    def _make_backend(self) -> Backend:
        ctx = BackendContext(db_url=self.db_url, cache_dir=self.cache_dir,
                             data_dir=self.data_dir, specs=self.specs,
                             settings=self.settings, store=self.store)
        if self.settings.backend == "ray":
            from app.jobs.ray_backend import RayBackend

            return RayBackend(ctx)
        return LocalBackend(ctx)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> list[str]:
        """Mark orphaned jobs interrupted, then start the backend and its monitor.
        Returns the ids marked interrupted."""
        marked = self.store.mark_interrupted_on_start(self.settings.stale_after_s)
        if marked:
            log.warning("marked %d job(s) interrupted: %s", len(marked), ", ".join(marked))
        if self.settings.start_worker:
            self._stopping.clear()
            self.backend.start()
            self._monitor = threading.Thread(target=self._watch, name="jobs-monitor",
                                             daemon=True)
            self._monitor.start()
        return marked

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the backend; a job in progress ends interrupted (re-queueable)."""
        self._stopping.set()
        self.wake.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        if self.settings.start_worker:
            self.backend.stop(timeout)

    def _watch(self) -> None:
        last_sweep = 0.0
        while not self._stopping.is_set():
            try:
                self.backend.poll()
                if time.monotonic() - last_sweep > self.settings.heartbeat_s:
                    last_sweep = time.monotonic()
                    self.store.mark_interrupted_on_start(self.settings.stale_after_s)
            except Exception:
                log.exception("job monitor")
            self.wake.wait(self.settings.poll_s)
            self.wake.clear()

    # -- the interface the pages and the API use -----------------------------------------

    def submit(self, cfg: TrainingConfig) -> str:
        """Queue a correction; checks the operator's caps and the base model first."""
        if cfg.base_model is None:
            raise InputError("choose the base model to correct", field="base_model")
        validate_caps(cfg, self.settings.caps)
        resolve_base(cfg.base_model, self.specs, self.sessions, self.cache_dir)
        job = self.store.create(name=cfg.name, base_model=cfg.base_model,
                                config=cfg.model_dump(mode="json"),
                                target_key=config_target_key(cfg))
        self.wake.set()
        return job.id

    def submit_index(self, model: str, name: str, config: dict[str, Any]) -> str:
        """Queue an exemplar-index build of ``model`` (app/jobs/index_job.py)."""
        resolve_base(model, self.specs, self.sessions, self.cache_dir)
        job = self.store.create(name=name, base_model=model, config=config, kind="index")
        self.wake.set()
        return job.id

    def get(self, job_id: str) -> Job:
        return self.store.require(job_id)

    def list(self, *, target_key: str | None = None, states: list[str] | None = None,
             base_model: str | None = None, kind: str | None = "correction",
             limit: int = 200) -> list[Job]:
        """Corrections by default: the Jobs and Experiments pages list those; index builds
        are listed with their indexes."""
        return self.store.list(target_key=target_key, states=states, base_model=base_model,
                               kind=kind, limit=limit)

    def metrics(self, job_id: str, after_step: int | None = None) -> list[MetricRow]:
        self.store.require(job_id)
        return self.store.metrics(job_id, after_step)

    def cancel(self, job_id: str) -> Job:
        """Queued -> cancelled at once; running/evaluating -> stops at its next step."""
        job = self.store.request_cancel(job_id)
        if job.state in ACTIVE:
            self.backend.nudge_cancel(job)
        return job

    def requeue(self, job_id: str) -> str:
        """A failed, cancelled or interrupted job queued again as a new job (the old one
        keeps its log and metrics); returns the new job's id."""
        new = self.store.requeue(job_id)
        self.wake.set()
        return new.id

    def delete(self, job_id: str) -> None:
        """Delete a job (not while running) with its metrics and log."""
        self.store.delete(job_id, self.data_dir)

    def log_path(self, job_id: str) -> Path:
        return log_file(self.data_dir, job_id)

    def log_tail(self, job_id: str, n_lines: int = 200) -> list[str]:
        """The last lines of the job's log (empty before the job started)."""
        self.store.require(job_id)
        path = self.log_path(job_id)
        if not path.is_file():
            return []
        with path.open(encoding="utf-8", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=max(0, n_lines))]

    def wait(self, job_id: str, states: tuple[str, ...] = TERMINAL,
             timeout: float = 600.0, every_s: float = 0.2) -> Job:
        """Block until the job reaches one of ``states`` (CLI, tests)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout:g} s")
            time.sleep(every_s)

    def status(self) -> dict[str, Any]:
        return {"backend": self.backend.name, "running": self._monitor is not None,
                "counts": self.store.counts(), **self.backend.describe()}


# -- the local backend -----------------------------------------------------------------------


__all__ = ["JobNotFound", "JobQueue", "config_target_key", "target_key"]
