"""Saved runs in the browser: the Runs list, permalinks, the re-filtered graph, the
neuron panel (label, description, edges, interventions) and exports."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from analysis.analyze import refilter
from analysis.attribution import CircuitResult, NeuronEdit, intervene, to_circuit_tracer
from analysis.attribution.logit_lens import check_model_neuron, describe_neuron
from analysis.attribution.paths import MAX_K, top_paths
from analysis.models import LoadedModel
from app.access import computes
from app.deps import (
    LabelsDep,
    ManagerDep,
    NeuronMeaningsDep,
    RunsDep,
    SettingsDep,
    templates_of,
)
from app.routes.web.rendering import render_run, run_gists
from app.services.runs import label_owner, load_result, stored_run
from app.store.runs import RunStore
from app.store.supernodes import SupernodeStore
from app.store.tables import Run
from frontend.graph import path_rows
from frontend.views import graph_view, neuron_panel, nodes_csv, run_view

router = APIRouter(include_in_schema=False)


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request, runs: RunsDep) -> HTMLResponse:
    return templates_of(request).TemplateResponse(
        request, "runs.html", {"runs": runs.listing()})


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: str, runs: RunsDep, manager: ManagerDep,
                   labels: LabelsDep, meanings: NeuronMeaningsDep,
                   settings: SettingsDep) -> HTMLResponse:
    """A run's permalink: the Analyze page with the form and the stored result."""
    return render_run(request, stored_run(runs, run_id), manager, labels, meanings, settings,
                      fragment=False)


def run_supernodes(runs: RunStore, run_id: str) -> list[dict[str, Any]]:
    """The run's named groups as {"name", "members"}, from the supernodes store."""
    return [{"name": r.name, "members": list(r.members or [])}
            for r in SupernodeStore(runs.sessions).listing(run_id)]


def collapse_names(collapse: list[str]) -> set[str]:
    """``collapse=a,b`` or ``collapse=a&collapse=b``: the supernodes drawn as one node."""
    return {name.strip() for item in collapse for name in item.split(",") if name.strip()}


@router.get("/runs/{run_id}/graph", response_class=HTMLResponse)
async def run_graph(
    request: Request, run_id: str, runs: RunsDep, manager: ManagerDep, labels: LabelsDep,
    meanings: NeuronMeaningsDep,
    tau: Annotated[float | None, Query(gt=0, le=1)] = None,
    edge_threshold: Annotated[float, Query(ge=0)] = 0.0,
    collapse: Annotated[list[str], Query(max_length=2000)] = [],  # noqa: B006 - FastAPI copies
) -> HTMLResponse:
    """The graph and the neurons table at a stricter tau / edge threshold, no recompute;
    the supernodes named in ``collapse`` drawn as one node each."""
    run = stored_run(runs, run_id)
    result = load_result(run, manager, labels)
    view = refilter(result, tau, edge_threshold)
    groups = run_supernodes(runs, run_id)
    return templates_of(request).TemplateResponse(request, "_graph.html", {
        "graph": graph_view(view, len(result.nodes), tau, edge_threshold,
                            supernodes=groups, collapsed=collapse_names(collapse),
                            gists=run_gists(meanings, manager, run.model, view)),
        "run": run_view(result, run_id)})


@router.get("/runs/{run_id}/paths", response_class=HTMLResponse)
async def run_paths(
    request: Request, run_id: str, runs: RunsDep, manager: ManagerDep, labels: LabelsDep,
    node: Annotated[str | None, Query(max_length=64)] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 5,
    tau: Annotated[float | None, Query(gt=0, le=1)] = None,
    edge_threshold: Annotated[float, Query(ge=0)] = 0.0,
) -> HTMLResponse:
    """The path view: the strongest paths through ``node`` (either way), and "why B":
    the strongest paths into the wrong answer, in the view's filter."""
    result = load_result(stored_run(runs, run_id), manager, labels)
    view = refilter(result, tau, edge_threshold)
    through = top_paths(view, through=node, k=k) if node else []
    why_b = (top_paths(view, through=node, k=k, towards="B")
             if result.target_b is not None else [])
    return templates_of(request).TemplateResponse(request, "_paths.html", {
        "node": node, "through": path_rows(view, through), "why_b": path_rows(view, why_b),
        "run": run_view(result, run_id)})


