"""The operator's job-queue settings (``CIRCUITLAB_JOBS__*`` or ``jobs:`` in the config
file), e.g. ``CIRCUITLAB_JOBS__BACKEND=ray CIRCUITLAB_JOBS__RAY_ADDRESS=ray://head:10001``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from analysis.correction.config import TrainingCaps
from analysis.models import ModelSpec


class JobSettings(BaseModel):
    backend: Literal["local", "ray"] = Field(
        "local", description="local: an embedded worker process next to the server; "
                             "ray: each job is a Ray task with one GPU (0 on a CPU cluster).")
    start_worker: bool = Field(
        True, description="Start the backend with the server (off: the server only queues; "
                          "run `python -m app.jobs.worker` elsewhere on the same database).")
    workers: int | None = Field(
        None, ge=1, description="Local worker processes; default one per visible GPU "
                                "(each pinned to its GPU), one on CPU.")
    ray_address: str | None = Field(
        None, description="Ray cluster to join (e.g. 'auto' or 'ray://head:10001'); default "
                          "a local Ray instance started by the server.")
    ray_num_cpus: int | None = Field(None, ge=1,
                                     description="CPUs of the local Ray instance.")
    ray_task_cpus: float = Field(1, gt=0, description="CPUs each job's Ray task asks for "
                                                     "(torch's thread count follows it).")
    ray_max_in_flight: int | None = Field(
        None, ge=1, description="Jobs submitted to Ray at once; default the cluster's GPU "
                                "count (1 without GPUs).")
    ray_runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env for job tasks (e.g. env_vars) on a real cluster; "
                          "its nodes need circuitlab installed and the models cache and data "
                          "directory on shared storage.")
    heartbeat_s: float = Field(5.0, gt=0, description="How often a busy worker says it "
                                                      "is alive.")
    stale_after_s: float = Field(
        120.0, gt=0, description="A held job whose heartbeat is older than this is marked "
                                 "interrupted (its worker is presumed dead).")
    poll_s: float = Field(1.0, gt=0, description="How often an idle worker looks for work.")
    cancel_poll_s: float = Field(1.0, gt=0, description="At most one cancel-flag read per "
                                                        "this many seconds while training.")
    cancel_grace_s: float = Field(
        60.0, gt=0, description="Ray: a cancelled task still running after this long is "
                                "force-cancelled.")
    caps: TrainingCaps = Field(default_factory=TrainingCaps,
                               description="What one job may ask for (texts, lengths, "
                                           "epochs...).")


class WorkerConfig(BaseModel):
    """Everything a worker process needs, written to a file by the server."""

    db_url: str
    cache_dir: Path
    data_dir: Path
    specs: list[ModelSpec] = Field(default_factory=list)
    heartbeat_s: float = 5.0
    poll_s: float = 1.0
    cancel_poll_s: float = 1.0
    name: str = "local"
    parent_pid: int | None = Field(None, description="Stop when this process is gone.")

    def worker_id(self) -> str:
        return f"{self.name}@{socket.gethostname()}:{os.getpid()}"
