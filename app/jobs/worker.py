"""The local worker: a separate process that takes queued jobs one at a time and runs them.

Started by the server (:class:`app.jobs.local_backend.LocalBackend`) as
``python -m app.jobs.worker --config <file>`` — a fresh interpreter (fork + exec), never a
fork of a process that may already hold a CUDA context. It can also run on its own next
to a server that only queues (``jobs.start_worker: false``), on any machine that reaches
the same database and shares the models cache: ``python -m app.jobs.worker`` then reads
the usual ``CIRCUITLAB_*`` settings.

Signals: SIGTERM/SIGINT stop the worker (the job in hand ends *interrupted* at its next
step, then the process exits 0); SIGUSR1 means "a cancel was requested: read the flag
now" so a cancel takes effect at the next step rather than the next poll. The worker also
stops when the server that started it disappears (its parent pid changes).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from app.jobs.job_settings import WorkerConfig
from app.jobs.runner import run_job, sessions_for
from app.store.jobs import JobStore

log = logging.getLogger("circuitlab.jobs.worker")


def _from_settings() -> WorkerConfig:
    from app.settings import Settings

    settings = Settings()
    jobs = settings.jobs
    return WorkerConfig(db_url=settings.db_url(), cache_dir=settings.cache_dir,
                        data_dir=settings.data_dir, specs=settings.all_models(),
                        heartbeat_s=jobs.heartbeat_s, poll_s=jobs.poll_s,
                        cancel_poll_s=jobs.cancel_poll_s, name="standalone")


def _watch_parent(parent_pid: int, stop: threading.Event, every_s: float) -> None:
    # Re-parenting (to init or a subreaper) is how Linux tells a child its parent died.
    while not stop.wait(every_s):
        if os.getppid() != parent_pid:
            log.warning("the server (pid %s) is gone; stopping", parent_pid)
            stop.set()


def serve(cfg: WorkerConfig, *, once: bool = False,
          stop: threading.Event | None = None) -> int:
    """Claim and run jobs until stopped; ``once``: run at most one job, then return."""
    stop = stop or threading.Event()
    hint = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGUSR1, lambda *_: hint.set())
    if cfg.parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(cfg.parent_pid, stop, 1.0),
                         name="parent-watch", daemon=True).start()
    store = JobStore(sessions_for(cfg.db_url))
    worker = cfg.worker_id()
    specs: list[dict[str, Any]] = [s.model_dump(mode="json") for s in cfg.specs]
    log.info("worker %s ready", worker)
    while not stop.is_set():
        job = store.claim_next(worker, os.getpid())
        if job is None:
            if once:
                return 0
            stop.wait(cfg.poll_s)
            continue
        hint.clear()
        log.info("running job %s (%s)", job.id, job.name)
        state = run_job(job.id, cfg.db_url, cfg.cache_dir, cfg.data_dir, specs,
                        worker=worker, heartbeat_s=cfg.heartbeat_s,
                        cancel_poll_s=cfg.cancel_poll_s, stop_event=stop, cancel_hint=hint)
        log.info("job %s ended %s", job.id, state)
        if once:
            return 0
    log.info("worker %s stopped", worker)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.jobs.worker",
                                     description="Run queued circuitlab correction jobs.")
    parser.add_argument("--config", type=Path,
                        help="WorkerConfig JSON written by the server (default: settings)")
    parser.add_argument("--once", action="store_true", help="run at most one job, then exit")
    parser.add_argument("--migrate", action="store_true",
                        help="upgrade the database schema first (a worker started alone)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = (WorkerConfig.model_validate_json(args.config.read_text()) if args.config
           else _from_settings())
    if args.migrate or args.config is None:
        from app.store.tables import init_db

        init_db(cfg.db_url)
    return serve(cfg, once=args.once)


if __name__ == "__main__":
    sys.exit(main())
