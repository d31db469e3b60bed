"""Correction jobs: the form (text check, in-context preview, YAML import/export), the
job page with live progress, the Experiments table, and the JSON API."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from analysis.answers import resolve_answer
from analysis.correction.config import TrainingConfig, from_seed_yaml, to_seed_yaml
from analysis.correction.preview import in_context_preview
from analysis.correction.textcheck import suggest_topic_words
from analysis.errors import CircuitlabError, InputError
from app.db import Job
from app.deps import ManagerDep, RunsDep, SettingsDep
from app.job_forms import JOB_DEFAULTS, JobForm, flag_summary, form_of, text_findings
from app.jobs.queue import JobQueue, config_target_key
from app.jobs.store import ACTIVE, REQUEUEABLE, TERMINAL
from app.settings import Settings
from frontend.jobs import experiment_rows, job_view, loss_figure

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/v1", tags=["jobs"])
MAX_YAML_CHARS = 200_000


class Forbidden(CircuitlabError):
    status = 403


def get_queue(request: Request) -> JobQueue:
    return request.app.state.jobs  # type: ignore[no-any-return]


QueueDep = Annotated[JobQueue, Depends(get_queue)]


def check_token(request: Request, settings: Settings, form_token: str = "") -> None:
    """Beyond localhost, changing the queue needs the operator's token."""
    if not settings.needs_token():
        return
    if not settings.api_token:
        raise Forbidden("this server listens beyond localhost and has no API token set; "
                        "the operator must set CIRCUITLAB_API_TOKEN to allow jobs",
                        field="token")
    header = request.headers.get("authorization", "")
    given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    given = given or form_token
    if not secrets.compare_digest(given.encode(), settings.api_token.encode()):
        raise Forbidden("a valid API token is needed to change the job queue",
                        field="token")


def job_or_404(queue: JobQueue, job_id: str) -> Job:
    try:
        return queue.get(job_id) if len(job_id) <= 32 else _missing(job_id)
    except LookupError:
        return _missing(job_id)


def _missing(job_id: str) -> Job:
    raise HTTPException(404, f"no job with id {job_id!r}")


def _context(request: Request, settings: Settings, queue: JobQueue,
             form: dict[str, Any]) -> dict[str, Any]:
    manager = request.app.state.manager
    manager.refresh()
    bases = [s.name for s in manager.registry.specs() if s.kind == "base"]
    return {"form": {**JOB_DEFAULTS, "base_model": settings.default_model, **form},
            "bases": bases, "jobs": [job_view(j) for j in queue.list(limit=50)],
            "caps": settings.jobs.caps, "needs_token": settings.needs_token()}


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request, settings: SettingsDep, queue: QueueDep, runs: RunsDep,
    run: Annotated[str, Query(max_length=32)] = "",
    rerun: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:
    """The form (pre-filled from a run's target case, or from an earlier job) and the
    list of jobs."""
    form: dict[str, Any] = {}
    if run and (source := runs.get(run)) is not None:
        spec = source.params.get("prompt_spec", {})
        form = {"prompt": source.prompt, "answer_a": source.answer_a or "",
                "answer_b": source.answer_b or "", "base_model": source.model,
                "chat_template": spec.get("chat_template", False),
                "system_prompt": spec.get("system_prompt") or "",
                "answer_prefix": spec.get("answer_prefix", "")}
        form["topic_words"] = ", ".join(suggest_topic_words(
            source.prompt, [form["answer_a"], form["answer_b"]]))
    if rerun:
        form = form_of(TrainingConfig.model_validate(job_or_404(queue, rerun).config))
    return request.app.state.templates.TemplateResponse(
        request, "jobs.html", _context(request, settings, queue, form))


@router.post("/jobs/import", response_class=HTMLResponse)
async def import_yaml(request: Request, settings: SettingsDep, queue: QueueDep,
                      yaml_text: Annotated[str, Form(max_length=MAX_YAML_CHARS)] = "",
                      base_model: Annotated[str, Form(max_length=64)] = "") -> HTMLResponse:
    """The seeds' YAML config pasted in: the form comes back filled with it."""
    if not yaml_text.strip():
        raise InputError("paste a YAML config (model_name, epochs, learning_rate, texts, ...)",
                         field="yaml_text")
    cfg = from_seed_yaml(yaml_text, name=None, base_model=base_model or None)
    form = form_of(cfg)
    if not form["base_model"]:
        form["base_model"] = base_model or settings.default_model
    return request.app.state.templates.TemplateResponse(
        request, "_job_form.html", _context(request, settings, queue, form))


