"""Neuron meaning for the pages and the API: exemplar indexes (built as jobs), uploaded
corpora, and what a neuron responds to (exemplars, statistics, description).

The arrays are read with analysis.neurons' reader; a reader is reopened when its index
has grown (an index is usable for what it has seen while it is being built)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.attribution.always_on import KnownAlwaysOn
from analysis.attribution.logit_lens import check_model_neuron, describe_neuron
from analysis.concepts import concept_candidates
from analysis.errors import InputError, NotFound
from analysis.llm_describe import describe_prompt, llm_describe
from analysis.neuron_ref import neuron_name
from analysis.neurons.corpus import corpus_from_bytes, default_corpus, load_corpus
from analysis.neurons.data_description import data_description
from analysis.neurons.index import NeuronIndex as Reader
from analysis.neurons.search import search as search_index
from app.jobs.index_job import CORPORA_DIR, index_path
from app.services.effects import effects_for
from app.store.indexes import BUILDING, QUEUED, READY, IndexStore
from app.store.jobs import CANCELLED, FAILED, INTERRUPTED, JobNotFound
from app.store.tables import IndexRecord

if TYPE_CHECKING:  # a type only: the queue's job runner reaches this module
    from app.jobs.queue import JobQueue

ACTIVE_INDEX = (QUEUED, BUILDING)
GIST_CACHE = 50_000  # table lines kept (a few hundred bytes each)


class IndexService:
    def __init__(self, store: IndexStore, queue: JobQueue, data_dir: Path) -> None:
        self.store, self.queue, self.data_dir = store, queue, Path(data_dir)
        self._readers: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self._gists: dict[tuple[str, int, int, int], Any] = {}
        self._known: dict[str, Any] = {}  # index id -> its always-on flags

    # -- corpora -------------------------------------------------------------------------

    def save_upload(self, filename: str, data: bytes) -> tuple[Any, dict[str, Any]]:
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
        ref = {"kind": "file", "path": f"{CORPORA_DIR}/{target.name}", "name": corpus.name}
        return corpus, ref

    @staticmethod
    def default_corpus() -> tuple[Any, dict[str, Any]]:

        corpus = default_corpus()
        return corpus, {"kind": "default", "name": corpus.name}

    # -- builds --------------------------------------------------------------------------

    def build(self, model: str, revision: str, corpus: Any, ref: dict[str, Any],
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

    def _submit(self, row: IndexRecord, ref: dict[str, Any],
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

    # -- reading -------------------------------------------------------------------------

    def reader(self, model: str) -> Any | None:
        """The best index of a model, opened (None when it has none yet)."""
        row = self.store.usable(model)
        if row is None:
            return None
        return self.open(row)

    def open(self, row: IndexRecord) -> Any | None:

        path = self.data_dir / row.path
        with self._lock:
            cached = self._readers.get(row.id)
            if cached is not None and cached[0] == row.tokens_done:
                return cached[1]
            try:
                reader = Reader.open(path)
            except (FileNotFoundError, InputError, NotFound):
                return None  # nothing flushed yet
            self._readers[row.id] = (row.tokens_done, reader)
            return reader

    # -- what a neuron responds to ------------------------------------------------------

    def index_for(self, model: str, base: str | None) -> tuple[IndexRecord | None, Any]:
        """The model's own index, else its base model's (a fine-tune's neurons keep most
        of their meaning; the page says whose index it reads)."""
        for name in (model, base):
            if not name:
                continue
            row = self.store.usable(name)
            if row is not None:
                reader = self.open(row)
                if reader is not None:
                    return row, reader
        return None, None

    def known_always_on(self, model: str, base: str | None) -> Any | None:
        """The always-on flags of the model's (or its base's) *complete* index, for a
        circuit to drop beside the prompt's own; None while no index is complete (a
        growing index's counts would make runs depend on when they were asked)."""

        row, reader = self.index_for(model, base)
        if reader is None or not reader.meta.complete:
            return None
        cached = self._known.get(row.id)  # a complete index never changes
        if cached is not None:
            return cached
        reasons = {}
        for layer, neuron in sorted(reader.always_on()):
            why = reader.stats(layer, neuron).always_on_reason
            reasons[neuron_name(layer, neuron)] = why or "always-on in the index"
        meta = reader.meta
        source = (f"index {row.id[:8]} of {row.model} ({meta.corpus_name}, "
                  f"{meta.tokens_done:,} tokens)")
        known = self._known[row.id] = KnownAlwaysOn(source=source, reasons=reasons)
        return known

    def gists(self, model: str, base: str | None, keys: list[tuple[int, int]],
              neuron_gist: Callable[..., Any]) -> dict[tuple[int, int], Any]:
        """A one-line "responds to" per neuron for the neurons table (empty without an
        index), built by the view layer's ``neuron_gist``. Cached per index and neuron:
        the table re-renders on every filter."""
        row, reader = self.index_for(model, base)
        if reader is None:
            return {}
        flagged = reader.always_on()
        out = {}
        for layer, neuron in keys:
            if not (0 <= layer < reader.meta.n_layers and 0 <= neuron < reader.meta.n_neurons):
                continue
            cache_key = (row.id, reader.meta.tokens_done, layer, neuron)
            gist = self._gists.get(cache_key)
            if gist is None:
                if len(self._gists) > GIST_CACHE:
                    self._gists.clear()
                gist = self._gists[cache_key] = neuron_gist(
                    reader, layer, neuron, self.store.descriptions(row.model, layer, neuron),
                    (layer, neuron) in flagged)
            out[(layer, neuron)] = gist
        return out

    def building(self, model: str) -> IndexRecord | None:
        rows = [r for r in self.store.list(model) if r.state in ACTIVE_INDEX]
        return rows[0] if rows else None

    def meaning(self, model: str, base: str | None, layer: int, neuron: int,
                label: str | None, neuron_meaning: Callable[..., Any],
                k: int = 12) -> Any | None:
        """What the neuron responds to, as the view layer's ``neuron_meaning`` builds it
        from the model's (or its base's) index; None without one."""
        row, reader = self.index_for(model, base)
        if reader is None:
            return None
        check_neuron(reader, layer, neuron)
        stored = self.store.descriptions(row.model, layer, neuron)
        return neuron_meaning(reader, row, layer, neuron, label=label, stored=stored, k=k)

    def llm_description(self, model: str, base: str | None, layer: int, neuron: int,
                        endpoint: Any, promotes: list[str]) -> None:
        """Ask the operator's LLM endpoint for a description and store it (source "llm",
        with the prompt used); a human label still wins when shown."""

        row, reader = self.index_for(model, base)
        if reader is None:
            raise NotFound(f"no exemplar index for {model} yet: an LLM description is "
                           "written from the exemplars; build an index on /indexes")
        check_neuron(reader, layer, neuron)
        prompt = describe_prompt(layer, neuron, reader.exemplars(layer, neuron, 15), promotes)
        text = llm_describe(endpoint, prompt)
        self.store.describe(row.model, layer, neuron, "llm", text, index_id=row.id,
                            meta={"prompt": prompt, "endpoint": endpoint.url,
                                  "model": endpoint.model})
        self._gists.clear()  # the table shows the new description

    def description_meta(self, model: str, layer: int, neuron: int) -> dict[str, Any]:
        return self.store.description_meta(model, layer, neuron, "llm")

    def search(self, model: str, base: str | None, query: str,
               limit: int = 50) -> tuple[IndexRecord | None, list[Any]]:
        query = query.strip()
        if not query:
            raise InputError("type a word to search for, e.g. kidney", field="q")
        row, reader = self.index_for(model, base)
        if reader is None:
            raise NotFound(f"no exemplar index for {model} yet; build one on /indexes")
        return row, search_index(reader, query, limit)

    def corpus_file(self, key: str) -> tuple[Any, dict[str, Any]]:
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


