"""Exemplar indexes and neuron search over JSON: upload a corpus, build an index (a job
in the shared queue), list them, and search neurons by what their exemplars say."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from analysis.attribution.effects import EFFECT_RULE, top_drivers
from analysis.errors import InputError
from analysis.probe import parse_neurons
from app.access import computes
from app.deps import (
    IndexBuildsDep,
    IndexReadersDep,
    LabelsDep,
    ManagerDep,
    NeuronMeaningsDep,
    RunsDep,
    SettingsDep,
)
from app.schemas import NAME_PATTERN, DraftsBody, ProbeBody
from app.services.drafts import drafts_for_run
from app.services.effects import effects_for
from app.services.neuron_meanings import promoted_tokens, run_candidates
from app.services.probe import probe_run
from app.services.runs import load_result, stored_run
from app.store.tables import IndexRecord

router = APIRouter(prefix="/api/v1", tags=["neurons"])


def index_json(row: IndexRecord) -> dict[str, Any]:
    return {"id": row.id, "model": row.model, "revision": row.revision,
            "corpus_key": row.corpus_key, "corpus_name": row.corpus_name,
            "state": row.state, "tokens_done": row.tokens_done,
            "tokens_total": row.tokens_total, "job_id": row.job_id, "error": row.error,
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "meta": row.meta}


class BuildIndexRequest(BaseModel):
    model: str | None = Field(None, max_length=64, pattern=NAME_PATTERN,
                              description="Default: the server's default model.")
    corpus: str = Field(
        "default", max_length=64, pattern=r"^(default|[0-9a-f]{16,64})$",
        description="'default' (the built-in WordNet sample) or the key /corpora returned.")
    top_k: int = Field(20, ge=1, le=100, description="Top exemplars kept per neuron.")


@router.post("/corpora")
async def upload_corpus(builds: IndexBuildsDep,
                        file: Annotated[UploadFile, File(description=".txt or .jsonl")],
                        ) -> dict[str, Any]:
    """Check and keep a corpus (one text per line, or JSONL with a "text" field)."""
    data = await file.read()
    corpus, ref = await run_in_threadpool(builds.save_upload, file.filename or "corpus.txt",
                                          data)
    return {"key": corpus.key, "name": corpus.name, "texts": len(corpus.texts), **ref}


@router.post("/indexes", status_code=202)
async def build_index(body: BuildIndexRequest, builds: IndexBuildsDep, manager: ManagerDep,
                      settings: SettingsDep) -> dict[str, Any]:
    """Queue an index build, or return the index that already covers (model, revision,
    corpus): a rebuild is never needed for the same triple."""
    model = body.model or settings.default_model
    manager.spec(model)  # an unknown model is a 404 before anything is written
    if body.corpus == "default":
        corpus, ref = await run_in_threadpool(builds.default_corpus)
    else:
        corpus, ref = await run_in_threadpool(builds.corpus_file, body.corpus)
    revision = await manager.run(model, lambda lm: lm.revision)
    row = await run_in_threadpool(builds.build, model, revision, corpus, ref,
                                  {"top_k": body.top_k})
    return index_json(row)


@router.get("/indexes")
async def list_indexes(builds: IndexBuildsDep,
                       model: Annotated[str | None, Query(max_length=64,
                                                          pattern=NAME_PATTERN)] = None,
                       ) -> dict[str, Any]:
    return {"indexes": [index_json(r) for r in builds.list(model)]}


@router.get("/neurons/search")
async def search_neurons(meanings: NeuronMeaningsDep, manager: ManagerDep, settings: SettingsDep,
                         q: Annotated[str, Query(min_length=1, max_length=100)],
                         model: Annotated[str | None, Query(max_length=64,
                                                            pattern=NAME_PATTERN)] = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Neurons whose exemplars or description mention the words, best first."""
    name = model or settings.default_model
    row, hits = await run_in_threadpool(meanings.search, name, manager.spec(name).base, q,
                                        limit)
    return {"model": name, "index_id": row.id, "query": q,
            "hits": [h.model_dump(mode="json") for h in hits]}


