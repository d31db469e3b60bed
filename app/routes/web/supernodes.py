"""A run's supernodes in the browser (htmx partials for the graph page): the groups with
their members and zero/scale/delete buttons, the suggested groups with a one-click save,
and group interventions rendered like a single neuron's."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from analysis.attribution.groups import GroupScale, GroupSpec
from analysis.errors import CircuitlabError, InputError, input_error
from app.deps import ManagerDep, RunsDep, SupernodesDep, templates_of
from app.services import supernodes as groups
from app.services.runs import stored_run
from app.store.supernodes import SupernodeStore
from app.store.tables import Run
from frontend.views import run_view

router = APIRouter(include_in_schema=False)


def _checked(model: type[GroupSpec] | type[GroupScale], values: dict[str, Any]) -> Any:
    """Form values into a request model; the first problem is an InputError naming its
    field, which the page shows next to the form."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise input_error(exc) from exc


def _members(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("members must be a JSON list like "
                         '[{"layer": 3, "neuron": 12, "position": null}]',
                         field="members") from exc


def _partial(request: Request, run: Run, store: SupernodeStore,
             error: CircuitlabError | None = None, message: str | None = None) -> HTMLResponse:
    result = groups.run_result(run)
    suggestions = groups.suggestions(run)
    return templates_of(request).TemplateResponse(request, "_supernodes.html", {
        "run_id": run.id,
        "groups": [groups.payload(row, result) for row in store.listing(run.id)],
        "suggestions": [{**s.model_dump(), "members_json": json.dumps(
            [m.model_dump() for m in s.members])} for s in suggestions],
        "error": error, "message": message,
    }, status_code=error.status if error else 200)


@router.get("/runs/{run_id}/supernodes", response_class=HTMLResponse)
async def supernodes_partial(request: Request, run_id: str, runs: RunsDep,
                             store: SupernodesDep) -> HTMLResponse:
    return _partial(request, stored_run(runs, run_id), store)


@router.post("/runs/{run_id}/supernodes", response_class=HTMLResponse)
async def create_supernode(
    request: Request, run_id: str, runs: RunsDep, store: SupernodesDep,
    name: Annotated[str, Form(max_length=200)] = "",
    members: Annotated[str, Form(max_length=100_000)] = "",
) -> HTMLResponse:
    """Save a group; a mistake re-renders the groups with the message by its field."""
    run = stored_run(runs, run_id)
    try:
        spec = _checked(GroupSpec, {"name": name, "members": _members(members)})
        row = groups.create(store, run, spec)
    except CircuitlabError as exc:
        return _partial(request, run, store, error=exc)
    return _partial(request, run, store, message=f"Saved group {row.name!r}.")


@router.post("/runs/{run_id}/supernodes/{supernode_id}/delete", response_class=HTMLResponse)
async def delete_supernode(request: Request, run_id: str, supernode_id: int, runs: RunsDep,
                           store: SupernodesDep) -> HTMLResponse:
    run = stored_run(runs, run_id)
    row = groups.stored(store, run.id, supernode_id)
    store.delete(run.id, supernode_id)
    return _partial(request, run, store, message=f"Deleted group {row.name!r}.")


@router.post("/runs/{run_id}/supernodes/{supernode_id}/intervene",
             response_class=HTMLResponse)
async def intervene_supernode(
    request: Request, run_id: str, supernode_id: int, runs: RunsDep, store: SupernodesDep,
    manager: ManagerDep,
    mode: Annotated[str, Form(max_length=16)] = "zero",
    factor: Annotated[str, Form(max_length=32)] = "0",
) -> HTMLResponse:
    """Zero or scale the whole group; the result reads like a single neuron's."""
    run = stored_run(runs, run_id)
    row = groups.stored(store, run.id, supernode_id)
    how = _checked(GroupScale, {"mode": mode, "factor": factor or "0"})
    outcome = await groups.intervene_group(manager, run, row, how)
    result = groups.run_result(run)
    return templates_of(request).TemplateResponse(request, "_intervention.html", {
        "r": outcome, "group": row, "edit": {"scale": how.scale},
        "run": run_view(result, run.id), "position_token": None})
