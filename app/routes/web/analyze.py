"""The Analyze page: the form, a quick prediction, and a full circuit run."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from analysis.analyze import CircuitRequest, estimate_request
from analysis.attribution import CircuitSettings
from analysis.errors import CircuitlabError, InputError
from analysis.estimate import Estimate, check_size
from analysis.models import LoadedModel
from analysis.predict import predict, predict_formats
from analysis.screening import MAX_PROMPT_CHARS
from app.deps import (
    IndexReadersDep,
    LabelsDep,
    ManagerDep,
    NeuronMeaningsDep,
    RunsDep,
    SettingsDep,
    templates_of,
)
from app.routes.web.forms import AnalyzeForm, page_context
from app.routes.web.rendering import render_run
from app.schemas import prompt_spec
from app.services.runs import compute_or_reuse

router = APIRouter(include_in_schema=False)

@router.get("/", response_class=HTMLResponse)
async def analyze_page(
    request: Request, manager: ManagerDep, settings: SettingsDep,
    prompt: Annotated[str, Query(max_length=MAX_PROMPT_CHARS)] = "",
    answer_a: Annotated[str, Query(max_length=200)] = "",
    answer_b: Annotated[str, Query(max_length=200)] = "",
    answer_prefix: Annotated[str, Query(max_length=200)] = "",
    system_prompt: Annotated[str, Query(max_length=4000)] = "",
    chat_template: bool = False,
) -> HTMLResponse:
    """The form, optionally pre-filled from the query (the screening page links here)."""
    form = {"prompt": prompt, "answer_a": answer_a, "answer_b": answer_b,
            "answer_prefix": answer_prefix, "system_prompt": system_prompt,
            "chat_template": chat_template}
    return templates_of(request).TemplateResponse(
        request, "analyze.html", page_context(manager, settings, form))


@router.post("/analyze/predict", response_class=HTMLResponse)
async def analyze_predict(request: Request, form: Annotated[AnalyzeForm, Form()],
                          manager: ManagerDep, settings: SettingsDep) -> HTMLResponse:
    answers = [a for a in (form.answer_a, form.answer_b) if a.strip()]
    spec = prompt_spec(form)
    limits = settings.circuit_limits

    def work(lm: LoadedModel) -> tuple[Any, Any, Estimate | None, str | None]:
        # The user's format, and both named formats side by side (top-5 each).
        prediction = predict(lm, spec, answers, form.top_k, settings.limits)
        formats = predict_formats(lm, spec, answers, 5, settings.limits)
        expected, refusal = None, None
        if form.answer_a.strip() and lm.remote is None:
            req = CircuitRequest(prompt=spec, answer_a=form.answer_a,
                                 answer_b=form.answer_b or None,
                                 settings=CircuitSettings.of(form))
            try:  # what running the circuit would cost, or why it would be refused
                expected = estimate_request(lm, req, limits)
                check_size(req.settings, limits.max_nodes, limits.max_edge_pairs)
            except CircuitlabError as exc:
                refusal = exc.message
        return prediction, formats, expected, refusal

    prediction, formats, expected, refusal = await manager.run(
        form.model or settings.default_model, work)
    templates = templates_of(request)
    return templates.TemplateResponse(
        request, "_prediction.html",
        {"p": prediction, "formats": formats, "estimate": expected, "refusal": refusal})


@router.post("/analyze/run", response_class=HTMLResponse)
async def analyze_run(request: Request, form: Annotated[AnalyzeForm, Form()],
                      manager: ManagerDep, settings: SettingsDep, runs: RunsDep,
                      labels: LabelsDep, readers: IndexReadersDep,
                      meanings: NeuronMeaningsDep) -> HTMLResponse:
    """Attribute the prompt, save the run, and show it; the URL becomes its permalink."""
    if not form.answer_a.strip():
        raise InputError("a circuit needs answer A (the answer the metric pushes towards)",
                         field="answer_a")
    req = CircuitRequest(prompt=prompt_spec(form), answer_a=form.answer_a,
                         answer_b=form.answer_b or None, settings=CircuitSettings.of(form))
    run, _cached = await manager.run(
        form.model or settings.default_model,
        lambda lm: compute_or_reuse(lm, req, True, settings, runs, labels, readers),
    )
    response = render_run(request, run, manager, labels, meanings, settings, fragment=True)
    response.headers["HX-Push-Url"] = f"/runs/{run.id}"
    return response