@router.post("/jobs/check", response_class=HTMLResponse)
async def check_page(request: Request, form: Annotated[JobForm, Form()],
                     manager: ManagerDep) -> HTMLResponse:
    """Which texts mention the wrong answer, the topic, or the answer with the topic."""
    cfg = form.config()
    token = await manager.run(cfg.base_model or "", lambda lm: _wrong_token(lm, cfg))
    findings = text_findings(cfg, token)
    return request.app.state.templates.TemplateResponse(
        request, "_text_check.html", {"findings": findings, "texts": cfg.texts,
                                      "cfg": cfg, "wrong_token": token})


def _wrong_token(lm: Any, cfg: TrainingConfig) -> str | None:
    """The wrong answer's first token as the model emits it (" renin" -> " Ren")."""
    assert cfg.target is not None
    try:
        return str(resolve_answer(lm.tokenizer, cfg.target.answer_b).token_text)
    except InputError:
        return None


@router.post("/jobs/preview", response_class=HTMLResponse)
async def preview_page(request: Request, form: Annotated[JobForm, Form()],
                       manager: ManagerDep) -> HTMLResponse:
    """The target with the training texts as context: seconds, before minutes of SFT."""
    cfg = form.config()
    assert cfg.target is not None
    target = cfg.target
    preview = await manager.run(
        cfg.base_model or "",
        lambda lm: in_context_preview(lm, target.prompt_spec(), target.answer_a,
                                      target.answer_b, cfg.texts))
    return request.app.state.templates.TemplateResponse(
        request, "_preview.html", {"p": preview})


@router.post("/jobs", response_class=HTMLResponse)
async def submit_page(request: Request, form: Annotated[JobForm, Form()],
                      settings: SettingsDep, queue: QueueDep,
                      manager: ManagerDep) -> HTMLResponse:
    """Queue the job; flagged texts need the user's acknowledgement first."""
    check_token(request, settings, form.token)
    cfg = form.config()
    token = await manager.run(cfg.base_model or "", lambda lm: _wrong_token(lm, cfg))
    flagged = [f for f in text_findings(cfg, token) if not f.ok]
    if flagged and not form.acknowledge:
        numbers = ", ".join(str(f.index + 1) for f in flagged)
        raise InputError(f"text(s) {numbers} mention the wrong answer or the question's "
                         "topic (see Check texts); the seeds found this reinforces the "
                         "wrong answer. Tick the acknowledgement to queue anyway.",
                         field="acknowledge")
    job_id = queue.submit(cfg)
    response = HTMLResponse(f'<p>queued <a href="/jobs/{job_id}">{job_id}</a></p>')
    response.headers["HX-Redirect"] = f"/jobs/{job_id}"
    return response


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str, queue: QueueDep,
                   settings: SettingsDep) -> HTMLResponse:
    job = job_or_404(queue, job_id)
    return request.app.state.templates.TemplateResponse(
        request, "job.html", _status_context(queue, job, settings))


def _status_context(queue: JobQueue, job: Job, settings: Settings) -> dict[str, Any]:
    metrics = queue.metrics(job.id)
    return {"j": job_view(job), "figure": loss_figure(metrics),
            "log": queue.log_tail(job.id, 40), "needs_token": settings.needs_token(),
            "can_cancel": job.state in ("queued", *ACTIVE),
            "can_requeue": job.state in REQUEUEABLE,
            "can_delete": job.state not in ACTIVE, "done": job.state in TERMINAL}


@router.get("/jobs/{job_id}/status", response_class=HTMLResponse)
async def job_status(request: Request, job_id: str, queue: QueueDep,
                     settings: SettingsDep) -> HTMLResponse:
    """The polled fragment: state, progress, loss curve, log tail, evaluation."""
    job = job_or_404(queue, job_id)
    response = request.app.state.templates.TemplateResponse(
        request, "_job_status.html", _status_context(queue, job, settings))
    if job.state in TERMINAL:
        response.status_code = 286  # htmx: stop polling (the content still swaps in)
    return response


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
async def cancel_page(request: Request, job_id: str, queue: QueueDep, settings: SettingsDep,
                      token: Annotated[str, Form(max_length=200)] = "") -> HTMLResponse:
    check_token(request, settings, token)
    job_or_404(queue, job_id)
    queue.cancel(job_id)
    return await job_status(request, job_id, queue, settings)


