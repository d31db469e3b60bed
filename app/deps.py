"""Typed access to the app's shared state from routes: routes read nothing from
``request.app.state`` themselves."""

from __future__ import annotations

from typing import Annotated

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


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_manager(request: Request) -> ModelManager:
    return request.app.state.manager  # type: ignore[no-any-return]


def templates_of(request: Request) -> Jinja2Templates:
    """The page templates (with the app's filters and globals)."""
    return request.app.state.templates  # type: ignore[no-any-return]


def get_labels(request: Request) -> LabelStore:
    return request.app.state.labels  # type: ignore[no-any-return]


def get_runs(request: Request) -> RunStore:
    return request.app.state.runs  # type: ignore[no-any-return]


def get_supernodes(request: Request) -> SupernodeStore:
    return request.app.state.supernodes  # type: ignore[no-any-return]


LabelsDep = Annotated[LabelStore, Depends(get_labels)]
RunsDep = Annotated[RunStore, Depends(get_runs)]
SupernodesDep = Annotated[SupernodeStore, Depends(get_supernodes)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ManagerDep = Annotated[ModelManager, Depends(get_manager)]
TemplatesDep = Annotated[Jinja2Templates, Depends(templates_of)]


def get_queue(request: Request) -> JobQueue:
    return request.app.state.jobs  # type: ignore[no-any-return]


QueueDep = Annotated[JobQueue, Depends(get_queue)]


def get_index_builds(request: Request) -> IndexBuilds:
    return request.app.state.index_builds  # type: ignore[no-any-return]


def get_index_readers(request: Request) -> IndexReaders:
    return request.app.state.index_readers  # type: ignore[no-any-return]


def get_neuron_meanings(request: Request) -> NeuronMeanings:
    return request.app.state.neuron_meanings  # type: ignore[no-any-return]


IndexBuildsDep = Annotated[IndexBuilds, Depends(get_index_builds)]
IndexReadersDep = Annotated[IndexReaders, Depends(get_index_readers)]
NeuronMeaningsDep = Annotated[NeuronMeanings, Depends(get_neuron_meanings)]
