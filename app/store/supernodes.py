"""Supernodes: named groups of one run's nodes, stored with the run (deleted with it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from analysis.errors import InputError
from app.store.tables import Supernode


class SupernodeStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def listing(self, run_id: str) -> list[Supernode]:
        """A run's groups, oldest first (the order they were made)."""
        with self.sessions() as s:
            return list(s.scalars(select(Supernode).filter_by(run_id=run_id)
                                  .order_by(Supernode.id)))

    def get(self, run_id: str, supernode_id: int) -> Supernode | None:
        with self.sessions() as s:
            row = s.get(Supernode, supernode_id)
            return row if row is not None and row.run_id == run_id else None

    def add(self, run_id: str, name: str, members: list[dict[str, Any]]) -> Supernode:
        """Save a group; a second group of the same name on the run is refused."""
        row = Supernode(run_id=run_id, name=name, members=members)
        try:
            with self.sessions.begin() as s:
                s.add(row)
        except IntegrityError as exc:
            raise InputError(f"this run already has a group named {name!r}; pick another "
                             "name or delete that group", field="name") from exc
        return row

    def delete(self, run_id: str, supernode_id: int) -> bool:
        with self.sessions.begin() as s:
            row = s.get(Supernode, supernode_id)
            if row is None or row.run_id != run_id:
                return False
            s.delete(row)
            return True
