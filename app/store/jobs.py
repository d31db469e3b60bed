"""Durable job records: states, claiming, progress, cancel, re-queue, crash recovery.

Everything a job goes through is a row in the app's database (SQLite or PostgreSQL), so
the web process, the local worker process and Ray tasks on other machines all see the
same queue and nothing lives only in one process's memory.

State machine::

    queued ──claim──> running ──> evaluating ──> succeeded
      │                  │             │
      └─> cancelled <────┴─────────────┤      (cancel: queued at once, else via a flag)
                         ├──> failed <─┤
                         └─> interrupted <┘  (worker died or was stopped)

Every transition is one conditional UPDATE (``WHERE state IN (allowed sources)``), so two
processes racing on the same job cannot both win: the loser gets :class:`JobStateError`.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from analysis.errors import CircuitlabError
from app.store.tables import Job, JobMetric

QUEUED, RUNNING, EVALUATING = "queued", "running", "evaluating"
SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = "succeeded", "failed", "cancelled", "interrupted"
STATES = (QUEUED, RUNNING, EVALUATING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
ACTIVE = (RUNNING, EVALUATING)  # a worker holds the job
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
REQUEUEABLE = (FAILED, CANCELLED, INTERRUPTED)

# target state -> the states it may be entered from
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    RUNNING: (QUEUED,),
    EVALUATING: (RUNNING,),
    SUCCEEDED: (EVALUATING,),  # an index build (kind 'index') ends from running: see transition
    FAILED: (QUEUED, RUNNING, EVALUATING),  # queued: the job could not even start
    CANCELLED: (QUEUED, RUNNING, EVALUATING),
    INTERRUPTED: (RUNNING, EVALUATING),
}


class JobNotFound(CircuitlabError, LookupError):
    status = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}", field="job_id")


class JobStateError(CircuitlabError):
    """The job is not in a state that allows what was asked (an illegal transition)."""

    status = 409


def now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone=True columns; they were UTC.
    if t is not None and t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    return t


def json_safe(value: Any) -> Any:
    """NaN/inf -> None: PostgreSQL's JSON type refuses them (a diverged loss is NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


JSON_FIELDS = ("config", "progress", "evaluation")


def _safe_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: json_safe(v) if k in JSON_FIELDS else v for k, v in fields.items()}


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0): read its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class MetricRow:
    step: int
    loss: float | None
    learning_rate: float | None
    epoch: float | None
    elapsed_s: float | None
    grad_norm: float | None
    at: datetime


