"""Alembic environment: migrations run programmatically from app.store.tables.init_db."""

from __future__ import annotations

from alembic import context

from app.store.tables import Base, make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "init_db sets sqlalchemy.url"

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
