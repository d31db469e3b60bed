"""A run's supernodes over JSON: list, create, delete, intervene on one, and automatic
suggestions from community detection over the run's graph."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from analysis.attribution import InterventionResult
from analysis.attribution.groups import GroupScale, GroupSpec, SuggestedGroup
from app.deps import ManagerDep, RunsDep, SupernodesDep
from app.services import supernodes as groups
from app.services.runs import stored_run

router = APIRouter(prefix="/api/v1/runs/{run_id}", tags=["supernodes"])


@router.get("/supernodes")
async def list_supernodes(run_id: str, runs: RunsDep,
                          store: SupernodesDep) -> list[dict[str, Any]]:
    run = stored_run(runs, run_id)
    result = groups.run_result(run)
    return [groups.payload(row, result) for row in store.listing(run.id)]


@router.post("/supernodes", status_code=201)
async def create_supernode(run_id: str, body: GroupSpec, runs: RunsDep,
                           store: SupernodesDep) -> dict[str, Any]:
    """Group nodes the run kept under a name (1..80 characters, 1..200 members)."""
    run = stored_run(runs, run_id)
    return groups.payload(groups.create(store, run, body), groups.run_result(run))


@router.delete("/supernodes/{supernode_id}", status_code=204)
async def delete_supernode(run_id: str, supernode_id: int, runs: RunsDep,
                           store: SupernodesDep) -> Response:
    run = stored_run(runs, run_id)
    groups.stored(store, run.id, supernode_id)
    store.delete(run.id, supernode_id)
    return Response(status_code=204)


@router.post("/supernodes/{supernode_id}/intervene")
async def intervene_supernode(run_id: str, supernode_id: int, body: GroupScale,
                              runs: RunsDep, store: SupernodesDep,
                              manager: ManagerDep) -> InterventionResult:
    """Zero or scale the whole group on the run's tokens: m, P(A), P(B) and the top-k
    before and after, as /api/v1/intervene answers."""
    run = stored_run(runs, run_id)
    row = groups.stored(store, run.id, supernode_id)
    return await groups.intervene_group(manager, run, row, body)


@router.get("/supernode-suggestions")
async def supernode_suggestions(run_id: str, runs: RunsDep) -> list[SuggestedGroup]:
    return groups.suggestions(stored_run(runs, run_id))
