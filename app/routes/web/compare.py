"""Compare: base vs fine-tuned variant. The page, its fragment and permalink, exports, and
the JSON API (``/api/v1/compare``, ``/api/v1/variants``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from analysis.screening import MAX_PROMPT_CHARS
from app.deps import (
    IndexReadersDep,
    LabelsDep,
    ManagerDep,
    RunsDep,
    SettingsDep,
    templates_of,
)
from app.routes.web.forms import COMPARE_DEFAULTS, CompareForm, run_form_values
from app.services.compare import (
    PROMPT_SET_HELP,
    load_comparison,
    prompt_set_text,
    run_comparison,
    stored_comparison,
    variant_rows,
)
from app.services.model_manager import ModelManager
from app.settings import Settings
from app.store.runs import RunStore
from app.store.tables import Run
from frontend.compare import compare_view, neurons_csv, prompts_csv

router = APIRouter(include_in_schema=False)


def _context(manager: ModelManager, settings: Settings, runs: RunStore,
             form: dict[str, Any]) -> dict[str, Any]:
    models = variant_rows(manager)
    return {
        "bases": [m["name"] for m in models if m["kind"] == "base"],
        "variants": [m for m in models if m["kind"] != "base"],
        "models": models, "default_model": settings.default_model,
        "circuit_limits": settings.circuit_limits, "prompt_set_help": PROMPT_SET_HELP,
        "recent": runs.listing(limit=20, kind="comparison"),
        "form": {**COMPARE_DEFAULTS, **form},
    }


def _view(run: Run, runs: RunStore, manager: ModelManager, labels: Any) -> Any:
    result = load_comparison(run, runs)
    base = run.params.get("base", "")
    owner = base
    try:
        spec = manager.spec(base)
        owner = spec.base or spec.name
    except Exception:  # a base since removed from the registry keeps its name
        pass
    keys = [(c.layer, c.neuron) for c in result.comparison.neurons]
    return compare_view(run.id, result, base, run.params.get("variant", run.model),
                        labels.many(owner, keys), run.params.get("base_run"),
                        run.params.get("tuned_run"))


def _form_of(run: Run) -> dict[str, Any]:
    body = dict(run.params.get("request", {}))
    thresholds = body.pop("thresholds", {}) or {}
    items = body.pop("prompt_set", []) or []
    return {**body, **thresholds, "system_prompt": body.get("system_prompt") or "",
            "answer_b": body.get("answer_b") or "", "prompt_set": prompt_set_text(items)}


@router.get("/compare", response_class=HTMLResponse)
async def compare_page(
    request: Request, manager: ManagerDep, settings: SettingsDep, runs: RunsDep,
    base: Annotated[str, Query(max_length=64)] = "",
    variant: Annotated[str, Query(max_length=64)] = "",
    prompt: Annotated[str, Query(max_length=MAX_PROMPT_CHARS)] = "",
    answer_a: Annotated[str, Query(max_length=200)] = "",
    answer_b: Annotated[str, Query(max_length=200)] = "",
    chat_template: bool = False,
    system_prompt: Annotated[str, Query(max_length=4000)] = "",
    answer_prefix: Annotated[str, Query(max_length=200)] = "",
    run: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:
    """The form, pre-filled from the query (a job's target, in its format) or from a run
    (its prompt, answers, model)."""
    form: dict[str, Any] = {"base": base, "variant": variant, "prompt": prompt,
                            "answer_a": answer_a, "answer_b": answer_b,
                            "chat_template": chat_template, "system_prompt": system_prompt,
                            "answer_prefix": answer_prefix}
    if run:
        source = runs.get(run)
        if source is None:
            raise HTTPException(404, f"no run with id {run!r}")
        form.update({**run_form_values(source), "method": source.method or "relp",
                     "tau": source.params.get("tau", 0.15)})
        form["base"] = base or source.model
    return templates_of(request).TemplateResponse(
        request, "compare.html", _context(manager, settings, runs, form))


@router.post("/compare/run", response_class=HTMLResponse)
async def compare_run(request: Request, form: Annotated[CompareForm, Form()],
                      manager: ManagerDep, settings: SettingsDep, runs: RunsDep,
                      labels: LabelsDep, readers: IndexReadersDep) -> HTMLResponse:
    run = await run_in_threadpool(run_comparison, form.body(), manager, settings, runs,
                                  readers)
    response = templates_of(request).TemplateResponse(
        request, "_compare.html", {"c": _view(run, runs, manager, labels)})
    response.headers["HX-Push-Url"] = f"/compare/{run.id}"
    return response


@router.get("/compare/{run_id}", response_class=HTMLResponse)
async def compare_permalink(request: Request, run_id: str, manager: ManagerDep,
                            settings: SettingsDep, runs: RunsDep,
                            labels: LabelsDep) -> HTMLResponse:
    run = stored_comparison(runs, run_id)
    context = _context(manager, settings, runs, _form_of(run))
    context["c"] = _view(run, runs, manager, labels)
    return templates_of(request).TemplateResponse(request, "compare.html", context)


@router.get("/compare/{run_id}/export/{what}")
async def compare_export(run_id: str, what: str, runs: RunsDep, manager: ManagerDep,
                         labels: LabelsDep) -> Response:
    run = stored_comparison(runs, run_id)
    view = _view(run, runs, manager, labels)
    stem = f"circuitlab-compare-{run.id[:8]}"
    if what == "json":
        return JSONResponse(view.result.model_dump(mode="json"), headers={
            "Content-Disposition": f'attachment; filename="{stem}.json"'})
    labels_by_key = {(r.layer, r.neuron): r.label for r in view.neurons if r.label}
    if what == "neurons.csv":
        text = neurons_csv(view.result, labels_by_key)
    elif what == "prompts.csv":
        text = prompts_csv(view.result)
    else:
        raise HTTPException(404, f"no export {what!r}; use json, neurons.csv or prompts.csv")
    return Response(text, media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{stem}-{what}"'})


# ---------------------------------------------------------------------------------------
# JSON API
# ---------------------------------------------------------------------------------------


