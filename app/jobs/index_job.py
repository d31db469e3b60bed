"""The body of an exemplar-index job (``jobs.kind == "index"``), run by the same workers,
in the same queue and with the same states, log and cancel flag as a correction.

The job's config names the model, the corpus (the built-in default, or a file the user
uploaded under ``<data_dir>/corpora/``), the index settings and the ``neuron_indexes`` row
it fills. Progress (tokens done / total, tokens/s, ETA) goes to the job and to the index
row; the index on disk is readable while it grows. A cancelled or interrupted build keeps
its checkpoint: building the same (model, revision, corpus) again resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from analysis.models import ModelSpec, load_model
from app.store.indexes import BUILDING, READY, IndexStore
from app.store.jobs import SUCCEEDED, JobStore

CORPORA_DIR = "corpora"
LOG_EVERY_S = 10.0


def index_path(model: str, corpus_key: str) -> str:
    """Where an index lives, relative to the data directory (the CLI's default too)."""
    from analysis.neurons.index import default_index_dir

    return default_index_dir(Path("."), model, corpus_key).as_posix()


def load_job_corpus(config: dict[str, Any], data_dir: Path) -> Any:
    from analysis.neurons.corpus import default_corpus, load_corpus

    corpus = config["corpus"]
    if corpus["kind"] == "default":
        return default_corpus()
    return load_corpus(data_dir / corpus["path"])


def run_index_job(job: Any, store: JobStore, sessions: sessionmaker[Session],
                  base_spec: ModelSpec, cache_dir: Path, data_dir: Path,
                  log: Callable[[str], None], control: Any, last: dict[str, Any]) -> str:
    """Build (or resume) the job's index; returns the final state (succeeded). Raises on
    failure or stop so the caller records it like any job's ending. ``control`` is the
    runner's stop control: ``check()`` says whether to stop, ``reason`` why."""
    from analysis.neurons.index import IndexSettings, build_index

    indexes = IndexStore(sessions)
    cfg = job.config
    row = indexes.require(cfg["index_id"])
    indexes.update(row.id, state=BUILDING, job_id=job.id, error=None)
    try:
        corpus = load_job_corpus(cfg, data_dir)
        log(f"corpus {corpus.name!r}: {len(corpus.texts)} texts (key {corpus.key[:16]})")
        lm = load_model(base_spec, cache_dir)
        log(f"model {lm.name} loaded; writing {row.path}")
        last_log = [0.0]

        def on_progress(p: Any) -> None:
            last.update(phase="indexing", tokens_done=p.tokens_done,
                        tokens_total=p.tokens_total, tokens_per_s=round(p.tokens_per_s, 1),
                        eta_s=None if p.eta_s is None else round(p.eta_s, 1))
            store.set_progress(job.id, dict(last))
            store.heartbeat(job.id)
            indexes.update(row.id, tokens_done=p.tokens_done, tokens_total=p.tokens_total)
            if time.monotonic() - last_log[0] >= LOG_EVERY_S:
                last_log[0] = time.monotonic()
                log(f"{p.tokens_done:,}/{p.tokens_total:,} tokens, "
                    f"{p.tokens_per_s:,.0f} tokens/s")

        settings = IndexSettings.model_validate(cfg.get("settings") or {})
        summary = build_index(lm, corpus, data_dir / row.path, settings,
                              on_progress=on_progress, should_stop=control.check)
        if control.check():
            raise _Stopped(control.reason)
        info = summary.model_dump(mode="json") if hasattr(summary, "model_dump") else {}
        indexes.update(row.id, state=READY, meta={**(row.meta or {}), "summary": info},
                       tokens_done=int(info.get("tokens_done", last.get("tokens_done", 0))))
        store.transition(job.id, SUCCEEDED, progress=dict(last, phase="done"), error=None)
        log(f"index ready: {info}")
        return SUCCEEDED
    except BaseException as exc:
        stopped = control.check()
        state = {"cancel": "cancelled", "shutdown": "interrupted"}.get(
            control.reason or "", "failed")
        error = None if stopped else (str(exc)[:2000] or type(exc).__name__)
        indexes.update(row.id, state=state, error=error)
        raise


class _Stopped(Exception):
    """build_index returned early because the job was asked to stop."""
