"""JSON API for circuits: attribute, stored runs and graphs, interventions, neurons."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query

from analysis.analyze import (
    CircuitRequest,
    analyze,
    describe,
    intervene_on_prompt,
    prepare,
    refilter,
)
from analysis.attribution import CircuitResult, CircuitSettings, InterventionResult, NeuronEdit
from analysis.attribution.describe import check_model_neuron
from analysis.models import LoadedModel
from analysis.prompts import PromptSpec
from app.api import prompt_spec
from app.db import LabelStore, Run, RunStore
from app.deps import LabelsDep, ManagerDep, RunsDep, SettingsDep
from app.schemas import NAME_PATTERN, AttributeRequest, InterveneRequest, LabelRequest
from app.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["circuits"])


def label_model(lm: LoadedModel) -> str:
    """Labels belong to the base model, so they follow a neuron into fine-tuned variants."""
    return lm.spec.base or lm.spec.name


def circuit_request(body: AttributeRequest) -> CircuitRequest:
    return CircuitRequest(prompt=prompt_spec(body), answer_a=body.answer_a,
                          answer_b=body.answer_b, settings=CircuitSettings.of(body))


def run_payload(run: Run, cached: bool) -> dict[str, Any]:
    return {"run_id": run.id, "cached": cached, "created_at": run.created_at.isoformat(),
            "result": run.result}


def compute_or_reuse(lm: LoadedModel, req: CircuitRequest, use_cache: bool,
                     settings: Settings, runs: RunStore,
                     labels: LabelStore) -> tuple[Run, bool]:
    """Runs in the model thread: a stored identical run is returned as is."""
    prep = prepare(lm, req, settings.circuit_limits)
    if use_cache and (hit := runs.by_key(prep.key)) is not None:
        return hit, True
    result = analyze(lm, req, settings.circuit_limits, prepared=prep)
    names = labels.many(label_model(lm), [(n.layer, n.neuron) for n in result.nodes])
    for node in result.nodes:
        node.label = names.get((node.layer, node.neuron))
    for neuron in result.neurons:
        neuron.label = names.get((neuron.layer, neuron.neuron))
    run = Run(
        kind="attribution", model=lm.name, model_revision=lm.revision,
        prompt=req.prompt.prompt, answer_a=req.answer_a, answer_b=req.answer_b,
        method=req.settings.method,
        # The prompt settings ride along so a permalink can refill the Analyze form.
        params={**result.params.model_dump(mode="json"),
                "prompt_spec": req.prompt.model_dump(mode="json")},
        cache_key=prep.key if use_cache else None, metric=result.m,
        influence_sum=result.influence_sum, result=result.model_dump(mode="json"),
    )
    return runs.add(run), False


@router.post("/attribute")
async def attribute_route(body: AttributeRequest, manager: ManagerDep, settings: SettingsDep,
                          runs: RunsDep, labels: LabelsDep) -> dict[str, Any]:
    """Contrastive attribution of one prompt: nodes, edges, faithfulness; saved as a run."""
    req = circuit_request(body)
    run, cached = await manager.run(
        body.model or settings.default_model,
        lambda lm: compute_or_reuse(lm, req, body.use_cache, settings, runs, labels),
    )
    return run_payload(run, cached)


def stored_run(runs: RunStore, run_id: str) -> Run:
    run = runs.get(run_id) if len(run_id) <= 32 else None
    if run is None:
        raise HTTPException(404, f"no run with id {run_id!r}")
    return run


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
        return view.to_circuit_tracer(slug=run_id)
    return view.model_dump(mode="json")


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


@router.get("/neurons/{layer}/{neuron}")
async def neuron_route(
    layer: int, neuron: int, manager: ManagerDep, settings: SettingsDep, labels: LabelsDep,
    model: Annotated[str | None, Query(max_length=64, pattern=NAME_PATTERN)] = None,
    prompt: Annotated[str | None, Query(max_length=4000)] = None,
    chat_template: bool = False,
    system_prompt: Annotated[str | None, Query(max_length=4000)] = None,
    answer_prefix: Annotated[str, Query(max_length=200)] = "",
    top_k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """What a neuron promotes/suppresses (logit lens), where it fires in a prompt, and
    its user label."""
    spec = (PromptSpec(prompt=prompt, chat_template=chat_template,
                       system_prompt=system_prompt, answer_prefix=answer_prefix)
            if prompt else None)

    def work(lm: LoadedModel) -> dict[str, Any]:
        desc = describe(lm, layer, neuron, spec, top_k, settings.circuit_limits)
        return {**desc.model_dump(mode="json"), "model": lm.name,
                "label": labels.get(label_model(lm), layer, neuron)}

    return await manager.run(model or settings.default_model, work)


@router.put("/neurons/{layer}/{neuron}/label")
async def label_route(layer: int, neuron: int, body: LabelRequest, manager: ManagerDep,
                      settings: SettingsDep, labels: LabelsDep) -> dict[str, Any]:
    """Save (or, with an empty label, delete) a user's label for a neuron."""
    name = body.model or settings.default_model
    lm = await manager.run(name, lambda lm: lm)
    check_model_neuron(lm.model, layer, neuron)
    labels.set(label_model(lm), layer, neuron, body.label)
    return {"model": label_model(lm), "layer": layer, "neuron": neuron,
            "label": labels.get(label_model(lm), layer, neuron)}
