"""Rendering a stored run as the Analyze page or its fragment: shared by the Analyze routes
(a new run) and the Runs routes (a permalink), so neither imports the other."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from analysis.attribution import CircuitResult
from analysis.errors import CircuitlabError
from app.deps import templates_of
from app.routes.web.forms import page_context, run_form_values, settings_form_values
from app.services.model_manager import ModelManager
from app.services.neuron_meanings import NeuronMeanings
from app.services.runs import load_result, tau_floor
from app.settings import Settings
from app.store.labels import LabelStore
from app.store.tables import Run
from frontend.neurons import NeuronGist, neuron_gist
from frontend.views import graph_view, run_view


def run_gists(meanings: NeuronMeanings, manager: ModelManager, model: str,
              result: CircuitResult) -> dict[tuple[int, int], NeuronGist]:
    """The neurons table's "responds to" lines, from the model's (or its base's) index."""
    try:
        base = manager.spec(model).base
    except CircuitlabError:  # a run of a model no longer registered
        base = None
    return meanings.gists(model, base, sorted({(n.layer, n.neuron) for n in result.nodes}),
                         neuron_gist)


def render_run(request: Request, run: Run, manager: ModelManager, labels: LabelStore,
               meanings: NeuronMeanings, settings: Settings, fragment: bool) -> HTMLResponse:
    result = load_result(run, manager, labels)
    floor = tau_floor(result)
    gists = run_gists(meanings, manager, run.model, result)
    ctx: dict[str, Any] = {
        "run": run_view(result, run.id, run.created_at, run.model, run.prompt),
        "graph": graph_view(result, len(result.nodes), None, 0.0, gists=gists),
        "tau_floor": floor,
    }
    templates = templates_of(request)
    if fragment:
        return templates.TemplateResponse(request, "_run.html", ctx)
    form = {**run_form_values(run), **settings_form_values(result.params),
            "model": run.model}
    page = page_context(manager, settings, form)
    return templates.TemplateResponse(request, "analyze.html", {**page, **ctx})