def _panel(request: Request, run: Run, result: CircuitResult, lm: LoadedModel,
           layer: int, neuron: int, position: int | None, label: str | None,
           saved: bool = False) -> HTMLResponse:
    description = describe_neuron(lm.model, lm.tokenizer, layer, neuron, top_k=8)
    panel = neuron_panel(result, layer, neuron, description, label, position)
    return templates_of(request).TemplateResponse(request, "_neuron_panel.html", {
        "panel": panel, "run": run_view(result, run.id), "saved": saved})


@router.get("/runs/{run_id}/neuron", response_class=HTMLResponse)
@computes
async def run_neuron(
    request: Request, run_id: str, runs: RunsDep, manager: ManagerDep, labels: LabelsDep,
    layer: Annotated[int, Query(ge=0)], neuron: Annotated[int, Query(ge=0)],
    position: Annotated[int | None, Query(ge=0)] = None,
) -> HTMLResponse:
    """The side panel for one neuron of a run."""
    run = stored_run(runs, run_id)
    result = load_result(run, manager, labels)

    def work(lm: LoadedModel) -> HTMLResponse:
        check_model_neuron(lm.model, layer, neuron)
        label = labels.get(label_owner(manager, run.model), layer, neuron)
        return _panel(request, run, result, lm, layer, neuron, position, label)

    return await manager.run(run.model, work)


@router.post("/runs/{run_id}/label", response_class=HTMLResponse)
async def run_label(
    request: Request, run_id: str, runs: RunsDep, manager: ManagerDep, labels: LabelsDep,
    layer: Annotated[int, Form(ge=0)], neuron: Annotated[int, Form(ge=0)],
    label: Annotated[str, Form(max_length=200)] = "",
    position: Annotated[int | None, Form(ge=0)] = None,
) -> HTMLResponse:
    """Save a neuron's label (empty deletes it) and show the panel again."""
    run = stored_run(runs, run_id)

    def work(lm: LoadedModel) -> HTMLResponse:
        check_model_neuron(lm.model, layer, neuron)
        labels.set(label_owner(manager, run.model), layer, neuron, label)
        result = load_result(run, manager, labels)
        return _panel(request, run, result, lm, layer, neuron, position, label.strip(),
                      saved=True)

    return await manager.run(run.model, work)


@router.post("/runs/{run_id}/intervene", response_class=HTMLResponse)
async def run_intervene(
    request: Request, run_id: str, runs: RunsDep, manager: ManagerDep,
    settings: SettingsDep,
    layer: Annotated[int, Form(ge=0)], neuron: Annotated[int, Form(ge=0)],
    scale: Annotated[float, Form(ge=-100, le=100)] = 0.0,
    position: Annotated[int | None, Form(ge=0)] = None,
) -> HTMLResponse:
    """Zero or scale one neuron (at one position, or all) and show top-k and m before and
    after, on the run's own tokens."""
    run = stored_run(runs, run_id)
    result = CircuitResult.model_validate(run.result)
    edit = NeuronEdit(layer=layer, neuron=neuron, scale=scale,
                      positions=[position] if position is not None else None)
    outcome = await manager.run(run.model, lambda lm: intervene(
        lm.model, lm.tokenizer, result.input_ids, [edit], result.target_a, result.target_b,
        top_k=10))
    return templates_of(request).TemplateResponse(request, "_intervention.html", {
        "r": outcome, "edit": edit, "run": run_view(result, run.id),
        "position_token": result.tokens[position].text if position is not None
        and position < len(result.tokens) else None})


EXPORTS = {"json": "application/json", "circuit-tracer.json": "application/json",
           "nodes.csv": "text/csv; charset=utf-8"}


@router.get("/runs/{run_id}/export/{kind}")
async def run_export(
    run_id: str, kind: str, runs: RunsDep, manager: ManagerDep, labels: LabelsDep,
    tau: Annotated[float | None, Query(gt=0, le=1)] = None,
    edge_threshold: Annotated[float, Query(ge=0)] = 0.0,
) -> Response:
    """Download a run: our JSON, the circuit-tracer/Neuronpedia graph JSON, or nodes CSV
    (at the view's filter when tau / edge_threshold are given)."""
    if kind not in EXPORTS:
        raise HTTPException(404, f"unknown export {kind!r}; choose one of {', '.join(EXPORTS)}")
    run = stored_run(runs, run_id)
    result = refilter(load_result(run, manager, labels), tau, edge_threshold)
    if kind == "json":
        body = result.model_dump_json(indent=1)
    elif kind == "circuit-tracer.json":
        body = json.dumps(to_circuit_tracer(result, slug=run.id))
    else:
        body = nodes_csv(result)
    filename = f"circuitlab-{run.id[:8]}-{kind}"
    return Response(body, media_type=EXPORTS[kind],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
