"""The schema migrates and the label store works on SQLite and on the real PostgreSQL
server this machine kind runs (skipped only where no server answers, never in CI)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from app.store.labels import LabelStore
from app.store.tables import init_db

PG_ADMIN_URL = os.environ.get(
    "CIRCUITLAB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_url() -> Iterator[str]:
    try:
        import psycopg  # noqa: F401

        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text("select 1"))
    except Exception as exc:  # any failure means "no server here"
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is expected in CI but not reachable: {exc}")
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN_URL}: {exc}")
    name = f"circuitlab_test_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'create database "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'c.db'}"
    else:
        yield from _pg_url()


def test_migrations_create_the_schema_idempotently(db_url: str) -> None:
    init_db(db_url)
    init_db(db_url)  # a second start finds the schema current and changes nothing
    tables = set(inspect(create_engine(db_url)).get_table_names())
    assert {"runs", "variants", "jobs", "job_metrics", "neuron_labels", "neuron_indexes",
            "neuron_descriptions", "supernodes", "alembic_version"} <= tables


def test_migrations_match_the_declared_tables(db_url: str) -> None:
    """The ORM classes and the Alembic revisions describe one schema: autogenerate finds
    no table or column that one has and the other lacks."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.store.tables import Base

    init_db(db_url)
    with create_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    structural = [d for d in diff if isinstance(d, tuple)
                  and d[0] in ("add_table", "remove_table", "add_column", "remove_column")]
    assert structural == []


def test_labels_round_trip(db_url: str) -> None:
    labels = LabelStore(init_db(db_url))
    assert labels.get("m", 3, 7) is None
    labels.set("m", 3, 7, "  kidney functionality ")
    labels.set("m", 4, 1, "hormone definitions")
    labels.set("other", 3, 7, "not this one")
    assert labels.get("m", 3, 7) == "kidney functionality"
    labels.set("m", 3, 7, "kidney")
    assert labels.many("m", [(3, 7), (4, 1), (5, 5)]) == {(3, 7): "kidney",
                                                         (4, 1): "hormone definitions"}
    labels.set("m", 3, 7, "")
    assert labels.get("m", 3, 7) is None
