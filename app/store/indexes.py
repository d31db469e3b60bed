"""Exemplar indexes (one per model, revision and corpus) and machine-written neuron
descriptions. The index's arrays live on disk under the data directory; a row here says
where, how far the build got and in which state it is."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from analysis.errors import NotFound
from app.store.jobs import json_safe
from app.store.tables import IndexRecord, NeuronDescription, _now

# queued -> building -> ready; or failed / cancelled / interrupted (resumable: a new
# build of the same triple continues from the on-disk checkpoint).
QUEUED, BUILDING, READY = "queued", "building", "ready"
ENDED_BADLY = ("failed", "cancelled", "interrupted")


class IndexStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def find(self, model: str, revision: str, corpus_key: str) -> IndexRecord | None:
        with self.sessions() as s:
            return s.scalar(select(IndexRecord).filter_by(model=model, revision=revision,
                                                          corpus_key=corpus_key))

    def get(self, index_id: str) -> IndexRecord | None:
        with self.sessions() as s:
            return s.get(IndexRecord, index_id)

    def require(self, index_id: str) -> IndexRecord:
        row = self.get(index_id)
        if row is None:
            raise NotFound(f"no neuron index {index_id[:64]!r}; see /indexes for the list")
        return row

    def list(self, model: str | None = None) -> list[IndexRecord]:
        q = select(IndexRecord).order_by(IndexRecord.created_at.desc())
        if model is not None:
            q = q.where(IndexRecord.model == model)
        with self.sessions() as s:
            return list(s.scalars(q))

    def usable(self, model: str) -> IndexRecord | None:
        """The index to read for a model: a finished one first, else the one that has
        seen the most tokens (an index is readable while it grows)."""
        rows = [r for r in self.list(model) if r.tokens_done > 0]
        rows.sort(key=lambda r: (r.state == READY, r.tokens_done), reverse=True)
        return rows[0] if rows else None

    def create(self, *, model: str, revision: str, corpus_key: str, corpus_name: str,
               path: str, meta: dict[str, Any]) -> IndexRecord:
        row = IndexRecord(model=model, revision=revision, corpus_key=corpus_key,
                          corpus_name=corpus_name, path=path, state=QUEUED,
                          meta=json_safe(meta))
        with self.sessions.begin() as s:
            s.add(row)
        return row

    def update(self, index_id: str, **fields: Any) -> None:
        with self.sessions.begin() as s:
            row = s.get(IndexRecord, index_id)
            if row is None:
                return
            for key, value in fields.items():
                setattr(row, key, json_safe(value) if key == "meta" else value)
            row.updated_at = _now()

    def delete(self, index_id: str) -> None:
        with self.sessions.begin() as s:
            row = s.get(IndexRecord, index_id)
            if row is not None:
                s.delete(row)

    # -- descriptions ------------------------------------------------------------------

    def describe(self, model: str, layer: int, neuron: int, source: str, text: str,
                 index_id: str | None = None, meta: dict[str, Any] | None = None) -> None:
        with self.sessions.begin() as s:
            row = s.scalar(select(NeuronDescription).filter_by(
                model=model, layer=layer, neuron=neuron, source=source))
            if row is None:
                row = NeuronDescription(model=model, layer=layer, neuron=neuron,
                                        source=source)
                s.add(row)
            row.text, row.index_id, row.meta = text, index_id, json_safe(meta or {})
            row.updated_at = _now()

    def descriptions(self, model: str, layer: int, neuron: int) -> dict[str, str]:
        """Source -> text for one neuron ("data", "llm")."""
        with self.sessions() as s:
            rows = s.scalars(select(NeuronDescription).filter_by(
                model=model, layer=layer, neuron=neuron))
            return {r.source: r.text for r in rows}

    def description_meta(self, model: str, layer: int, neuron: int,
                         source: str) -> dict[str, Any]:
        with self.sessions() as s:
            row = s.scalar(select(NeuronDescription).filter_by(
                model=model, layer=layer, neuron=neuron, source=source))
            return dict(row.meta or {}) if row else {}
