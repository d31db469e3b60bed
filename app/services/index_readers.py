"""Exemplar indexes opened for reading: a model's best index (or its base model's), and
the always-on flags of a complete one.

Both are cached per *version* of an index row (:class:`IndexVersion`: its id, path,
tokens seen and state). Rows are read from the store on every call, so an index that has
grown, or has finished (its last snapshot is written after its last progress report, so
only the state tells), is a new version and is opened afresh: a page never reads a stale
snapshot. A row that is gone is never looked up again; its reader ages out of the cache.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from analysis.attribution.always_on import KnownAlwaysOn
from analysis.errors import InputError, NotFound
from analysis.neuron_ref import neuron_name
from analysis.neurons.index import NeuronIndex
from app.store.indexes import IndexStore
from app.store.tables import IndexRecord

READERS_KEPT = 8  # opened versions kept (a growing index is a new version per report)
FLAGS_KEPT = 16  # complete indexes whose always-on flags are kept


@dataclass(frozen=True)
class IndexVersion:
    """An index row as far as its files go: a new version is opened again."""

    index_id: str
    model: str
    path: str
    tokens_done: int
    state: str

    @classmethod
    def of(cls, row: IndexRecord) -> IndexVersion:
        return cls(index_id=row.id, model=row.model, path=row.path,
                   tokens_done=row.tokens_done, state=row.state)


class IndexReaders:
    def __init__(self, store: IndexStore, data_dir: Path) -> None:
        self.store, self.data_dir = store, Path(data_dir)
        self._lock = threading.Lock()  # one open per version, however many pages ask
        self._opened = lru_cache(maxsize=READERS_KEPT)(self._open_version)
        self._flags = lru_cache(maxsize=FLAGS_KEPT)(self._always_on_flags)

    def reader(self, model: str) -> NeuronIndex | None:
        """The best index of a model, opened (None when it has none yet)."""
        row = self.store.usable(model)
        if row is None:
            return None
        return self.open(row)

    def open(self, row: IndexRecord) -> NeuronIndex | None:
        """The row's index as it is now (None while nothing is flushed yet)."""
        try:
            return self.at(IndexVersion.of(row))
        except (FileNotFoundError, InputError, NotFound):
            return None

    def at(self, version: IndexVersion) -> NeuronIndex:
        """One version of an index, opened once (raises while nothing is flushed: a
        failed open is not cached)."""
        with self._lock:
            return self._opened(version)

    def _open_version(self, version: IndexVersion) -> NeuronIndex:
        return NeuronIndex.open(self.data_dir / version.path)

    def index_for(self, model: str,
                  base: str | None) -> tuple[IndexRecord | None, NeuronIndex | None]:
        """The model's own index, else its base model's (a fine-tune's neurons keep most
        of their meaning; the page says whose index it reads); (None, None) without
        either."""
        for name in (model, base):
            if not name:
                continue
            row = self.store.usable(name)
            if row is not None:
                reader = self.open(row)
                if reader is not None:
                    return row, reader
        return None, None

    def known_always_on(self, model: str, base: str | None) -> KnownAlwaysOn | None:
        """The always-on flags of the model's (or its base's) *complete* index, for a
        circuit to drop beside the prompt's own; None while no index is complete (a
        growing index's counts would make runs depend on when they were asked)."""

        row, reader = self.index_for(model, base)
        if row is None or reader is None or not reader.meta.complete:
            return None
        return self._flags(IndexVersion.of(row))  # a complete index never changes

    def _always_on_flags(self, version: IndexVersion) -> KnownAlwaysOn:
        reader = self.at(version)
        reasons = {}
        for layer, neuron in sorted(reader.always_on()):
            why = reader.stats(layer, neuron).always_on_reason
            reasons[neuron_name(layer, neuron)] = why or "always-on in the index"
        meta = reader.meta
        source = (f"index {version.index_id[:8]} of {version.model} ({meta.corpus_name}, "
                  f"{meta.tokens_done:,} tokens)")
        return KnownAlwaysOn(source=source, reasons=reasons)
