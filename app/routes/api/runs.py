"""Circuit runs over JSON: attribute (or reuse the stored identical run), read a stored
run and its re-filtered graph, and intervene on a prompt."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from analysis.analyze import (
    estimate_request,
    intervene_on_prompt,
    refilter,
)
from analysis.attribution import (
    CircuitResult,
    InterventionResult,
    NeuronEdit,
    to_circuit_tracer,
)
from analysis.attribution.paths import MAX_K, CircuitPath, top_paths
from analysis.estimate import Estimate, check_size
from app.deps import IndexReadersDep, LabelsDep, ManagerDep, RunsDep, SettingsDep
from app.schemas import AttributeRequest, InterveneRequest, prompt_spec
from app.services.runs import circuit_request, compute_or_reuse, run_payload, stored_run

router = APIRouter(prefix="/api/v1", tags=["circuits"])


@router.post("/attribute")
async def attribute_route(body: AttributeRequest, manager: ManagerDep, settings: SettingsDep,
                          runs: RunsDep, labels: LabelsDep,
                          readers: IndexReadersDep) -> dict[str, Any]:
    """Contrastive attribution of one prompt: nodes, edges, faithfulness; saved as a run."""
    req = circuit_request(body)

    def work(lm: Any) -> tuple[Any, bool, Estimate]:
        expected = estimate_request(lm, req, settings.circuit_limits)
        run, cached = compute_or_reuse(lm, req, body.use_cache, settings, runs, labels,
                                       readers)
        return run, cached, expected

    run, cached, expected = await manager.run(body.model or settings.default_model, work)
    return {**run_payload(run, cached), "estimate": expected.model_dump(mode="json")}


@router.post("/estimate")
async def estimate_route(body: AttributeRequest, manager: ManagerDep,
                         settings: SettingsDep) -> Estimate:
    """Expected time and memory of an /attribute request on the serving device (from the
    growth benchmark's fitted cost model), without running it. A request over a limit
    (max_prompt_tokens, max_nodes, max_edge_pairs) is answered 413 here as /attribute
    would answer it."""
    req = circuit_request(body)
    limits = settings.circuit_limits

    def work(lm: Any) -> Estimate:
        expected = estimate_request(lm, req, limits)
        check_size(req.settings, limits.max_nodes, limits.max_edge_pairs)
        return expected

    return await manager.run(body.model or settings.default_model, work)


@router.get("/runs/{run_id}")
async def get_run(run_id: str, runs: RunsDep) -> dict[str, Any]:
    return run_payload(stored_run(runs, run_id), cached=True)


@router.get("/graph")
async def graph_route(
    run_id: Annotated[str, Query(max_length=32)],
    runs: RunsDep,
    format: Literal["circuitlab", "circuit-tracer"] = "circuitlab",
    tau: Annotated[float | None, Query(gt=0, le=1)] = None,
    edge_threshold: Annotated[float | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    """A stored run's graph, optionally re-filtered (stricter tau / edge threshold) without
    recomputing; `format=circuit-tracer` gives the Neuronpedia graph JSON."""
    result = CircuitResult.model_validate(stored_run(runs, run_id).result)
    view = refilter(result, tau, edge_threshold)
    if format == "circuit-tracer":
        return to_circuit_tracer(view, slug=run_id)
    return view.model_dump(mode="json")


@router.get("/runs/{run_id}/paths")
async def paths_route(
    run_id: str, runs: RunsDep,
    node: Annotated[str | None, Query(max_length=64, description="e.g. L16/N1998@12")] = None,
    towards: Literal["A", "B"] | None = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 5,
    tau: Annotated[float | None, Query(gt=0, le=1)] = None,
    edge_threshold: Annotated[float | None, Query(ge=0)] = None,
) -> list[CircuitPath]:
    """The k strongest paths from the embeddings to m (through ``node`` if given; only
    those pushing ``towards`` one answer if given: ``towards=B`` is "why B"). A path's
    score is rest x product of activation shares x direct effect, in logit units (see
    analysis/attribution/paths.py)."""
    result = CircuitResult.model_validate(stored_run(runs, run_id).result)
    return top_paths(refilter(result, tau, edge_threshold), through=node, k=k,
                     towards=towards)


@router.post("/intervene")
async def intervene_route(body: InterveneRequest, manager: ManagerDep,
                          settings: SettingsDep) -> InterventionResult:
    """Re-run a prompt with neurons zeroed or scaled; new top-k and m beside the old."""
    edits = [NeuronEdit(**e.model_dump()) for e in body.edits]
    spec = prompt_spec(body)
    return await manager.run(
        body.model or settings.default_model,
        lambda lm: intervene_on_prompt(lm, spec, edits, body.answer_a, body.answer_b,
                                       body.top_k, settings.limits, settings.circuit_limits),
    )


