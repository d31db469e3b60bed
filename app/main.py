"""FastAPI app factory: settings, the resident model, routes, error handling."""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from analysis.attribution.core import METHODS
from analysis.comparison.verdict import VERDICT_RULE
from analysis.evaluation import CORRECTED_RULE, IMPROVED_RULE
from analysis.prompts import PROMPT_FORMATS
from app.access import install_access_gate, no_token
from app.assets import vendor_files
from app.body_limit import install_body_limit
from app.contract import install_contract
from app.cross_site import install_cross_site_guard
from app.error_responses import install_error_handlers
from app.host_guard import install_host_guard
from app.jobs.queue import JobQueue
from app.routes.api import compare as compare_api
from app.routes.api import indexes as indexes_api
from app.routes.api import jobs as jobs_api
from app.routes.api import models as models_api
from app.routes.api import neurons as neurons_api
from app.routes.api import predict as predict_api
from app.routes.api import runs as runs_api
from app.routes.api import supernodes as supernodes_api
from app.routes.web import analyze as analyze_web
from app.routes.web import compare as compare_web
from app.routes.web import jobs as jobs_web
from app.routes.web import login as login_web
from app.routes.web import neurons as neurons_web
from app.routes.web import runs as runs_web
from app.routes.web import screen as screen_web
from app.routes.web import supernodes as supernodes_web
from app.security_headers import install_security_headers
from app.services import build_services
from app.services.index_builds import IndexBuilds
from app.services.neuron_meanings import NeuronMeanings
from app.settings import PROJECT_ROOT, Settings
from frontend.jobs import concept_link

log = logging.getLogger("circuitlab")


def _index_default_model(app: FastAPI, settings: Settings) -> None:
    """Resume the index builds a stopped server or a killed worker left interrupted, then
    queue the first exemplar index (default model, built-in corpus) unless it exists;
    never stops the server from starting (no WordNet: the Neurons page says how)."""
    try:
        builds: IndexBuilds = app.state.index_builds
        for row in builds.resume_interrupted():
            log.info("exemplar index of %s on %s: resumed at %s tokens", row.model,
                     row.corpus_name, f"{row.tokens_done:,}")
        corpus, ref = builds.default_corpus()
        lm = app.state.manager.get_sync(settings.default_model)
        row = builds.build(lm.name, lm.revision, corpus, ref)
        log.info("exemplar index of %s on %s: %s", lm.name, corpus.name, row.state)
    except Exception as exc:
        log.warning("no exemplar index queued at start: %s", exc)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    vendor = vendor_files()
    services = build_services(settings)
    manager = services.manager
    jobs = JobQueue.from_settings(settings, services.sessions)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Jobs a dead worker held become "interrupted"; queued ones wait for the worker.
        await asyncio.to_thread(jobs.start)
        if settings.load_on_start:
            # Load the resident model once, off the event loop; a failure is reported by
            # /api/v1/health instead of killing the server.
            try:
                lm = await asyncio.to_thread(manager.get_sync, settings.default_model)
                log.info("loaded %s on %s (%s) in %.1f s", lm.name, lm.device, lm.dtype,
                         lm.load_seconds)
            except Exception:
                log.exception("could not load the default model %s", settings.default_model)
        if settings.index_on_start:
            await asyncio.to_thread(_index_default_model, app, settings)
        try:
            yield
        finally:
            await asyncio.to_thread(jobs.stop)

    app = FastAPI(
        title="circuitlab",
        description="Find why a language model answers wrong; check whether a fine-tune "
                    "fixed it.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.manager = manager
    app.state.sessions = services.sessions
    app.state.labels = services.labels
    app.state.runs = services.runs
    app.state.variants = services.variants
    app.state.supernodes = services.supernodes
    app.state.jobs = jobs
    # Exemplar indexes: builds (jobs in the queue), readers, and what a neuron means.
    index_store, readers = services.index_store, services.index_readers
    app.state.index_builds = IndexBuilds(index_store, jobs, settings.data_dir)
    app.state.index_readers = readers
    app.state.neuron_meanings = NeuronMeanings(index_store, readers)
    app.state.templates = Jinja2Templates(directory=str(PROJECT_ROOT / "templates"))
    # The one-click format switch reads the named formats from analysis, declared once.
    app.state.templates.env.globals["prompt_formats"] = PROMPT_FORMATS
    # The answer-level rules ("corrected", "improved"), stated on every page that uses them.
    app.state.templates.env.globals["outcome_rules"] = {"corrected": CORRECTED_RULE,
                                                        "improved": IMPROVED_RULE}
    app.state.templates.env.globals["verdict_rule"] = VERDICT_RULE
    app.state.templates.env.globals["attribution_methods"] = [
        (m.name, m.label, m.summary) for m in METHODS.values()]
    # A concept candidate's "Write texts on ..." link to the Jobs page's Concept box.
    app.state.templates.env.globals["concept_link"] = concept_link
    # Token texts shown in quotes as JSON writes them (" ren", "\n"), but HTML-escaped by
    # autoescape rather than by tojson's \u003c escapes ("<|im_end|>" stays readable).
    app.state.templates.env.filters["quoted"] = lambda value: json.dumps(value,
                                                                         ensure_ascii=False)
    install_error_handlers(app)
    # One access policy for every route, those added later included (app/access.py);
    # inside the body limit, so what it reads of a form is bounded.
    install_access_gate(app, settings)
    install_body_limit(app, settings.body_limits)
    install_cross_site_guard(app, settings)
    install_contract(app, settings.access.protect_reads)
    install_host_guard(app, settings)  # a foreign Host gets nothing else
    install_security_headers(app)  # outermost: every answer, refusals included
    app.state.templates.env.globals["token_needed"] = settings.needs_token()
    for api in (models_api, predict_api, runs_api, supernodes_api, indexes_api, neurons_api,
                compare_api, jobs_api):
        app.include_router(api.router)
    for web in (analyze_web, runs_web, supernodes_web, screen_web, compare_web, jobs_web,
                neurons_web, login_web):
        app.include_router(web.router)
    # static/js/ holds ES modules, which a browser runs only when served as JavaScript
    # (nosniff): name the type rather than trust the host's MIME table (some map .js
    # to text/plain). StaticFiles guesses with the mimetypes module.
    mimetypes.add_type("text/javascript", ".js")
    app.mount("/static", StaticFiles(directory=str(PROJECT_ROOT / "static")), name="static")

    @app.get("/vendor/{name}", include_in_schema=False)
    @no_token
    async def vendor_file(name: str) -> FileResponse:
        from fastapi import HTTPException

        if name not in vendor:
            raise HTTPException(404, f"no vendored file {name!r}")
        return FileResponse(vendor[name], media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    return app
