"""Exemplar index builds: uploaded corpora, builds queued as jobs in the shared queue,
rows kept in step with their jobs, and the progress of a build for a run page.

Reading the indexes is :mod:`app.services.index_readers`; what a neuron responds to is
:mod:`app.services.neuron_meanings`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from analysis.errors import InputError, NotFound
from analysis.neurons.corpus import Corpus, corpus_from_bytes, default_corpus, load_corpus
from app.jobs.index_job import CORPORA_DIR, index_path
from app.store.indexes import BUILDING, QUEUED, READY, IndexStore
from app.store.jobs import CANCELLED, FAILED, INTERRUPTED, JobNotFound
from app.store.tables import IndexRecord

if TYPE_CHECKING:  # a type only: the queue's job runner reaches this module
    from app.jobs.queue import JobQueue

ACTIVE_INDEX = (QUEUED, BUILDING)


class CorpusRef(TypedDict):
    """Where a build finds its corpus (kept in the job's config and the row's meta): the
    built-in default, or a file under ``<data_dir>/corpora/``."""

    kind: Literal["default", "file"]
    name: NotRequired[str]
    path: NotRequired[str]


@dataclass(frozen=True)
class IndexStatus:
    """An exemplar index that is still being built, as a run page reports it."""

    model: str
    corpus_name: str
    state: str
    tokens_done: int
    tokens_total: int
    tokens_per_s: float | None
    eta_s: float | None
    job_id: str | None

    @property
    def share(self) -> float:
        return self.tokens_done / self.tokens_total if self.tokens_total else 0.0


class IndexBuilds:
    def __init__(self, store: IndexStore, queue: JobQueue, data_dir: Path) -> None:
        self.store, self.queue, self.data_dir = store, queue, Path(data_dir)

    # -- corpora -------------------------------------------------------------------------

    def save_upload(self, filename: str, data: bytes) -> tuple[Corpus, CorpusRef]:
        """Check an uploaded corpus (typed 4xx errors for empty, binary, oversize, bad
        JSONL) and keep it under the data directory by content key; nothing is written
        for a refused file."""

        corpus = corpus_from_bytes(filename, data)
        folder = self.data_dir / CORPORA_DIR
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".jsonl" if filename.lower().endswith(".jsonl") else ".txt"
        target = folder / f"{corpus.key[:16]}{suffix}"
        if not target.exists():
            partial = target.with_suffix(target.suffix + ".part")
            partial.write_bytes(data)
            partial.replace(target)  # atomic: a crash never leaves half a corpus
        ref: CorpusRef = {"kind": "file", "path": f"{CORPORA_DIR}/{target.name}",
                          "name": corpus.name}
        return corpus, ref

    @staticmethod
    def default_corpus() -> tuple[Corpus, CorpusRef]:

        corpus = default_corpus()
        return corpus, {"kind": "default", "name": corpus.name}

    def corpus_file(self, key: str) -> tuple[Corpus, CorpusRef]:
        """An uploaded corpus by the key the upload answered with."""

        if not key.isalnum() or len(key) < 16:
            raise InputError("corpus must be 'default' or the key an upload returned",
                             field="corpus")
        matches = sorted((self.data_dir / CORPORA_DIR).glob(f"{key[:16]}.*"))
        matches = [m for m in matches if not m.name.endswith(".part")]
        if not matches:
            raise NotFound(f"no uploaded corpus {key[:16]!r}; upload it to /api/v1/corpora")
        corpus = load_corpus(matches[0])
        return corpus, {"kind": "file", "path": f"{CORPORA_DIR}/{matches[0].name}",
                        "name": corpus.name}

    # -- builds --------------------------------------------------------------------------

    def build(self, model: str, revision: str, corpus: Corpus, ref: CorpusRef,
              settings: dict[str, Any] | None = None) -> IndexRecord:
        """Queue a build of (model, revision, corpus), or return the index that already
        covers it: finished, or being built. A failed, cancelled or interrupted one is
        queued again and resumes from its checkpoint."""
        self.reconcile()
        existing = self.store.find(model, revision, corpus.key)
        if existing is not None and (existing.state == READY or existing.state in ACTIVE_INDEX):
            return existing
        if existing is None:
            existing = self.store.create(
                model=model, revision=revision, corpus_key=corpus.key,
                corpus_name=corpus.name[:200], path=index_path(model, corpus.key),
                meta={"corpus": ref, "texts": len(corpus.texts), "settings": settings or {}})
        return self._submit(existing, ref, settings or {})

    def _submit(self, row: IndexRecord, ref: CorpusRef,
                settings: dict[str, Any]) -> IndexRecord:
        config = {"index_id": row.id, "corpus": ref, "settings": settings}
        job_id = self.queue.submit_index(row.model,
                                         f"index {row.model} on {row.corpus_name}"[:128],
                                         config)
        self.store.update(row.id, state=QUEUED, job_id=job_id, error=None)
        return self.store.require(row.id)

    def reconcile(self) -> list[str]:
        """Index rows whose job ended without the row hearing of it take the job's end
        state. A worker killed mid-build (SIGKILL, OOM) cannot write its index row; the
        queue marks its job interrupted, and without this the row would say "building"
        forever and a new build of the same triple would be refused as already running.
        Returns the ids changed."""
        changed = []
        for row in self.store.list():
            if row.state not in ACTIVE_INDEX or not row.job_id:
                continue
            try:
                job = self.queue.get(row.job_id)
            except JobNotFound:  # deleted with its log
                job = None
            if job is not None and job.state not in (FAILED, CANCELLED, INTERRUPTED):
                continue
            state = job.state if job is not None else INTERRUPTED
            self.store.update(row.id, state=state,
                              error=(job.error if job is not None else None)
                              or f"its build job ended {state}")
            changed.append(row.id)
        return changed

    def resume_interrupted(self) -> list[IndexRecord]:
        """Queue again every index build that a stopped server or a killed worker left
        interrupted: it resumes from its on-disk checkpoint (run at start, as the
        default index is queued; a cancelled or failed build waits for the user)."""
        self.reconcile()
        resumed = []
        for row in self.store.list():
            if row.state == INTERRUPTED:
                meta = row.meta or {}
                resumed.append(self._submit(row, meta.get("corpus") or {"kind": "default"},
                                            meta.get("settings") or {}))
        return resumed

    def list(self, model: str | None = None) -> list[IndexRecord]:
        self.reconcile()
        return self.store.list(model)

    # -- progress ------------------------------------------------------------------------

    def building(self, model: str) -> IndexRecord | None:
        rows = [r for r in self.store.list(model) if r.state in ACTIVE_INDEX]
        return rows[0] if rows else None

    def status(self, model: str, base: str | None) -> IndexStatus | None:
        """The model's (or its base's) index being built, with its job's rate and ETA;
        None when none is building."""
        for name in (model, base):
            row = self.building(name) if name else None
            if row is None:
                continue
            progress: dict[str, Any] = {}
            if row.job_id:
                with contextlib.suppress(JobNotFound):  # a deleted job leaves the row
                    progress = self.queue.get(row.job_id).progress or {}
            return IndexStatus(model=row.model, corpus_name=row.corpus_name, state=row.state,
                               tokens_done=row.tokens_done,
                               tokens_total=row.tokens_total or 0,
                               tokens_per_s=progress.get("tokens_per_s"),
                               eta_s=progress.get("eta_s"), job_id=row.job_id)
        return None
