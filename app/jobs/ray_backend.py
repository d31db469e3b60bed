"""The Ray backend: each job runs as a Ray task with one GPU (none on a CPU-only cluster).

A dispatcher in the server (the queue's monitor thread calling :meth:`RayBackend.poll`)
claims queued jobs from the database - at most as many as the cluster has GPUs, so a job
never sits "running" while it waits for a GPU - and submits each as a task that calls
:func:`app.jobs.runner.run_job` against the app's database URL. The task writes progress,
metrics, heartbeats, the evaluation and the variant row itself, exactly as the local
worker does; the dispatcher only watches the task's outcome:

* the task returned -> the job already holds its final state;
* the task's worker or node died -> the job becomes interrupted (``max_retries=0``: a
  job is never silently run twice; re-queue it);
* cancel -> the same database flag the task polls; if the task is still running
  ``cancel_grace_s`` later, ``ray.cancel(force=True)`` and the job ends cancelled.

On a real cluster (``jobs.ray_address``) every node needs circuitlab installed, a
database URL it can reach (PostgreSQL, not a local SQLite file) and the models cache and
data directory on shared storage: the variant a task writes is loaded by the server.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from app.jobs.backend import BackendContext
from app.store.jobs import ACTIVE, CANCELLED, this_host
from app.store.tables import Job

log = logging.getLogger("circuitlab.jobs.ray")


def run_job_task(job_id: str, db_url: str, cache_dir: str, data_dir: str,
                 specs: list[dict[str, Any]], heartbeat_s: float,
                 cancel_poll_s: float) -> str:
    """The Ray task body (a module-level function, so Ray pickles it by reference)."""
    import socket

    from app.jobs.runner import run_job

    worker = f"ray@{socket.gethostname()}:{os.getpid()}"
    return run_job(job_id, db_url, cache_dir, data_dir, specs, worker=worker,
                   heartbeat_s=heartbeat_s, cancel_poll_s=cancel_poll_s)


@dataclass
class _InFlight:
    job_id: str
    submitted: float
    cancel_seen: float | None = None


class RayBackend:
    name = "ray"

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx
        self.inflight: dict[Any, _InFlight] = {}  # ObjectRef -> job
        self.started_ray = False
        self.num_gpus = 0
        self.capacity = 1
        self._remote: Any = None
        self.dispatcher = f"ray-dispatch@{this_host()}:{os.getpid()}"

    def start(self) -> None:
        import ray

        s = self.ctx.settings
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if s.ray_address:
                ray.init(address=s.ray_address, **kwargs)
            else:
                ray.init(num_cpus=s.ray_num_cpus or os.cpu_count() or 1, **kwargs)
                self.started_ray = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.num_gpus = 1 if gpus else 0
        self.capacity = s.ray_max_in_flight or max(1, gpus)
        options: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": s.ray_task_cpus,
                                   "max_retries": 0}
        if s.ray_runtime_env:
            options["runtime_env"] = s.ray_runtime_env
        self._remote = ray.remote(run_job_task).options(**options)
        log.info("Ray backend: %s, %d GPU(s), up to %d job(s) at once",
                 s.ray_address or "local instance", gpus, self.capacity)

    def poll(self) -> None:
        self._reap()
        self._watch_cancels()
        self._dispatch()

    def _dispatch(self) -> None:
        q = self.ctx
        specs = [spec.model_dump(mode="json") for spec in q.specs]
        while len(self.inflight) < self.capacity:
            # pid None: the task adopts the claim and writes its own pid and host.
            job = q.store.claim_next(self.dispatcher, None)
            if job is None:
                return
            ref = self._remote.remote(job.id, q.db_url, str(q.cache_dir), str(q.data_dir),
                                      specs, q.settings.heartbeat_s, q.settings.cancel_poll_s)
            self.inflight[ref] = _InFlight(job.id, time.monotonic())
            log.info("submitted job %s to Ray", job.id)

    def _reap(self) -> None:
        import ray

        if not self.inflight:
            return
        # Tasks not started yet have no heartbeat of their own: keep their claim fresh.
        # (Once a task adopts its job it beats itself, so a hung task goes stale.)
        for item in self.inflight.values():
            job = self.ctx.store.get(item.job_id)
            if job is not None and job.worker_pid is None:
                self.ctx.store.heartbeat(item.job_id)
        ready, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        for ref in ready:
            item = self.inflight.pop(ref)
            try:
                state = ray.get(ref, timeout=0)
                log.info("Ray job %s ended %s", item.job_id, state)
            except Exception as exc:  # the task died or was cancelled under the job
                self._settle(item.job_id, exc)

    def _settle(self, job_id: str, exc: Exception) -> None:
        """The task ended without recording an end: record one."""
        store = self.ctx.store
        job = store.get(job_id)
        if job is None or job.state not in ACTIVE:
            return
        if job.cancel_requested:
            try:
                store.transition(job_id, CANCELLED, error=None,
                                 progress=dict(job.progress or {}, phase=CANCELLED))
                return
            except Exception:
                pass
        why = f"the Ray task ended with {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        store.interrupt(job_id, why)
        log.warning("Ray job %s: %s", job_id, why)

    def _watch_cancels(self) -> None:
        import ray

        grace = self.ctx.settings.cancel_grace_s
        for ref, item in list(self.inflight.items()):
            job = self.ctx.store.get(item.job_id)
            if job is None or not job.cancel_requested:
                continue
            now = time.monotonic()
            if item.cancel_seen is None:
                item.cancel_seen = now
            elif now - item.cancel_seen > grace:
                log.warning("job %s ignored its cancel for %.0f s; force-cancelling its task",
                            item.job_id, grace)
                ray.cancel(ref, force=True)
                item.cancel_seen = float("inf")  # once

    def nudge_cancel(self, job: Job) -> None:
        """The task polls the flag itself; the grace timer starts now."""
        for item in self.inflight.values():
            if item.job_id == job.id and item.cancel_seen is None:
                item.cancel_seen = time.monotonic()

    def stop(self, timeout: float) -> None:
        import ray

        if not ray.is_initialized():
            return
        # The interruption is recorded first, in the database the task polls (every
        # cancel_poll_s): the task stops at its next check as "ended elsewhere", and a
        # success it was about to write is refused (it must come from evaluating). A soft
        # ray.cancel alone raises KeyboardInterrupt in the task, which under load was once
        # not delivered before the task ran to success.
        for item in self.inflight.values():
            self.ctx.store.interrupt(item.job_id, "the server stopped its Ray task")
        for ref in self.inflight:
            ray.cancel(ref, force=False)
        not_ready: list[Any] = []
        if self.inflight:
            _, not_ready = ray.wait(list(self.inflight), num_returns=len(self.inflight),
                                    timeout=timeout)
        for ref in not_ready:
            ray.cancel(ref, force=True)
        if not_ready:
            # A killed task's process may still be alive for a moment, mid-write to the
            # database: let it go before the server moves on.
            ray.wait(not_ready, num_returns=len(not_ready), timeout=15)
        self.inflight.clear()
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    def describe(self) -> dict[str, Any]:
        return {"ray": {"gpus_per_job": self.num_gpus, "capacity": self.capacity,
                        "in_flight": [i.job_id for i in self.inflight.values()]}}