class JobStore:
    """Job rows and their metrics. Every method is one short transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @property
    def dialect(self) -> str:
        bind = self.sessions.kw["bind"]
        return str(bind.dialect.name)

    # -- reading -----------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self.sessions() as s:
            return s.get(Job, job_id)

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list(self, *, target_key: str | None = None, states: Iterable[str] | None = None,
             base_model: str | None = None, kind: str | None = None,
             limit: int = 200) -> list[Job]:
        """Jobs newest first, optionally those of one target case / in some states / of
        one kind ("correction" or "index"; None: every kind)."""
        q = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if kind is not None:
            q = q.where(Job.kind == kind)
        if target_key is not None:
            q = q.where(Job.target_key == target_key)
        if states is not None:
            q = q.where(Job.state.in_(list(states)))
        if base_model is not None:
            q = q.where(Job.base_model == base_model)
        with self.sessions() as s:
            return list(s.scalars(q))

    def children(self, job_id: str) -> list[Job]:
        """Re-queued attempts of a job, oldest first."""
        with self.sessions() as s:
            return list(s.scalars(select(Job).where(Job.parent_id == job_id)
                                  .order_by(Job.created_at)))

    def metrics(self, job_id: str, after_step: int | None = None,
                limit: int = 100_000) -> list[MetricRow]:
        """Per-step rows in step order; ``after_step`` lets a poller fetch only new ones."""
        q = select(JobMetric).where(JobMetric.job_id == job_id)
        if after_step is not None:
            q = q.where(JobMetric.step > after_step)
        q = q.order_by(JobMetric.step, JobMetric.id).limit(limit)
        with self.sessions() as s:
            return [MetricRow(m.step, m.loss, m.learning_rate, m.epoch, m.elapsed_s,
                              m.grad_norm, m.at) for m in s.scalars(q)]

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state))
            return {state: n for state, n in rows}

    def cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as s:
            flag = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
            return bool(flag)

    # -- writing -----------------------------------------------------------------------

    def create(self, *, name: str, base_model: str, config: dict[str, Any],
               target_key: str | None = None, parent_id: str | None = None,
               attempt: int = 1, kind: str = "correction") -> Job:
        job = Job(name=name, base_model=base_model, config=json_safe(config), kind=kind,
                  target_key=target_key, parent_id=parent_id, attempt=attempt,
                  state=QUEUED, progress={}, evaluation={}, cancel_requested=False)
        with self.sessions.begin() as s:
            s.add(job)
        return job

    def claim_next(self, worker: str, pid: int | None = None,
                   host: str | None = None) -> Job | None:
        """Atomically take the oldest queued job (queued -> running), or None.

        PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent workers take
        different jobs without waiting on each other. SQLite (one writer at a time): pick a
        candidate, then a conditional UPDATE that only succeeds while it is still queued;
        a worker that lost the race tries the next candidate.
        """
        host = host or this_host()
        fields = dict(state=RUNNING, started_at=now(), heartbeat_at=now(), worker=worker,
                      worker_pid=pid, worker_host=host, finished_at=None, error=None)
        oldest = (select(Job.id).where(Job.state == QUEUED)
                  .order_by(Job.created_at, Job.id).limit(1))
        for _ in range(50):
            with self.sessions.begin() as s:
                if self.dialect == "postgresql":
                    job_id = s.scalar(oldest.with_for_update(skip_locked=True))
                else:
                    job_id = s.scalar(oldest)
                if job_id is None:
                    return None
                won = s.execute(update(Job).where(Job.id == job_id, Job.state == QUEUED)
                                .values(**fields)).rowcount
            if won:
                return self.get(job_id)
        return None  # extreme contention: let the caller poll again

    def claim(self, job_id: str, worker: str, pid: int | None = None,
              host: str | None = None) -> Job:
        """Take one specific queued job (queued -> running)."""
        return self.transition(job_id, RUNNING, started_at=now(), heartbeat_at=now(),
                               worker=worker, worker_pid=pid, worker_host=host or this_host())

    def transition(self, job_id: str, to: str, **fields: Any) -> Job:
        """Move a job to state ``to`` if that is legal from its current state."""
        if to not in ALLOWED_FROM:
            raise JobStateError(f"no transition into {to!r}", field="state")
        values = dict(_safe_fields(fields), state=to)
        if to in TERMINAL:
            values.setdefault("finished_at", now())
        with self.sessions.begin() as s:
            legal = Job.state.in_(ALLOWED_FROM[to])
            if to == SUCCEEDED:  # an index build has no evaluation phase
                legal = or_(legal, and_(Job.kind == "index", Job.state == RUNNING))
            n = s.execute(update(Job).where(Job.id == job_id, legal)
                          .values(**values)).rowcount
            if n == 0:
                current = s.scalar(select(Job.state).where(Job.id == job_id))
                if current is None:
                    raise JobNotFound(job_id)
                raise JobStateError(f"job {job_id} is {current}; it cannot become {to}",
                                    field="state")
        return self.require(job_id)

    def update_fields(self, job_id: str, **fields: Any) -> None:
        """Set columns without a state change (result path, evaluation, log path...)."""
        with self.sessions.begin() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**_safe_fields(fields)))

    def heartbeat(self, job_id: str) -> bool:
        """Refresh the liveness stamp; False when the job is no longer held by a worker
        (cancelled at once, or marked interrupted by a sweep), so the worker can stop."""
        with self.sessions.begin() as s:
            n = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE))
                          .values(heartbeat_at=now())).rowcount
        return n == 1

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> bool:
        """Replace a held job's progress snapshot; False if no worker holds it any more."""
        with self.sessions.begin() as s:
            n = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE))
                          .values(progress=json_safe(progress), heartbeat_at=now())).rowcount
        return n == 1

    def report_step(self, job_id: str, progress: dict[str, Any], *, step: int,
                    loss: float | None, learning_rate: float | None,
                    epoch: float | None = None, elapsed_s: float | None = None,
                    grad_norm: float | None = None) -> bool:
        """One training step: the job's progress snapshot, a metric row and a heartbeat,
        in one transaction (a poller never sees a metric without its progress). False,
        and nothing written, when the job is no longer held (ended by a sweep, deleted):
        an interrupted job's record stays as it was when it was marked."""
        with self.sessions.begin() as s:
            n = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE))
                          .values(progress=json_safe(progress), heartbeat_at=now())).rowcount
            if n == 1:
                s.add(JobMetric(job_id=job_id, step=step, loss=loss,
                                learning_rate=learning_rate, epoch=epoch,
                                elapsed_s=elapsed_s, grad_norm=grad_norm))
        return n == 1

    def request_cancel(self, job_id: str) -> Job:
        """Cancel: a queued job becomes cancelled at once; a running or evaluating one
        gets the flag its worker polls (the worker then ends it as cancelled)."""
        with self.sessions.begin() as s:
            n = s.execute(update(Job).where(Job.id == job_id, Job.state == QUEUED)
                          .values(state=CANCELLED, cancel_requested=True,
                                  finished_at=now())).rowcount
            if n == 0:
                n = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE))
                              .values(cancel_requested=True)).rowcount
            if n == 0:
                current = s.scalar(select(Job.state).where(Job.id == job_id))
                if current is None:
                    raise JobNotFound(job_id)
                raise JobStateError(f"job {job_id} is {current}; only queued or running "
                                    "jobs can be cancelled", field="job_id")
        return self.require(job_id)

    def requeue(self, job_id: str) -> Job:
        """Queue a failed, cancelled or interrupted job again as a *new* job.

        A new row rather than a reset keeps the old attempt's log, progress, metrics and
        error exactly as they were; ``parent_id``/``attempt`` link the attempts.
        """
        old = self.require(job_id)
        if old.state not in REQUEUEABLE:
            raise JobStateError(f"job {job_id} is {old.state}; only "
                                f"{', '.join(REQUEUEABLE)} jobs can be re-queued",
                                field="job_id")
        return self.create(name=old.name, base_model=old.base_model, config=dict(old.config),
                           target_key=old.target_key, parent_id=old.id,
                           attempt=old.attempt + 1, kind=old.kind)

    def delete(self, job_id: str, data_dir: Path | None = None) -> None:
        """Delete a job that no worker holds, its metrics and (given ``data_dir``) its log
        directory. The variant it produced stays (its row's job_id becomes NULL)."""
        with self.sessions.begin() as s:
            state = s.scalar(select(Job.state).where(Job.id == job_id))
            if state is None:
                raise JobNotFound(job_id)
            if state in ACTIVE:
                raise JobStateError(f"job {job_id} is {state}; cancel it before deleting",
                                    field="job_id")
            # SQLite does not enforce ON DELETE unless asked per connection: do it here.
            from app.store.tables import Variant

            s.execute(update(Variant).where(Variant.job_id == job_id).values(job_id=None))
            s.execute(delete(JobMetric).where(JobMetric.job_id == job_id))
            n = s.execute(delete(Job).where(Job.id == job_id,
                                            Job.state.not_in(ACTIVE))).rowcount
            if n == 0:  # claimed between our read and the delete
                raise JobStateError(f"job {job_id} just started; cancel it before deleting",
                                    field="job_id")
        if data_dir is not None:
            shutil.rmtree(Path(data_dir) / "jobs" / job_id, ignore_errors=True)

    # -- crash recovery ----------------------------------------------------------------

    def interrupt(self, job_id: str, why: str) -> bool:
        """Mark one held job interrupted, keeping its progress, metrics and log; the error
        says where it stopped and why. False if it was not held (already ended)."""
        job = self.get(job_id)
        if job is None or job.state not in ACTIVE:
            return False
        step = (job.progress or {}).get("step")
        at = f" at step {step}" if step is not None else ""
        progress = dict(job.progress or {}, phase=INTERRUPTED)
        try:
            # The variant name it reserved is released: a re-queue may take it again.
            self.transition(job_id, INTERRUPTED, progress=progress, variant=None,
                            error=f"interrupted{at}: {why}; re-queue to run it again")
            return True
        except JobStateError:
            return False

    def mark_interrupted_on_start(self, stale_after_s: float,
                                  host: str | None = None) -> list[str]:
        """Jobs a worker held when it (or the server) died become interrupted.

        A running/evaluating job is orphaned when its worker process on this host no
        longer exists, or when its heartbeat is older than ``stale_after_s`` (a worker on
        another host, or a reused pid). Returns the ids marked.
        """
        host = host or this_host()
        cutoff = now() - timedelta(seconds=stale_after_s)
        marked = []
        for job in self.list(states=ACTIVE, limit=10_000):
            beat = _aware(job.heartbeat_at) or _aware(job.started_at)
            dead = (job.worker_host == host and job.worker_pid is not None
                    and not pid_alive(job.worker_pid))
            stale = beat is None or beat < cutoff
            if not (dead or stale):
                continue
            why = ("its worker process is gone" if dead
                   else f"no heartbeat for over {stale_after_s:g} s")
            if self.interrupt(job.id, why):
                marked.append(job.id)
        return marked

    def interrupt_process_jobs(self, pid: int, reason: str,
                               host: str | None = None) -> list[str]:
        """Mark interrupted every job held by process ``pid`` on ``host`` (it exited)."""
        host = host or this_host()
        marked = []
        for job in self.list(states=ACTIVE, limit=10_000):
            if job.worker_pid == pid and job.worker_host == host and self.interrupt(
                    job.id, reason):
                marked.append(job.id)
        return marked
