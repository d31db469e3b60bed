"""The body of one job, the same for every backend: an index build, once taken and
logged, is handed to :mod:`app.jobs.index_job`; a correction goes through the steps
below.

:func:`run_job` runs in a worker process (the local backend's, or a Ray task on any node)
and talks to the world only through the app's database and the file system:

1. takes the job (queued -> running, or adopts a job its dispatcher already claimed);
2. appends to ``<data_dir>/jobs/<id>/job.log`` every phase, every step and, on failure,
   the traceback;
3. trains (``analysis.correction.train``) with each optimizer step written as the job's
   progress + a ``job_metrics`` row + a heartbeat, and the cancel flag read from the
   database at most every ``cancel_poll_s`` (sooner when the worker was nudged);
4. evaluates (state ``evaluating``; :mod:`app.jobs.job_evaluation`): one typed
   ``JobEvaluation`` - the target and the evaluation set by the evaluation core (scores,
   top-1, outcome), greedy generations checked for degeneration, and the circuit verdict
   on the target, its comparison stored as a comparison run;
5. registers the variant (``variants`` row, files under ``<cache_dir>/variants/<name>/``)
   and ends succeeded, in one transaction.

Cancelled -> ``cancelled`` (no variant, its files removed); the worker being stopped ->
``interrupted`` (re-queue runs it again); any other exception -> ``failed`` with the
message. Progress, metrics and the log stay in every case.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import threading
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from analysis.errors import CircuitlabError, InputError, UnknownModel
from analysis.models import NAME_PATTERN, ModelSpec
from app.jobs.job_evaluation import evaluate_variant
from app.store.jobs import (
    ACTIVE,
    CANCELLED,
    EVALUATING,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobStateError,
    JobStore,
    json_safe,
    this_host,
)
from app.store.tables import Job, Variant, make_engine

if TYPE_CHECKING:  # the job's evaluation type; analysis.correction loads torch
    from analysis.correction.evaluate import JobEvaluation

VARIANTS_DIR = "variants"

_SESSIONS: dict[str, sessionmaker[Session]] = {}


def sessions_for(db_url: str) -> sessionmaker[Session]:
    """One engine per database per process (a worker runs many jobs; Ray reuses workers)."""
    if db_url not in _SESSIONS:
        _SESSIONS[db_url] = sessionmaker(make_engine(db_url), expire_on_commit=False)
    return _SESSIONS[db_url]


def log_file(data_dir: Path, job_id: str) -> Path:
    return Path(data_dir) / "jobs" / job_id / "job.log"


class JobLog:
    """Timestamped lines appended to the job's log file, flushed as they are written so
    the page (and a post-mortem after a kill -9) sees everything up to the last line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: TextIO = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            for line in str(message).splitlines() or [""]:
                self._fh.write(f"{stamp} {line}\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class StopRequested(Exception):
    """Raised at an evaluation checkpoint when the job must stop (cancel or shutdown)."""


class _Control:
    """Why the job should stop, if it should: the user's cancel (a DB flag, read at most
    every ``poll_s`` unless nudged), the worker's shutdown, or the job lost to a sweep."""

    def __init__(self, store: JobStore, job_id: str, poll_s: float,
                 stop_event: threading.Event | None,
                 cancel_hint: threading.Event | None) -> None:
        self.store, self.job_id, self.poll_s = store, job_id, poll_s
        self.stop_event, self.cancel_hint = stop_event, cancel_hint
        self.reason: str | None = None  # "cancel" | "shutdown" | "lost"
        self._last_read = 0.0

    def check(self) -> bool:
        if self.reason is not None:
            return True
        if self.stop_event is not None and self.stop_event.is_set():
            self.reason = "shutdown"
            return True
        nudged = self.cancel_hint is not None and self.cancel_hint.is_set()
        if nudged or time.monotonic() - self._last_read >= self.poll_s:
            if nudged:
                assert self.cancel_hint is not None
                self.cancel_hint.clear()
            self._last_read = time.monotonic()
            job = self.store.get(self.job_id)
            if job is None or job.state not in ACTIVE:
                self.reason = "lost"
            elif job.cancel_requested:
                self.reason = "cancel"
        return self.reason is not None

    def checkpoint(self) -> None:
        if self.check():
            raise StopRequested(self.reason)


class _Heartbeat(threading.Thread):
    """Says the job is alive while no step is being reported (loading, evaluating, a long
    step on a big model), so a sweep never mistakes a slow job for a dead one."""

    def __init__(self, store: JobStore, job_id: str, every_s: float,
                 control: _Control) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.store, self.job_id, self.every_s, self.control = store, job_id, every_s, control
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            try:
                if not self.store.heartbeat(self.job_id):
                    self.control.reason = self.control.reason or "lost"
            except Exception:  # a DB hiccup must not kill the job; the next beat retries
                pass


def resolve_base(name: str, specs: Sequence[ModelSpec], sessions: sessionmaker[Session],
                 cache_dir: Path) -> ModelSpec:
    """The spec to train from: a registered model, or a full variant a job made earlier."""
    for spec in specs:
        if spec.name == name:
            if spec.kind == "lora":
                raise InputError(f"{name!r} is a LoRA adapter; train from its base "
                                 f"{spec.base!r} or from a full variant", field="base_model")
            return spec
    with sessions() as s:
        row = s.get(Variant, name)
    if row is None:
        known = ", ".join(sorted(spec.name for spec in specs)) or "none"
        raise UnknownModel(f"base model {name!r} is not registered (registered: {known})",
                           field="base_model")
    if row.kind != "full":
        raise InputError(f"{name!r} is a LoRA adapter; train from its base {row.base!r} "
                         "or from a full variant", field="base_model")
    return ModelSpec(name=row.name, source="local", path=Path(cache_dir) / row.path,
                     kind="full", base=row.base)


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._") or "correction"
    return slug[:64]


def reserve_variant_name(store: JobStore, job_id: str, wanted: str, cache_dir: Path,
                         taken: set[str]) -> str:
    """A unique variant name from the job's name (``name``, ``name-2``, ...), reserved on
    the job row (unique column) so two jobs finishing together cannot pick the same one."""
    base = _slug(wanted)
    for n in range(1, 10_000):
        suffix = "" if n == 1 else f"-{n}"
        name = base[: 64 - len(suffix)] + suffix
        if not re.match(NAME_PATTERN, name) or name in taken:
            continue
        if (Path(cache_dir) / VARIANTS_DIR / name).exists():
            continue
        with store.sessions() as s:
            if s.get(Variant, name) is not None:
                continue
        try:
            store.update_fields(job_id, variant=name,
                                result_path=f"{VARIANTS_DIR}/{name}")
            return name
        except IntegrityError:  # another job holds it
            continue
    raise RuntimeError(f"no free variant name for {wanted!r}")


def _progress(phase: str, **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "updated_at": datetime.now(UTC).isoformat(), **extra}


def _step_progress(report: Any) -> dict[str, Any]:
    done, total = int(report.step), int(report.max_steps)
    rate = done / report.elapsed_s if report.elapsed_s > 0 else None
    eta = (total - done) / rate if rate else None
    return _progress("training", step=done, max_steps=total, epoch=round(report.epoch, 4),
                     loss=report.loss, learning_rate=report.learning_rate,
                     elapsed_s=round(report.elapsed_s, 3),
                     steps_per_s=round(rate, 4) if rate else None,
                     eta_s=round(eta, 1) if eta is not None else None,
                     fraction=round(done / total, 4) if total else None)


# -- evaluation ----------------------------------------------------------------------------


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


# -- the job -------------------------------------------------------------------------------


def _as_specs(registry_specs: Sequence[ModelSpec | dict[str, Any]]) -> list[ModelSpec]:
    return [s if isinstance(s, ModelSpec) else ModelSpec.model_validate(s)
            for s in registry_specs]


def _take(store: JobStore, job_id: str, worker: str) -> Job | None:
    """Hold the job in this process: claim it if queued, adopt it if a dispatcher (Ray)
    claimed it for us. None when there is nothing to run (cancelled meanwhile...)."""
    job = store.get(job_id)
    if job is None:
        return None
    if job.state == QUEUED:
        try:
            return store.claim(job_id, worker, os.getpid())
        except JobStateError:
            return None
    # Claimed by this very process (the local worker's claim_next), or by a dispatcher
    # that leaves the pid empty for the process that will run it (Ray).
    mine = job.worker_pid == os.getpid() and job.worker_host == this_host()
    if job.state == RUNNING and (job.worker_pid is None or mine):
        store.update_fields(job_id, worker=worker, worker_pid=os.getpid(),
                            worker_host=this_host())
        store.heartbeat(job_id)
        return store.get(job_id)
    return None


def run_job(job_id: str, db_url: str, cache_dir: Path | str, data_dir: Path | str,
            registry_specs: Sequence[ModelSpec | dict[str, Any]], *,
            worker: str | None = None, heartbeat_s: float = 5.0, cancel_poll_s: float = 1.0,
            stop_event: threading.Event | None = None,
            cancel_hint: threading.Event | None = None) -> str:
    """Run one job to a final state and return that state (see the module docstring).

    ``stop_event`` set = the worker is shutting down (the job ends interrupted);
    ``cancel_hint`` set = re-read the cancel flag now instead of waiting for the poll.
    Never raises for a job's own failure: that is recorded on the job.
    """
    from analysis.correction.config import TrainingConfig

    cache_dir, data_dir = Path(cache_dir), Path(data_dir)
    sessions = sessions_for(db_url)
    store = JobStore(sessions)
    worker = worker or f"{this_host()}:{os.getpid()}"
    job = _take(store, job_id, worker)
    if job is None:
        current = store.get(job_id)
        return current.state if current is not None else "missing"
    log = JobLog(log_file(data_dir, job_id))
    store.update_fields(job_id, log_path=str(log.path))
    control = _Control(store, job_id, cancel_poll_s, stop_event, cancel_hint)
    beat = _Heartbeat(store, job_id, heartbeat_s, control)
    beat.start()
    out_dir: Path | None = None
    variant_name: str | None = None
    last: dict[str, Any] = {}
    try:
        log(f"job {job_id} '{job.name}' (attempt {job.attempt}) on {worker}")
        store.set_progress(job_id, _progress("starting"))
        if job.kind == "index":
            return _run_index(job, store, sessions, registry_specs, cache_dir, data_dir,
                              log, control, last)
        cfg = TrainingConfig.model_validate(job.config)
        base_spec = resolve_base(job.base_model, _as_specs(registry_specs), sessions,
                                 cache_dir)
        taken = {s["name"] if isinstance(s, dict) else s.name for s in registry_specs}
        variant_name = reserve_variant_name(store, job_id, cfg.name, cache_dir, taken)
        out_dir = cache_dir / VARIANTS_DIR / variant_name
        log(f"variant {variant_name!r} ({cfg.method}) from {base_spec.name}; "
            f"output {VARIANTS_DIR}/{variant_name}")
        log("config: " + json.dumps(cfg.model_dump(mode="json"), sort_keys=True))

        def on_step(report: Any) -> None:
            last.update(_step_progress(report))
            held = store.report_step(job_id, dict(last), step=int(report.step),
                                     loss=report.loss, learning_rate=report.learning_rate,
                                     epoch=report.epoch, elapsed_s=report.elapsed_s,
                                     grad_norm=getattr(report, "grad_norm", None))
            if not held:  # ended elsewhere: stop at this step (should_cancel sees it)
                control.reason = control.reason or "lost"
            log(f"step {report.step}/{report.max_steps} epoch {report.epoch:.2f} "
                f"loss {report.loss:.4f} lr {report.learning_rate:.3g} "
                f"{report.elapsed_s:.1f}s")

        from analysis.correction.train import train

        store.set_progress(job_id, _progress("training", step=0))
        result = train(cfg, base_spec, cache_dir, out_dir, on_step=on_step,
                       should_cancel=control.check, log=log)
        log(f"trained: {result.steps} steps, final loss {result.final_loss:.4f}, "
            f"{result.train_seconds:.1f} s")
        control.checkpoint()
        store.transition(job_id, EVALUATING,
                         progress=dict(last, **_progress("evaluating")))
        variant_spec = ModelSpec(name=variant_name, source="local", path=out_dir,
                                 kind=cfg.method, base=base_spec.name)
        evaluation = evaluate_variant(
            cfg, base_spec, variant_spec, cache_dir, log, control.checkpoint,
            save_comparison=_comparison_saver(sessions, base_spec.name, variant_name))
        _free()  # the models evaluate_variant loaded, before the worker takes another job
        evaluation.train = result.model_dump(mode="json", exclude={"out_dir"})
        control.checkpoint()
        _finish(store, job_id, cfg, base_spec, variant_name, result, evaluation,
                dict(last, **_progress("done")))
        log(f"succeeded: variant {variant_name!r} registered")
        return SUCCEEDED
    except BaseException as exc:  # every ending, even Ctrl-C, is recorded on the job
        return _end_badly(store, job_id, exc, control, log, out_dir, last)
    finally:
        beat.done.set()
        log.close()


def _run_index(job: Job, store: JobStore, sessions: sessionmaker[Session],
               registry_specs: Sequence[ModelSpec | dict[str, Any]], cache_dir: Path,
               data_dir: Path, log: JobLog, control: _Control, last: dict[str, Any]) -> str:
    """An exemplar-index build (app/jobs/index_job.py); a stop becomes StopRequested so
    the ending is recorded as for a correction (its checkpoint stays, to resume)."""
    from app.jobs.index_job import run_index_job

    base_spec = resolve_base(job.base_model, _as_specs(registry_specs), sessions, cache_dir)
    try:
        return run_index_job(job, store, sessions, base_spec, cache_dir, data_dir, log,
                             control, last)
    except Exception as exc:
        if control.check():
            raise StopRequested(control.reason) from exc
        raise


def _comparison_saver(sessions: Any, base: str, variant: str) -> Any:
    """Stores the job's circuit comparison as a comparison run (Compare reopens it)."""

    def save(result: Any, req: Any) -> str:
        from app.schemas import CompareBody
        from app.services.compare import save_comparison
        from app.store.runs import RunStore

        c = req.circuit
        body = CompareBody(base=base, variant=variant, answer_a=c.answer_a,
                           answer_b=c.answer_b, prompt_set=req.prompt_set,
                           **c.prompt.model_dump(), **c.settings.model_dump())
        return save_comparison(result, body, req, RunStore(sessions)).id

    return save


def _finish(store: JobStore, job_id: str, cfg: Any, base_spec: ModelSpec, name: str,
            result: Any, evaluation: JobEvaluation,
            progress: dict[str, Any]) -> None:
    """Register the variant and end the job succeeded, atomically: a variant row never
    exists for a job that did not succeed, nor the other way round."""
    relative = f"{VARIANTS_DIR}/{name}"
    meta = {
        "description": f"{cfg.method} correction of {base_spec.name} (job {job_id})",
        "base_revision": result.base_revision,
        "config": cfg.model_dump(mode="json"),
        "metrics": {k: getattr(result, k) for k in
                    ("steps", "epochs", "learning_rate", "train_loss", "final_loss",
                     "train_seconds", "total_seconds")},
        "evaluation_summary": (evaluation.summary.model_dump(mode="json")
                               if evaluation.summary else {}),
    }
    with store.sessions.begin() as s:
        job = s.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None or job.state != EVALUATING:
            state = job.state if job is not None else "deleted"
            raise JobStateError(f"job {job_id} is {state}; it cannot become succeeded")
        s.add(Variant(name=name, kind=cfg.method, base=base_spec.name, path=relative,
                      job_id=job_id, meta=json_safe(meta)))
        job.state = SUCCEEDED
        job.finished_at = datetime.now(UTC)
        job.evaluation = json_safe(evaluation.model_dump(mode="json"))
        job.progress = json_safe(progress)
        job.result_path = relative
        job.error = None


def _end_badly(store: JobStore, job_id: str, exc: BaseException, control: _Control,
               log: JobLog, out_dir: Path | None, last: dict[str, Any]) -> str:
    from analysis.correction.train import Cancelled

    stopped = isinstance(exc, Cancelled | StopRequested)
    reason = control.reason if stopped else None
    step = last.get("step")
    at = f" at step {step}" if step is not None else ""
    if stopped and reason == "cancel":
        state, message = CANCELLED, None
        log(f"cancelled{at}")
    elif (stopped and reason == "shutdown") or isinstance(exc, KeyboardInterrupt | SystemExit):
        state = INTERRUPTED
        message = f"interrupted{at}: the worker was stopped; re-queue to run it again"
        log(message)
    elif stopped and reason == "lost":
        log(f"stopped{at}: the job was ended elsewhere (marked interrupted or deleted)")
        current = store.get(job_id)
        return current.state if current is not None else "missing"
    else:
        state = FAILED
        message = (exc.message if isinstance(exc, CircuitlabError)
                   else f"{type(exc).__name__}: {exc}")
        log("failed: " + message)
        log("".join(traceback.format_exception(exc)).rstrip())
    # A variant is registered only on success: a cancelled job leaves no files; a failed
    # or interrupted one keeps what it wrote (its partial state) but no reserved name.
    if state == CANCELLED and out_dir is not None:
        shutil.rmtree(out_dir, ignore_errors=True)
    fields: dict[str, Any] = {"error": message, "variant": None}
    if state == CANCELLED or out_dir is None or not out_dir.exists():
        fields["result_path"] = None
    phase = {CANCELLED: "cancelled", INTERRUPTED: "interrupted", FAILED: "failed"}[state]
    fields["progress"] = dict(last, **_progress(phase))
    try:
        store.transition(job_id, state, **fields)
    except JobStateError as err:  # already ended elsewhere (e.g. a sweep); keep that
        log(f"(not recorded as {state}: {err.message})")
        current = store.get(job_id)
        return current.state if current is not None else "missing"
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        raise exc
    return state
