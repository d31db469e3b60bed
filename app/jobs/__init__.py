"""The durable queue of jobs: SFT corrections and exemplar-index builds.

* :mod:`app.store.jobs`  - job rows: states, atomic claim, progress, cancel, re-queue,
  crash recovery (SQLite and PostgreSQL);
* :mod:`app.jobs.runner` - the body of one job: a correction (train, evaluate with
  :mod:`app.jobs.job_evaluation`, register the variant) or an index build
  (:mod:`app.jobs.index_job`);
* :mod:`app.jobs.worker` - the local worker process;
* :mod:`app.jobs.queue`  - :class:`JobQueue`, the one interface the app uses, over a
  backend (:mod:`app.jobs.backend`: the protocol and the small context a backend gets):
  :mod:`app.jobs.local_backend` (worker processes here) or :mod:`app.jobs.ray_backend`;
* :mod:`app.jobs.job_settings` - :class:`JobSettings` (``Settings.jobs``).

Importing this package does not import Ray, trl or peft (only a backend or a job does).
"""

from app.jobs.job_settings import JobSettings
from app.jobs.queue import JobQueue, config_target_key, target_key
from app.store.jobs import ACTIVE, STATES, TERMINAL, JobNotFound, JobStateError, JobStore

__all__ = [
    "ACTIVE",
    "STATES",
    "TERMINAL",
    "JobNotFound",
    "JobQueue",
    "JobSettings",
    "JobStateError",
    "JobStore",
    "config_target_key",
    "target_key",
]
