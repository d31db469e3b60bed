"""Neuron meaning pages: what a neuron responds to (loaded into the neuron panel), the
exemplar indexes (build, progress) and a search over their descriptions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from analysis.attribution.effects import EFFECT_RULE, top_drivers
from analysis.correction.drafts import MAX_DRAFTS
from analysis.errors import InputError
from analysis.probe import MAX_PROBED, parse_neurons
from app.access import computes
from app.deps import (
    IndexBuildsDep,
    IndexReadersDep,
    LabelsDep,
    ManagerDep,
    NeuronMeaningsDep,
    QueueDep,
    RunsDep,
    SettingsDep,
    templates_of,
)
from app.schemas import NAME_PATTERN
from app.services.drafts import drafts_for_run
from app.services.effects import effects_for
from app.services.jobs import job_or_404
from app.services.neuron_meanings import promoted_tokens, run_candidates
from app.services.probe import probe_run
from app.services.runs import load_result, stored_run
from app.store.indexes import BUILDING, QUEUED
from app.store.jobs import ACTIVE
from frontend.neurons import neuron_meaning

router = APIRouter(include_in_schema=False)

ModelQuery = Annotated[str, Query(max_length=64, pattern=NAME_PATTERN)]


def _base_of(manager: ManagerDep, model: str) -> str | None:
    return manager.spec(model).base


@router.get("/neurons/meaning", response_class=HTMLResponse)
async def meaning_partial(request: Request, manager: ManagerDep,
                          meanings: NeuronMeaningsDep, builds: IndexBuildsDep,
                          labels: LabelsDep, settings: SettingsDep, model: ModelQuery,
                          layer: Annotated[int, Query(ge=0, le=10_000)],
                          neuron: Annotated[int, Query(ge=0, le=1_000_000)]) -> HTMLResponse:
    return await _meaning(request, manager, meanings, builds, labels, settings, model, layer,
                          neuron)


async def _meaning(request: Request, manager: ManagerDep, meanings: NeuronMeaningsDep,
                   builds: IndexBuildsDep, labels: LabelsDep, settings: SettingsDep,
                   model: str, layer: int, neuron: int) -> HTMLResponse:
    base = _base_of(manager, model)
    label = labels.get(base or model, layer, neuron)
    meaning = await run_in_threadpool(meanings.meaning, model, base, layer, neuron, label,
                                      neuron_meaning)
    llm_meta = (meanings.description_meta(meaning.index_model, layer, neuron)
                if meaning else {})
    return templates_of(request).TemplateResponse(request, "_neuron_meaning.html", {
        "meaning": meaning, "model": model, "llm_enabled": settings.llm_describer is not None,
        "llm_prompt": llm_meta.get("prompt"),
        "building": None if meaning else builds.building(base or model)})


@router.post("/neurons/describe", response_class=HTMLResponse)
async def llm_describe_neuron(
        request: Request, manager: ManagerDep, meanings: NeuronMeaningsDep,
        builds: IndexBuildsDep, labels: LabelsDep, settings: SettingsDep,
        model: Annotated[str, Form(max_length=64, pattern=NAME_PATTERN)],
        layer: Annotated[int, Form(ge=0, le=10_000)],
        neuron: Annotated[int, Form(ge=0, le=1_000_000)]) -> HTMLResponse:
    """Ask the operator's LLM endpoint to describe the neuron from its exemplars."""
    endpoint = settings.llm_describer
    if endpoint is None:
        raise InputError("no LLM endpoint is configured (CIRCUITLAB_LLM_DESCRIBER__URL "
                         "and __MODEL); the data-only description needs none")
    promotes = await manager.run(model, lambda lm: promoted_tokens(lm, layer, neuron))
    await run_in_threadpool(meanings.llm_description, model, _base_of(manager, model),
                            layer, neuron, endpoint, promotes)
    return await _meaning(request, manager, meanings, builds, labels, settings, model, layer,
                          neuron)



