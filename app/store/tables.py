"""Persistence: one schema for runs, variants, jobs and neuron labels.

SQLite by default (a file under the data directory), PostgreSQL by URL
(``CIRCUITLAB_DATABASE_URL=postgresql+psycopg://...``). The schema is owned by Alembic
migrations in app/store/migrations; ``init_db`` upgrades a database to the newest revision.

* a **run** is one analysis (variant, prompt, contrast, method, parameters) and its stored
  result; ``cache_key`` makes a repeated analysis a lookup instead of a recomputation;
* a **variant** is a loadable model registered at run time (a fine-tune produced by a job,
  or an adapter over a base) in addition to those the operator configures;
* a **job** is a queued SFT correction with its state, progress and logs;
* a **neuron label** is a user's note on (base model, layer, neuron), shared by all
  variants of that base so a label follows the neuron across a fine-tune.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def _now() -> datetime:
    return datetime.now(UTC)


def _uuid() -> str:
    return uuid.uuid4().hex[:16]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    created_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    kind: Mapped[str] = mapped_column(String(32), default="attribution")
    model: Mapped[str] = mapped_column(String(64), index=True)
    model_revision: Mapped[str] = mapped_column(String(64), default="")
    prompt: Mapped[str] = mapped_column(Text)
    answer_a: Mapped[str | None] = mapped_column(String(200))
    answer_b: Mapped[str | None] = mapped_column(String(200))
    method: Mapped[str | None] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cache_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    metric: Mapped[float | None] = mapped_column(Float)
    influence_sum: Mapped[float | None] = mapped_column(Float)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Variant(Base):
    __tablename__ = "variants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    kind: Mapped[str] = mapped_column(String(16))  # full | lora
    base: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)  # relative to the models cache
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Job(Base):
    """One SFT correction: queued -> running -> evaluating -> a terminal state.

    Terminal states are succeeded, failed, cancelled and interrupted (the worker died or
    was stopped). A re-queue makes a *new* row (attempt + 1, parent_id = the old one) so
    the old row keeps its log, progress and metrics.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    created_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    base_model: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    evaluation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128))  # "local@host:pid", "ray@host:pid"
    # 0002: the target case the job corrects (base model, prompt, answers) for listing
    # all experiments on one target; the cancel flag a running worker polls; the process
    # that holds the job (to tell a dead worker from a slow one); re-queue lineage; the
    # variant name reserved at start and its directory under the models cache.
    target_key: Mapped[str | None] = mapped_column(String(32), index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_host: Mapped[str | None] = mapped_column(String(128))
    worker_pid: Mapped[int | None]
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[str | None] = mapped_column(String(32), index=True)
    variant: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    result_path: Mapped[str | None] = mapped_column(Text)


class JobMetric(Base):
    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int]
    loss: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(default=_now)
    epoch: Mapped[float | None] = mapped_column(Float)  # 0002
    elapsed_s: Mapped[float | None] = mapped_column(Float)  # 0002: seconds since training began
    grad_norm: Mapped[float | None] = mapped_column(Float)  # 0002


class NeuronLabel(Base):
    __tablename__ = "neuron_labels"
    __table_args__ = (UniqueConstraint("model", "layer", "neuron"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(64))
    layer: Mapped[int]
    neuron: Mapped[int]
    label: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


def default_url(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'circuitlab.db'}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    return create_engine(url, pool_pre_ping=True)


def init_db(url: str) -> sessionmaker[Session]:
    """Upgrade the database at `url` to the newest schema and return a session factory."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
    return sessionmaker(make_engine(url), expire_on_commit=False)
