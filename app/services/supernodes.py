"""Supernodes of a stored run, for the JSON and the HTML routes alike: make one (every
member a node the run kept), list, delete, suggest, and zero or scale one on the run's
own tokens."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from analysis.attribution import CircuitResult, InterventionResult, intervene
from analysis.attribution.groups import (
    GroupScale,
    GroupSpec,
    SuggestedGroup,
    group_edits,
    member_nodes,
    suggest_groups,
)
from analysis.errors import NotFound
from app.services.model_manager import ModelManager
from app.store.supernodes import SupernodeStore
from app.store.tables import Run, Supernode


def run_result(run: Run) -> CircuitResult:
    return CircuitResult.model_validate(run.result)


def create(store: SupernodeStore, run: Run, spec: GroupSpec) -> Supernode:
    member_nodes(run_result(run), spec.members)  # refuses a member the run did not keep
    return store.add(run.id, spec.name, [m.model_dump() for m in spec.members])


def stored(store: SupernodeStore, run_id: str, supernode_id: int) -> Supernode:
    row = store.get(run_id, supernode_id)
    if row is None:
        raise NotFound(f"run {run_id!r} has no group with id {supernode_id}")
    return row


def payload(row: Supernode, result: CircuitResult) -> dict[str, Any]:
    """A group as the API returns it, with the nodes it covers on its run."""
    spec = GroupSpec(name=row.name, members=row.members)
    nodes = member_nodes(result, spec.members)
    influence = float(sum(n.influence for n in nodes))
    return {"id": row.id, "run_id": row.run_id, "name": row.name,
            "members": [m.model_dump() for m in spec.members],
            "created_at": row.created_at.isoformat(),
            "nodes": sorted(n.node_id for n in nodes), "influence": influence,
            "towards": "A" if influence > 0 else "B"}


# A stored run never changes, so its suggestions are computed once per process (the
# partial re-renders them after every save and delete).
_SUGGESTIONS: OrderedDict[str, list[SuggestedGroup]] = OrderedDict()
_SUGGESTIONS_KEPT = 64


def suggestions(run: Run) -> list[SuggestedGroup]:
    if run.id not in _SUGGESTIONS:
        _SUGGESTIONS[run.id] = suggest_groups(run_result(run))
        while len(_SUGGESTIONS) > _SUGGESTIONS_KEPT:
            _SUGGESTIONS.popitem(last=False)
    _SUGGESTIONS.move_to_end(run.id)
    return [g.model_copy(deep=True) for g in _SUGGESTIONS[run.id]]


async def intervene_group(manager: ModelManager, run: Run, row: Supernode,
                          how: GroupScale, top_k: int = 10) -> InterventionResult:
    """Zero or scale every member at once: m, P(A), P(B) and top-k before and after."""
    result = run_result(run)
    edits = group_edits(result, GroupSpec(name=row.name, members=row.members).members,
                        how.scale)
    return await manager.run(run.model, lambda lm: intervene(
        lm.model, lm.tokenizer, result.input_ids, edits, result.target_a, result.target_b,
        top_k=top_k))
