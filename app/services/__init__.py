"""What both kinds of route (JSON and HTML) and the CLI call: resident models, runs and
labels, comparisons, exemplar indexes (``index_builds``, ``index_readers``,
``neuron_meanings``), probes and drafts. No FastAPI request objects here.

:func:`build_services` makes the database, its stores, the model manager and the index
readers once, for ``create_app`` and the CLI alike (so a circuit drops the same index-flagged
always-on neurons from either); ``create_app`` adds the job queue, the index builds and the
neurons' meanings over them (the CLI builds an index without them)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.services.index_readers import IndexReaders
from app.services.model_manager import ModelManager
from app.settings import Settings
from app.store.indexes import IndexStore
from app.store.labels import LabelStore
from app.store.runs import RunStore
from app.store.supernodes import SupernodeStore
from app.store.tables import init_db
from app.store.variants import VariantStore


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    manager: ModelManager
    runs: RunStore
    labels: LabelStore
    variants: VariantStore
    supernodes: SupernodeStore
    index_store: IndexStore
    # The exemplar indexes' readers: their always-on flags join every circuit of the model
    # (a run, a comparison), from the server and the CLI alike.
    index_readers: IndexReaders


def build_services(settings: Settings) -> Services:
    """The database (migrated), its stores, and the model manager that also finds the
    variants finished jobs registered."""
    sessions = init_db(settings.db_url())
    variants = VariantStore(sessions, settings.cache_dir)
    manager = ModelManager(settings.registry(), settings.cache_dir,
                           settings.max_resident_models, discover=variants.specs,
                           queue=settings.model_queue)
    manager.refresh()
    index_store = IndexStore(sessions)
    return Services(settings=settings, sessions=sessions, manager=manager,
                    runs=RunStore(sessions), labels=LabelStore(sessions), variants=variants,
                    supernodes=SupernodeStore(sessions), index_store=index_store,
                    index_readers=IndexReaders(index_store, settings.data_dir))
