"""The local backend: worker processes on this machine (one per GPU, one on CPU),
restarted when one dies; a dead worker's job becomes interrupted."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from app.jobs.backend import BackendContext
from app.jobs.job_settings import WorkerConfig
from app.jobs.runner import VARIANTS_DIR
from app.store.jobs import pid_alive, this_host
from app.store.tables import Job

log = logging.getLogger("circuitlab.jobs")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _gpu_slots() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries ([] on CPU)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[:count] if ids else [str(i) for i in range(count)]


class _Proc:
    def __init__(self, slot: int, gpu: str | None) -> None:
        self.slot, self.gpu = slot, gpu
        self.popen: subprocess.Popen[bytes] | None = None
        self.crashes: deque[float] = deque(maxlen=5)
        self.not_before = 0.0


class LocalBackend:
    """Worker processes on this machine, restarted when one dies."""

    name = "local"

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx
        self.procs: list[_Proc] = []
        self._lock = threading.Lock()
        self.config_path = ctx.data_dir / "jobs" / "worker-config.json"

    def start(self) -> None:
        s = self.ctx.settings
        gpus = _gpu_slots()
        n = s.workers or max(1, len(gpus))
        cfg = WorkerConfig(db_url=self.ctx.db_url, cache_dir=self.ctx.cache_dir,
                           data_dir=self.ctx.data_dir, specs=self.ctx.specs,
                           heartbeat_s=s.heartbeat_s, poll_s=s.poll_s,
                           cancel_poll_s=s.cancel_poll_s, parent_pid=os.getpid())
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(cfg.model_dump_json())
        self._remove_dead_partials()
        with self._lock:
            self.procs = [_Proc(i, gpus[i % len(gpus)] if gpus else None) for i in range(n)]
            for proc in self.procs:
                self._spawn(proc)

    def _remove_dead_partials(self) -> None:
        """train() writes a variant into ``.<name>.partial-<pid>-<id>`` and renames it at the
        end; a worker killed mid-job leaves that directory behind. All local workers run
        on this host, so a dead pid means nobody will finish it."""
        for path in (self.ctx.cache_dir / VARIANTS_DIR).glob(".*.partial-*"):
            match = re.search(r"\.partial-(\d+)-", path.name)
            if match and path.is_dir() and not pid_alive(int(match.group(1))):
                shutil.rmtree(path, ignore_errors=True)

    def _spawn(self, proc: _Proc) -> None:
        env = dict(os.environ)
        if proc.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = proc.gpu
        out = (self.ctx.data_dir / "jobs" / f"worker-{proc.slot}.log").open("ab")
        try:
            # A fresh interpreter (fork+exec): never a fork of a process holding CUDA. The
            # project root as cwd makes `-m app.jobs.worker` importable even uninstalled.
            proc.popen = subprocess.Popen(
                [sys.executable, "-m", "app.jobs.worker", "--config", str(self.config_path)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=str(PROJECT_ROOT))
        finally:
            out.close()
        log.info("started job worker %d (pid %d%s)", proc.slot, proc.popen.pid,
                 f", GPU {proc.gpu}" if proc.gpu is not None else "")

    def pids(self) -> list[int]:
        return [p.popen.pid for p in self.procs if p.popen is not None]

    def poll(self) -> None:
        """Reap dead workers: their jobs become interrupted, and a new worker starts (after
        a pause if it keeps dying, so a broken environment does not spin)."""
        with self._lock:
            for proc in self.procs:
                if proc.popen is None:
                    if time.monotonic() >= proc.not_before:
                        self._spawn(proc)
                    continue
                code = proc.popen.poll()
                if code is None:
                    continue
                pid = proc.popen.pid
                marked = self.ctx.store.interrupt_process_jobs(
                    pid, f"the worker process (pid {pid}) exited with code {code}")
                log.warning("job worker %d (pid %d) exited with %s; interrupted: %s",
                            proc.slot, pid, code, marked or "no job")
                proc.popen = None
                proc.crashes.append(time.monotonic())
                recent = [t for t in proc.crashes if time.monotonic() - t < 60]
                proc.not_before = time.monotonic() + (30.0 if len(recent) >= 3 else 0.0)
                if time.monotonic() >= proc.not_before:
                    self._spawn(proc)

    def nudge_cancel(self, job: Job) -> None:
        # SIGUSR1 tells our worker to read the cancel flag at its next step.
        if job.worker_host == this_host() and job.worker_pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.worker_pid, signal.SIGUSR1)

    def stop(self, timeout: float) -> None:
        with self._lock:
            procs = [p for p in self.procs if p.popen is not None]
            for proc in procs:
                assert proc.popen is not None
                if proc.popen.poll() is None:
                    proc.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for proc in procs:
                assert proc.popen is not None
                try:
                    proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("job worker %d did not stop in %.0f s; killing it",
                                proc.slot, timeout)
                    proc.popen.kill()
                    proc.popen.wait()
                # Whatever it still held (killed mid-job) is interrupted, not left running.
                self.ctx.store.interrupt_process_jobs(proc.popen.pid,
                                                        "the server stopped its worker")
                proc.popen = None

    def describe(self) -> dict[str, Any]:
        return {"workers": [{"slot": p.slot, "gpu": p.gpu,
                             "pid": p.popen.pid if p.popen is not None else None,
                             "alive": p.popen is not None and p.popen.poll() is None}
                            for p in self.procs]}
