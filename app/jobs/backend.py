"""What a job backend is (the protocol) and the little it gets from the queue (the
context): where the database, the models cache and the data live, the models it may
train, the job settings and the job store. Backends never see the queue itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from analysis.models import ModelSpec
from app.jobs.job_settings import JobSettings
from app.store.jobs import JobStore
from app.store.tables import Job


@dataclass(frozen=True)
class BackendContext:
    db_url: str
    cache_dir: Path
    data_dir: Path
    specs: list[ModelSpec]
    settings: JobSettings
    store: JobStore


class Backend(Protocol):
    name: str

    def start(self) -> None: ...
    def poll(self) -> None: ...  # called by the queue's monitor thread every poll_s
    def stop(self, timeout: float) -> None: ...
    def nudge_cancel(self, job: Job) -> None: ...
    def describe(self) -> dict[str, Any]: ...
