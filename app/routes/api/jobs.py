"""Correction jobs over JSON: queue (with the text check's findings), list, read,
cancel, re-queue, delete; the text check and the seeds' YAML import on their own."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from analysis.correction.config import from_seed_yaml
from analysis.errors import InputError
from app.deps import QueueDep
from app.jobs.queue import config_target_key
from app.schemas import CheckRequest, JobRequest
from app.services.jobs import MAX_YAML_CHARS, flag_summary, job_json, job_or_404, text_findings

router = APIRouter(prefix="/api/v1", tags=["jobs"])


@router.post("/jobs", status_code=201, responses={201: {
    "description": "Queued: the job's id, its state and the text check's findings."}})
async def submit_api(cfg: JobRequest, queue: QueueDep) -> JSONResponse:
    """Queue a correction job (the TrainingConfig schema; the text check is advisory here:
    its findings come back with the job id)."""
    job_id = queue.submit(cfg)
    findings = text_findings(cfg)
    return JSONResponse({"id": job_id, "state": "queued",
                         "text_check": [f.model_dump() for f in findings if not f.ok]},
                        status_code=201)


@router.get("/jobs")
async def list_api(queue: QueueDep,
                   target: Annotated[str | None, Query(max_length=32)] = None,
                   state: Annotated[str | None, Query(max_length=16)] = None
                   ) -> dict[str, Any]:
    jobs = queue.list(target_key=target, states=[state] if state else None)
    return {"jobs": [job_json(queue, j) for j in jobs], "queue": queue.status()}


@router.get("/jobs/{job_id}")
async def get_api(job_id: str, queue: QueueDep) -> dict[str, Any]:
    return job_json(queue, job_or_404(queue, job_id), with_metrics=True)


@router.post("/jobs/{job_id}/cancel")
async def cancel_api(job_id: str, queue: QueueDep) -> dict[str, Any]:
    job_or_404(queue, job_id)
    return job_json(queue, queue.cancel(job_id))


@router.post("/jobs/{job_id}/requeue")
async def requeue_api(job_id: str, queue: QueueDep) -> dict[str, Any]:
    job_or_404(queue, job_id)
    return {"id": queue.requeue(job_id), "requeued_from": job_id}


@router.delete("/jobs/{job_id}")
async def delete_api(job_id: str, queue: QueueDep) -> Response:
    job_or_404(queue, job_id)
    queue.delete(job_id)
    return Response(status_code=204)


@router.post("/jobs/check")
async def check_api(cfg: CheckRequest) -> dict[str, Any]:
    """The text check alone: which texts mention the wrong answer or the topic."""
    findings = text_findings(cfg)
    return {"findings": [dict(f.model_dump(), ok=f.ok) for f in findings],
            "summary": flag_summary(findings), "target_key": config_target_key(cfg)}


@router.post("/jobs/import-yaml", openapi_extra={"requestBody": {
    "required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}})
async def import_api(request: Request) -> dict[str, Any]:
    """The seeds' YAML config (request body, ``Content-Type: application/yaml``) as a
    TrainingConfig."""
    body = (await request.body())[:MAX_YAML_CHARS + 1]
    if len(body) > MAX_YAML_CHARS:
        raise InputError(f"the YAML is over {MAX_YAML_CHARS} characters", field="yaml")
    return from_seed_yaml(body.decode("utf-8", errors="replace")).model_dump(mode="json")
