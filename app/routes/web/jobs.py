"""Correction jobs: the form (text check, in-context preview, YAML import/export), the
job page with live progress, the Experiments table, and the JSON API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from analysis.answers import resolve_answer
from analysis.correction.config import TrainingConfig, from_seed_yaml, to_seed_yaml
from analysis.correction.drafts import MAX_DRAFT_CHARS, MAX_DRAFTS
from analysis.correction.preview import in_context_preview
from analysis.correction.textcheck import suggest_topic_words
from analysis.errors import InputError
from app.deps import (
    ManagerDep,
    QueueDep,
    RunsDep,
    SettingsDep,
    templates_of,
)
from app.jobs.queue import JobQueue
from app.routes.web.forms import run_form_values
from app.routes.web.job_forms import JOB_DEFAULTS, JobForm, form_of, merge_import
from app.services.jobs import MAX_YAML_CHARS, job_or_404, text_findings
from app.services.model_manager import ModelManager
from app.settings import Settings
from app.store.jobs import ACTIVE, REQUEUEABLE, TERMINAL
from app.store.tables import Job
from frontend.jobs import CONCEPT_NAME, concept_box, experiment_rows, job_view, loss_figure

router = APIRouter(include_in_schema=False)


def _context(manager: ModelManager, settings: Settings, queue: JobQueue,
             form: dict[str, Any]) -> dict[str, Any]:
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
    manager: ManagerDep,
    run: Annotated[str, Query(max_length=32)] = "",
    rerun: Annotated[str, Query(max_length=32)] = "",
    concept: Annotated[str, Query(max_length=16, pattern=f"^(?:{CONCEPT_NAME})?$")] = "",
    words: Annotated[str, Query(max_length=600)] = "",
    ex: Annotated[list[str] | None, Query()] = None,
    texts: Annotated[list[str] | None, Query(max_length=MAX_DRAFTS)] = None,
) -> HTMLResponse:
    """The form (pre-filled from a run's target case, or from an earlier job) and the
    list of jobs. ``concept``, ``words`` and ``ex`` (a concept candidate's link) fill the
    Concept box beside the form, to help write texts; they never become topic words.
    ``texts`` (the drafts a user kept on a run page) fill the training texts."""
    form: dict[str, Any] = {}
    if run and (source := runs.get(run)) is not None:
        form = {**run_form_values(source), "base_model": source.model}
        form["topic_words"] = ", ".join(suggest_topic_words(
            source.prompt, [form["answer_a"], form["answer_b"]]))
    if rerun:
        form = form_of(TrainingConfig.model_validate(job_or_404(queue, rerun).config))
    kept = [t.strip()[:MAX_DRAFT_CHARS * 5] for t in texts or [] if t.strip()]
    if kept:
        form["texts"] = kept
    context = _context(manager, settings, queue, form)
    context["concept"] = concept_box(concept, words, ex or [], run)
    return templates_of(request).TemplateResponse(request, "jobs.html", context)


@router.post("/jobs/import", response_class=HTMLResponse)
async def import_yaml(request: Request, settings: SettingsDep, queue: QueueDep,
                      manager: ManagerDep,
                      yaml_text: Annotated[str, Form(max_length=MAX_YAML_CHARS)] = "",
                      base_model: Annotated[str, Form(max_length=64)] = "") -> HTMLResponse:
    """The seeds' YAML config pasted in: the form comes back filled with it."""
    if not yaml_text.strip():
        raise InputError("paste a YAML config (model_name, epochs, learning_rate, texts, ...)",
                         field="yaml_text")
    cfg = from_seed_yaml(yaml_text, name=None, base_model=base_model or None)
    typed = await request.form()
    form = merge_import({k: typed.get(k) for k in typed}, cfg)
    if not form["base_model"]:
        form["base_model"] = base_model or settings.default_model
    return templates_of(request).TemplateResponse(
        request, "_job_form.html", _context(manager, settings, queue, form))


@router.post("/jobs/check", response_class=HTMLResponse)
async def check_page(request: Request, form: Annotated[JobForm, Form()],
                     manager: ManagerDep) -> HTMLResponse:
    """Which texts mention the wrong answer, the topic, or the answer with the topic."""
    cfg = form.config(named=False)
    token = await manager.run(cfg.base_model or "", lambda lm: _wrong_token(lm, cfg))
    findings = text_findings(cfg, token)
    return templates_of(request).TemplateResponse(
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
    cfg = form.config(named=False)
    assert cfg.target is not None
    target = cfg.target
    preview = await manager.run(
        cfg.base_model or "",
        lambda lm: in_context_preview(lm, target.prompt_spec(), target.answer_a,
                                      target.answer_b, cfg.texts,
                                      topic_words=cfg.topic_words))
    return templates_of(request).TemplateResponse(
        request, "_preview.html", {"p": preview})


@router.post("/jobs", response_class=HTMLResponse)
async def submit_page(request: Request, form: Annotated[JobForm, Form()],
                      settings: SettingsDep, queue: QueueDep,
                      manager: ManagerDep) -> HTMLResponse:
    """Queue the job; flagged texts need the user's acknowledgement first."""
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
    if job.kind == "index":  # an exemplar-index build has its own page
        return RedirectResponse(f"/indexes/jobs/{job.id}", status_code=303)  # type: ignore[return-value]
    return templates_of(request).TemplateResponse(
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
    response = templates_of(request).TemplateResponse(
        request, "_job_status.html", _status_context(queue, job, settings))
    if job.state in TERMINAL:
        response.status_code = 286  # htmx: stop polling (the content still swaps in)
    return response


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
async def cancel_page(request: Request, job_id: str, queue: QueueDep,
                      settings: SettingsDep) -> HTMLResponse:
    job_or_404(queue, job_id)
    queue.cancel(job_id)
    return await job_status(request, job_id, queue, settings)


@router.post("/jobs/{job_id}/requeue")
async def requeue_page(job_id: str, queue: QueueDep) -> Response:
    job_or_404(queue, job_id)
    new_id = queue.requeue(job_id)
    return Response(status_code=204, headers={"HX-Redirect": f"/jobs/{new_id}"})


@router.post("/jobs/{job_id}/delete")
async def delete_page(job_id: str, queue: QueueDep) -> Response:
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
    return templates_of(request).TemplateResponse(
        request, "experiments.html", {"rows": experiment_rows(jobs), "target": target})


# ---------------------------------------------------------------------------------------
# JSON API
# ---------------------------------------------------------------------------------------


