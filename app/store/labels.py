"""User-written neuron labels, keyed by (base model, layer, neuron)."""

from __future__ import annotations

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from app.store.tables import NeuronLabel


class LabelStore:
    """User-written neuron labels, keyed by (model, layer, neuron)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get(self, model: str, layer: int, neuron: int) -> str | None:
        with self.sessions() as s:
            row = s.scalar(select(NeuronLabel).filter_by(model=model, layer=layer,
                                                         neuron=neuron))
            return row.label if row else None

    def many(self, model: str, keys: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        if not keys:
            return {}
        layers = {k[0] for k in keys}
        with self.sessions() as s:
            rows = s.scalars(select(NeuronLabel).where(NeuronLabel.model == model,
                                                       NeuronLabel.layer.in_(layers)))
            wanted = set(keys)
            return {(r.layer, r.neuron): r.label for r in rows if (r.layer, r.neuron) in wanted}

    def set(self, model: str, layer: int, neuron: int, label: str) -> None:
        """Save a label; an empty label deletes it."""
        with self.sessions.begin() as s:
            row = s.scalar(select(NeuronLabel).filter_by(model=model, layer=layer,
                                                         neuron=neuron))
            if not label.strip():
                if row:
                    s.delete(row)
                return
            if row:
                row.label = label.strip()
            else:
                s.add(NeuronLabel(model=model, layer=layer, neuron=neuron,
                                  label=label.strip()))
