"""Typed access to the app's shared state from routes: routes read nothing from
``request.app.state`` themselves."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from app.jobs.queue import JobQueue
from app.services.index_builds import IndexBuilds
from app.services.index_readers import IndexReaders
from app.services.model_manager import ModelManager
from app.services.neuron_meanings import NeuronMeanings
from app.settings import Settings
from app.store.labels import LabelStore
from app.store.runs import RunStore
from app.store.supernodes import SupernodeStore


def templates_of(request: Request) -> Jinja2Templates:
    """The page templates (with the app's filters and globals)."""
    return request.app.state.templates  # type: ignore[no-any-return]


def _state(name: str) -> Any:
    """A dependency reading ``request.app.state.<name>``, set once by ``create_app``."""

    def read(request: Request) -> Any:
        return getattr(request.app.state, name)

    read.__name__ = f"state_{name}"
    return Depends(read)


SettingsDep = Annotated[Settings, _state("settings")]
ManagerDep = Annotated[ModelManager, _state("manager")]
TemplatesDep = Annotated[Jinja2Templates, Depends(templates_of)]
LabelsDep = Annotated[LabelStore, _state("labels")]
RunsDep = Annotated[RunStore, _state("runs")]
SupernodesDep = Annotated[SupernodeStore, _state("supernodes")]
QueueDep = Annotated[JobQueue, _state("jobs")]
# Exemplar indexes: builds (jobs in the queue), readers (and their always-on flags), and
# what a neuron means (gists, descriptions, search).
IndexBuildsDep = Annotated[IndexBuilds, _state("index_builds")]
IndexReadersDep = Annotated[IndexReaders, _state("index_readers")]
NeuronMeaningsDep = Annotated[NeuronMeanings, _state("neuron_meanings")]