def check_neuron(reader: Any, layer: int, neuron: int) -> None:
    n_layers, n_neurons = reader.meta.n_layers, reader.meta.n_neurons
    if not 0 <= layer < n_layers:
        raise InputError(f"layer must be between 0 and {n_layers - 1}", field="layer")
    if not 0 <= neuron < n_neurons:
        raise InputError(f"neuron must be between 0 and {n_neurons - 1}", field="neuron")


def run_candidates(result: Any, lm: Any, indexes: IndexService,
                   limit: int = 15) -> tuple[list[Any], IndexRecord | None]:
    """Concept candidates of a run (analysis/concepts.py) with the model's logit lens and,
    when the model (or its base) has an index, its exemplars and data description."""
    row, reader = indexes.index_for(lm.name, lm.spec.base)

    def lens(layer: int, neuron: int) -> tuple[list[str], list[str]]:
        d = describe_neuron(lm.model, lm.tokenizer, layer, neuron, top_k=10)
        return ([t.token or "" for t in d.promotes], [t.token or "" for t in d.suppresses])

    exemplars = describe = always_on = None
    if reader is not None:

        flagged = reader.always_on()

        def always_on(layer: int, neuron: int) -> str | None:
            if (layer, neuron) not in flagged:
                return None
            return reader.stats(layer, neuron).always_on_reason

        def exemplars(layer: int, neuron: int) -> list[Any]:
            return list(reader.exemplars(layer, neuron, 12))

        def describe(layer: int, neuron: int) -> str:
            return str(data_description(reader, layer, neuron))

    n_layers = int(lm.model.config.get_text_config().num_hidden_layers)
    found = concept_candidates(result, n_layers, logit_lens=lens, exemplars=exemplars,
                               describe=describe, always_on=always_on,
                               effects=effects_for(result, lm), limit=limit)
    return found, row


def promoted_tokens(lm: Any, layer: int, neuron: int) -> list[str]:
    """The tokens a neuron's output promotes (logit lens), best first."""

    check_model_neuron(lm.model, layer, neuron)
    return [t.token or "" for t in describe_neuron(lm.model, lm.tokenizer, layer, neuron,
                                                    top_k=10).promotes]


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


def index_status(indexes: IndexService, model: str, base: str | None) -> IndexStatus | None:
    """The model's (or its base's) index being built, with its job's rate and ETA; None
    when none is building."""
    for name in (model, base):
        row = indexes.building(name) if name else None
        if row is None:
            continue
        progress: dict[str, Any] = {}
        if row.job_id:
            with contextlib.suppress(JobNotFound):  # a deleted job leaves the row
                progress = indexes.queue.get(row.job_id).progress or {}
        return IndexStatus(model=row.model, corpus_name=row.corpus_name, state=row.state,
                           tokens_done=row.tokens_done, tokens_total=row.tokens_total or 0,
                           tokens_per_s=progress.get("tokens_per_s"),
                           eta_s=progress.get("eta_s"), job_id=row.job_id)
    return None
