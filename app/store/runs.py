"""Stored runs: analyses, comparisons and their cache keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from app.store.tables import Run


@dataclass
class RunSummary:
    id: str
    created_at: datetime
    model: str
    prompt: str
    answer_a: str | None
    answer_b: str | None
    method: str | None
    metric: float | None
    influence_sum: float | None


class RunStore:
    """Saved analyses: looked up by id (permalinks) or by cache key (no recomputation)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def by_key(self, key: str) -> Run | None:
        with self.sessions() as s:
            return s.scalar(select(Run).filter_by(cache_key=key))

    def get(self, run_id: str) -> Run | None:
        with self.sessions() as s:
            return s.get(Run, run_id)

    def listing(self, limit: int = 200, kind: str = "attribution") -> list[RunSummary]:
        """The Runs page's rows, newest first, without loading each run's result JSON."""
        cols = (Run.id, Run.created_at, Run.model, Run.prompt, Run.answer_a, Run.answer_b,
                Run.method, Run.metric, Run.influence_sum)
        with self.sessions() as s:
            rows = s.execute(select(*cols).where(Run.kind == kind)
                             .order_by(Run.created_at.desc()).limit(limit))
            return [RunSummary(*row) for row in rows]

    def add(self, run: Run) -> Run:
        """Get or create by cache key: a run whose key is stored already is that stored run
        (an identical request returns the stored run); otherwise it is inserted. A run
        without a key is always inserted. A race on the key returns the winner."""
        from sqlalchemy.exc import IntegrityError

        if run.cache_key and (existing := self.by_key(run.cache_key)) is not None:
            return existing
        try:
            with self.sessions.begin() as s:
                s.add(run)
            return run
        except IntegrityError:
            existing = self.by_key(run.cache_key) if run.cache_key else None
            if existing is None:
                raise
            return existing
