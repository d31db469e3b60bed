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
  variants of that base so a label follows the neuron across a fine-tune;
* a **neuron index** is an exemplar index of one (model, revision, corpus): its arrays
  live on disk under ``path``; a **neuron description** is a machine-written one
  (source "data" or "llm") — the human label always wins over it;
* a **supernode** is a named group of one run's nodes.
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
    # 0003: what the job does — "correction" (SFT, then evaluation) or "index" (an
    # exemplar index build); one queue and one set of states for both.
    kind: Mapped[str] = mapped_column(String(16), default="correction",
                                      server_default="correction")


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


class IndexRecord(Base):
    """One exemplar index of (model, revision, corpus); a rebuild is never needed for the
    same triple. ``path`` is relative to the data directory; ``meta`` holds the build
    settings and summary (layers, neurons, k, size on disk, tokens/s)."""

    __tablename__ = "neuron_indexes"
    __table_args__ = (UniqueConstraint("model", "revision", "corpus_key",
                                       name="uq_neuron_index_triple"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)
    model: Mapped[str] = mapped_column(String(64), index=True)
    revision: Mapped[str] = mapped_column(String(64), default="")
    corpus_key: Mapped[str] = mapped_column(String(64))  # content hash of the corpus
    corpus_name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    path: Mapped[str] = mapped_column(Text)
    tokens_done: Mapped[int] = mapped_column(Integer, default=0)
    tokens_total: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)


class NeuronDescription(Base):
    """A machine-written description of a neuron: source "data" (from its exemplars) or
    "llm" (an operator-configured endpoint). Human labels live in NeuronLabel and win."""

    __tablename__ = "neuron_descriptions"
    __table_args__ = (UniqueConstraint("model", "layer", "neuron", "source",
                                       name="uq_neuron_description_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(64))
    layer: Mapped[int]
    neuron: Mapped[int]
    source: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    index_id: Mapped[str | None] = mapped_column(
        ForeignKey("neuron_indexes.id", ondelete="CASCADE"))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. the LLM prompt used
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class Supernode(Base):
    """A named group of one run's nodes. ``members`` is a list of
    ``{"layer": int, "neuron": int, "position": int | None}`` (position None: the neuron
    at every position where the run kept it)."""

    __tablename__ = "supernodes"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_supernode_run_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                        index=True)
    name: Mapped[str] = mapped_column(String(80))
    members: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=_now)


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