@router.post("/jobs/{job_id}/requeue")
async def requeue_page(request: Request, job_id: str, queue: QueueDep, settings: SettingsDep,
                       token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_token(request, settings, token)
    job_or_404(queue, job_id)
    new_id = queue.requeue(job_id)
    return Response(status_code=204, headers={"HX-Redirect": f"/jobs/{new_id}"})


@router.post("/jobs/{job_id}/delete")
async def delete_page(request: Request, job_id: str, queue: QueueDep, settings: SettingsDep,
                      token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_token(request, settings, token)
    job_or_404(queue, job_id)
    queue.delete(job_id)
    return Response(status_code=204, headers={"HX-Redirect": "/jobs"})


@router.get("/jobs/{job_id}/config.yaml")
async def export_yaml(job_id: str, queue: QueueDep) -> Response:
    cfg = TrainingConfig.model_validate(job_or_404(queue, job_id).config)
    return Response(to_seed_yaml(cfg), media_type="application/yaml", headers={
        "Content-Disposition": f'attachment; filename="{cfg.name}.yaml"'})


@router.get("/experiments", response_class=HTMLResponse)
async def experiments_page(request: Request, queue: QueueDep,
                           target: Annotated[str, Query(max_length=32)] = "") -> HTMLResponse:
    """All jobs on one target case as the seeds' summary table (or the list of targets)."""
    jobs = queue.list(target_key=target or None, limit=500)
    return request.app.state.templates.TemplateResponse(
        request, "experiments.html", {"rows": experiment_rows(jobs), "target": target})


# ---------------------------------------------------------------------------------------
# JSON API
# ---------------------------------------------------------------------------------------


def _job_json(queue: JobQueue, job: Job, with_metrics: bool = False) -> dict[str, Any]:
    out = {c: getattr(job, c) for c in ("id", "name", "state", "base_model", "config",
                                        "progress", "evaluation", "error", "variant",
                                        "attempt", "parent_id", "target_key")}
    for stamp in ("created_at", "started_at", "finished_at"):
        value = getattr(job, stamp)
        out[stamp] = value.isoformat() if value else None
    if with_metrics:
        out["metrics"] = [{"step": m.step, "loss": m.loss, "learning_rate": m.learning_rate,
                           "epoch": m.epoch, "elapsed_s": m.elapsed_s}
                          for m in queue.metrics(job.id)]
        out["log_tail"] = queue.log_tail(job.id, 50)
    return out


@api.post("/jobs")
async def submit_api(cfg: TrainingConfig, request: Request, settings: SettingsDep,
                     queue: QueueDep) -> JSONResponse:
    """Queue a correction job (the TrainingConfig schema; the text check is advisory here:
    its findings come back with the job id)."""
    check_token(request, settings)
    if cfg.target is None:
        raise InputError("a job needs its target (prompt, answer_a, answer_b)", field="target")
    job_id = queue.submit(cfg)
    findings = text_findings(cfg)
    return JSONResponse({"id": job_id, "state": "queued",
                         "text_check": [f.model_dump() for f in findings if not f.ok]},
                        status_code=201)


@api.get("/jobs")
async def list_api(queue: QueueDep,
                   target: Annotated[str | None, Query(max_length=32)] = None,
                   state: Annotated[str | None, Query(max_length=16)] = None
                   ) -> dict[str, Any]:
    jobs = queue.list(target_key=target, states=[state] if state else None)
    return {"jobs": [_job_json(queue, j) for j in jobs], "queue": queue.status()}


@api.get("/jobs/{job_id}")
async def get_api(job_id: str, queue: QueueDep) -> dict[str, Any]:
    return _job_json(queue, job_or_404(queue, job_id), with_metrics=True)


@api.post("/jobs/{job_id}/cancel")
async def cancel_api(job_id: str, request: Request, settings: SettingsDep,
                     queue: QueueDep) -> dict[str, Any]:
    check_token(request, settings)
    job_or_404(queue, job_id)
    return _job_json(queue, queue.cancel(job_id))


@api.post("/jobs/{job_id}/requeue")
async def requeue_api(job_id: str, request: Request, settings: SettingsDep,
                      queue: QueueDep) -> dict[str, Any]:
    check_token(request, settings)
    job_or_404(queue, job_id)
    return {"id": queue.requeue(job_id), "requeued_from": job_id}


@api.delete("/jobs/{job_id}")
async def delete_api(job_id: str, request: Request, settings: SettingsDep,
                     queue: QueueDep) -> Response:
    check_token(request, settings)
    job_or_404(queue, job_id)
    queue.delete(job_id)
    return Response(status_code=204)


@api.post("/jobs/check")
async def check_api(cfg: TrainingConfig) -> dict[str, Any]:
    """The text check alone: which texts mention the wrong answer or the topic."""
    if cfg.target is None:
        raise InputError("the check needs the target's answers", field="target")
    findings = text_findings(cfg)
    return {"findings": [dict(f.model_dump(), ok=f.ok) for f in findings],
            "summary": flag_summary(findings), "target_key": config_target_key(cfg)}


@api.post("/jobs/import-yaml")
async def import_api(request: Request) -> dict[str, Any]:
    """The seeds' YAML config (request body, text) as a TrainingConfig."""
    body = (await request.body())[:MAX_YAML_CHARS + 1]
    if len(body) > MAX_YAML_CHARS:
        raise InputError(f"the YAML is over {MAX_YAML_CHARS} characters", field="yaml")
    return from_seed_yaml(body.decode("utf-8", errors="replace")).model_dump(mode="json")
