"""Fine-tuned variants registered at run time (by correction jobs), stored in the database.

The operator's config registers models up front; a finished job adds a ``variants`` row
instead, and the model manager picks it up by name through :meth:`VariantStore.specs`.
Paths are stored relative to the models cache and are never shown to users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from analysis.errors import InputError
from analysis.models import ModelSpec
from app.store.tables import Variant


class VariantStore:
    def __init__(self, sessions: sessionmaker[Session], cache_dir: Path) -> None:
        self.sessions = sessions
        self.cache_dir = cache_dir

    def add(self, name: str, kind: str, base: str, path: Path, job_id: str | None = None,
            meta: dict[str, Any] | None = None) -> Variant:
        """Register a variant whose files are already in place under the models cache."""
        try:
            relative = path.resolve().relative_to(self.cache_dir.resolve())
        except ValueError as exc:
            raise InputError(f"variant files must live under the models cache "
                             f"({self.cache_dir})", field="path") from exc
        ModelSpec(name=name, source="local", path=relative, kind=kind,  # type: ignore[arg-type]
                  base=base)  # validates the name and kind before anything is stored
        row = Variant(name=name, kind=kind, base=base, path=str(relative), job_id=job_id,
                      meta=meta or {})
        with self.sessions.begin() as s:
            if s.get(Variant, name) is not None:
                raise InputError(f"a variant named {name!r} already exists", field="name")
            s.add(row)
        return row

    def specs(self) -> list[ModelSpec]:
        """Every stored variant as a registry entry (skipping rows whose files are gone)."""
        with self.sessions() as s:
            rows = list(s.scalars(select(Variant).order_by(Variant.created_at)))
        out = []
        for row in rows:
            if not (self.cache_dir / row.path).is_dir():
                continue
            out.append(ModelSpec(
                name=row.name, source="local", path=Path(row.path),
                kind=row.kind,  # type: ignore[arg-type]
                base=row.base, description=str((row.meta or {}).get("description", "")),
            ))
        return out