def _indexes_context(manager: ManagerDep, settings: SettingsDep,
                     builds: IndexBuildsDep, runs: RunsDep | None = None) -> dict[str, object]:
    rows = builds.list()
    return {"indexes": rows, "models": manager.registry.names(),
            "recent_runs": runs.listing(20) if runs is not None else [],
            "default_model": settings.default_model,
            "active": any(r.state in (QUEUED, BUILDING) for r in rows),
            "corpus_cap_mb": settings.body_limits.corpus // 1_000_000}


@router.get("/indexes", response_class=HTMLResponse)
async def indexes_page(request: Request, manager: ManagerDep, settings: SettingsDep,
                       builds: IndexBuildsDep, runs: RunsDep) -> HTMLResponse:
    return templates_of(request).TemplateResponse(
        request, "indexes.html", _indexes_context(manager, settings, builds, runs))


@router.get("/indexes/list", response_class=HTMLResponse)
async def indexes_list(request: Request, manager: ManagerDep, settings: SettingsDep,
                       builds: IndexBuildsDep) -> HTMLResponse:
    return templates_of(request).TemplateResponse(
        request, "_indexes.html", _indexes_context(manager, settings, builds))


@router.post("/indexes/build", response_class=HTMLResponse)
async def indexes_build(request: Request, manager: ManagerDep, settings: SettingsDep,
                        builds: IndexBuildsDep,
                        model: Annotated[str, Form(max_length=64, pattern=NAME_PATTERN)],
                        top_k: Annotated[int, Form(ge=1, le=100)] = 20,
                        corpus_file: Annotated[UploadFile | None, File()] = None,
                        ) -> HTMLResponse:
    if model not in manager.registry.names():
        raise InputError(f"unknown model {model!r}; choose one of the list", field="model")
    if corpus_file is not None and corpus_file.filename:
        data = await corpus_file.read()
        corpus, ref = await run_in_threadpool(builds.save_upload, corpus_file.filename, data)
    else:
        corpus, ref = await run_in_threadpool(builds.default_corpus)
    revision = await manager.run(model, lambda lm: lm.revision)
    await run_in_threadpool(builds.build, model, revision, corpus, ref, {"top_k": top_k})
    return templates_of(request).TemplateResponse(
        request, "_indexes.html", _indexes_context(manager, settings, builds))


@router.get("/neurons/search", response_class=HTMLResponse)
async def search_partial(request: Request, manager: ManagerDep, settings: SettingsDep,
                         meanings: NeuronMeaningsDep, readers: IndexReadersDep,
                         runs: RunsDep, labels: LabelsDep,
                         q: Annotated[str, Query(max_length=100)] = "",
                         model: Annotated[str, Query(max_length=64)] = "",
                         run: Annotated[str, Query(max_length=32)] = "") -> HTMLResponse:
    """The index's neurons for the words; on a run, each hit with its status there (in
    circuit / pruned / inactive, the concept probe) and a link to its panel."""
    if run:
        stored = stored_run(runs, run)
        probed, row = await probe_run(stored, manager, labels, readers, query=q, neurons=[],
                                      factor=0.0, limit=MAX_PROBED)
        return templates_of(request).TemplateResponse(request, "_probe.html", {
            "probe": probed, "index": row, "run_id": stored.id, "run": stored})
    model = model or settings.default_model
    row, hits = await run_in_threadpool(meanings.search, model, _base_of(manager, model), q)
    return templates_of(request).TemplateResponse(request, "_neuron_search.html", {
        "hits": hits, "q": q, "model": model, "index": row})


@router.get("/indexes/jobs/{job_id}", response_class=HTMLResponse)
async def index_job_page(request: Request, job_id: str, queue: QueueDep) -> HTMLResponse:
    """An index build's state, progress and log (polled while it runs)."""
    job = job_or_404(queue, job_id)
    return templates_of(request).TemplateResponse(request, "index_job.html", {
        "job": job, "log": queue.log_tail(job.id, 60),
        "running": job.state in ("queued", *ACTIVE)})


@router.post("/indexes/jobs/{job_id}/cancel", response_class=HTMLResponse)
async def index_job_cancel(request: Request, job_id: str, queue: QueueDep) -> HTMLResponse:
    job = queue.cancel(job_or_404(queue, job_id).id)
    return templates_of(request).TemplateResponse(request, "index_job.html", {
        "job": job, "log": queue.log_tail(job.id, 60),
        "running": job.state in ("queued", *ACTIVE)})


@router.get("/runs/{run_id}/drivers", response_class=HTMLResponse)
@computes
async def run_drivers(request: Request, run_id: str, runs: RunsDep, manager: ManagerDep,
                      labels: LabelsDep) -> HTMLResponse:
    """The run's strongest drivers: attributed influence beside measured ablation."""
    run = stored_run(runs, run_id)
    result = load_result(run, manager, labels)
    drivers = await manager.run(run.model, lambda lm: top_drivers(result,
                                                                   effects_for(result, lm)))
    return templates_of(request).TemplateResponse(request, "_drivers.html", {
        "drivers": drivers, "run_id": run_id, "m": result.m, "effect_rule": EFFECT_RULE,
        "labels": {n.name: n.label for n in result.neurons if n.label}})


@router.get("/runs/{run_id}/concepts", response_class=HTMLResponse)
@computes
async def run_concepts(request: Request, run_id: str, runs: RunsDep, manager: ManagerDep,
                       labels: LabelsDep, readers: IndexReadersDep,
                       builds: IndexBuildsDep) -> HTMLResponse:
    """Stage 4 as a view: the run's upstream concept candidates towards B."""
    run = stored_run(runs, run_id)
    result = load_result(run, manager, labels)
    found, row = await manager.run(run.model, lambda lm: run_candidates(result, lm, readers))
    building = await run_in_threadpool(builds.status, run.model, _base_of(manager, run.model))
    return templates_of(request).TemplateResponse(request, "_concepts.html", {
        "candidates": found, "index": row, "run_id": run_id, "model": run.model,
        "answer_b": result.target_b_text, "index_building": building})


@router.post("/runs/{run_id}/probe", response_class=HTMLResponse)
@computes
async def run_probe(request: Request, run_id: str, runs: RunsDep, manager: ManagerDep,
                    labels: LabelsDep, readers: IndexReadersDep,
                    query: Annotated[str, Form(max_length=100)] = "",
                    neurons: Annotated[str, Form(max_length=400)] = "",
                    factor: Annotated[float, Form(ge=-10, le=10)] = 0.0,
                    limit: Annotated[int, Form(ge=1, le=MAX_PROBED)] = 12) -> HTMLResponse:
    """The concept probe (Stage 4 by hypothesis) as a fragment of the run page."""
    run = stored_run(runs, run_id)
    probed, row = await probe_run(run, manager, labels, readers, query=query,
                                  neurons=parse_neurons(neurons), factor=factor, limit=limit)
    return templates_of(request).TemplateResponse(request, "_probe.html", {
        "probe": probed, "index": row, "run_id": run_id})


@router.post("/runs/{run_id}/drafts", response_class=HTMLResponse)
@computes
async def run_drafts(request: Request, run_id: str, runs: RunsDep, manager: ManagerDep,
                     settings: SettingsDep,
                     concept: Annotated[str, Form(max_length=200)] = "",
                     n: Annotated[int, Form(ge=1, le=MAX_DRAFTS)] = 4) -> HTMLResponse:
    """Drafts on the typed concept (comma-separated words), checked and previewed."""
    run = stored_run(runs, run_id)
    words = [w.strip() for w in concept.split(",") if w.strip()]
    drafts, preview = await drafts_for_run(run, manager, settings.llm_describer,
                                           concept=words, n=n)
    return templates_of(request).TemplateResponse(request, "_drafts.html", {
        "drafts": drafts, "preview": preview, "run_id": run_id})