@router.get("/runs/{run_id}/concepts")
@computes
async def run_concepts(run_id: str, runs: RunsDep, manager: ManagerDep, labels: LabelsDep,
                       readers: IndexReadersDep,
                       limit: Annotated[int, Query(ge=1, le=100)] = 15) -> dict[str, Any]:
    """Upstream concept candidates towards B (Stage 4), best first, with the reasons for
    each rank, exemplars and topic words when the model (or its base) has an index."""
    run = stored_run(runs, run_id)
    result = load_result(run, manager, labels)
    found, row = await manager.run(run.model,
                                   lambda lm: run_candidates(result, lm, readers, limit))
    return {"run_id": run_id, "index_id": row.id if row else None,
            "candidates": [c.model_dump(mode="json") for c in found]}


@router.get("/runs/{run_id}/drivers")
@computes
async def run_drivers(run_id: str, runs: RunsDep, manager: ManagerDep,
                      labels: LabelsDep) -> dict[str, Any]:
    """The run's 12 strongest kept neurons by |attributed influence|, each with its
    measured effect on m when zeroed and when mean-ablated at every position (m_clean -
    m_ablated, so the sign compares with the influence), and whether the two disagree."""
    run = stored_run(runs, run_id)
    result = load_result(run, manager, labels)
    drivers = await manager.run(run.model, lambda lm: top_drivers(result,
                                                                   effects_for(result, lm)))
    return {"run_id": run_id, "m": result.m, "effect": EFFECT_RULE,
            "drivers": [d.model_dump(mode="json") for d in drivers],
            "disagree": sum(d.disagrees for d in drivers)}


@router.post("/runs/{run_id}/probe")
@computes
async def run_probe(run_id: str, body: ProbeBody, runs: RunsDep, manager: ManagerDep,
                    labels: LabelsDep, readers: IndexReadersDep) -> dict[str, Any]:
    """Does the model use a concept on this run's prompt, and which way does it push?
    The exemplar index's neurons for ``query`` (and the named ``neurons``), each with its
    activation at every position, its attributed influence on m (a fresh dense
    attribution with the run's method, so pruned neurons count too), whether the circuit
    kept it and why not (``rule``), and the measured effect of scaling them all together
    by ``factor`` (m, P(A), P(B) before -> after)."""
    run = stored_run(runs, run_id)
    probed, row = await probe_run(run, manager, labels, readers, query=body.query,
                                  neurons=parse_neurons(" ".join(body.neurons)),
                                  factor=body.factor, limit=body.limit)
    return {"run_id": run_id, "index_id": row.id if row else None,
            **probed.model_dump(mode="json")}


@router.post("/runs/{run_id}/drafts")
@computes
async def run_drafts(run_id: str, body: DraftsBody, runs: RunsDep, manager: ManagerDep,
                     settings: SettingsDep) -> dict[str, Any]:
    """Draft training texts tying the run's correct answer to a concept (Stage 5's
    start): each checked by the text check (a sample naming the wrong answer is
    discarded and counted), then all scored before the run's prompt (the in-context
    preview). Suggestions only: nothing is queued."""
    run = stored_run(runs, run_id)
    drafts, preview = await drafts_for_run(run, manager, settings.llm_describer,
                                           concept=body.concept, n=body.n, writer=body.writer,
                                           topic_words=body.topic_words)
    return {"run_id": run_id, **drafts.model_dump(mode="json"),
            "preview": preview.model_dump(mode="json") if preview else None}


@router.post("/neurons/{layer}/{neuron}/describe")
async def llm_describe_route(layer: int, neuron: int, meanings: NeuronMeaningsDep,
                             manager: ManagerDep, settings: SettingsDep,
                             model: Annotated[str | None, Query(max_length=64,
                                                                pattern=NAME_PATTERN)] = None,
                             ) -> dict[str, Any]:
    """Write (and store, source "llm") a description from the neuron's exemplars through
    the operator's OpenAI-compatible endpoint; 422 when none is configured."""
    endpoint = settings.llm_describer
    if endpoint is None:
        raise InputError("no LLM endpoint is configured (CIRCUITLAB_LLM_DESCRIBER__URL "
                         "and __MODEL)")
    name = model or settings.default_model
    base = manager.spec(name).base
    promotes = await manager.run(name, lambda lm: promoted_tokens(lm, layer, neuron))
    row = await run_in_threadpool(meanings.llm_description, name, base, layer, neuron,
                                  endpoint, promotes)
    owner = row.model  # the index's model (a variant reads its base's) owns the description
    return {"model": owner, "layer": layer, "neuron": neuron,
            "descriptions": meanings.descriptions(owner, layer, neuron),
            "prompt": meanings.description_meta(owner, layer, neuron).get("prompt")}
