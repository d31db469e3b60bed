"""FastAPI app factory: settings, the resident model, routes, error handling."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from analysis.prompts import PROMPT_FORMATS
from app import api, api_circuits, pages, pages_compare, pages_jobs, pages_runs, pages_screen
from app.assets import vendor_files
from app.db import LabelStore, RunStore, init_db
from app.errors import install_error_handlers
from app.jobs.queue import JobQueue
from app.model_manager import ModelManager
from app.settings import PROJECT_ROOT, Settings
from app.variants import VariantStore

log = logging.getLogger("circuitlab")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    vendor = vendor_files()
    sessions = init_db(settings.db_url())
    variants = VariantStore(sessions, settings.cache_dir)
    manager = ModelManager(settings.registry(), settings.cache_dir,
                           settings.max_resident_models, discover=variants.specs)
    manager.refresh()
    jobs = JobQueue.from_settings(settings, sessions)

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
    app.state.sessions = sessions
    app.state.labels = LabelStore(sessions)
    app.state.runs = RunStore(sessions)
    app.state.variants = variants
    app.state.jobs = jobs
    app.state.templates = Jinja2Templates(directory=str(PROJECT_ROOT / "templates"))
    # The one-click format switch reads the named formats from analysis, declared once.
    app.state.templates.env.globals["prompt_formats"] = PROMPT_FORMATS
    # Token texts shown in quotes as JSON writes them (" ren", "\n"), but HTML-escaped by
    # autoescape rather than by tojson's \u003c escapes ("<|im_end|>" stays readable).
    app.state.templates.env.filters["quoted"] = lambda value: json.dumps(value,
                                                                         ensure_ascii=False)
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(api_circuits.router)
    app.include_router(pages.router)
    app.include_router(pages_runs.router)
    app.include_router(pages_screen.router)
    app.include_router(pages_compare.router)
    app.include_router(pages_compare.api)
    app.include_router(pages_jobs.router)
    app.include_router(pages_jobs.api)
    app.mount("/static", StaticFiles(directory=str(PROJECT_ROOT / "static")), name="static")

    @app.get("/vendor/{name}", include_in_schema=False)
    async def vendor_file(name: str) -> FileResponse:
        from fastapi import HTTPException

        if name not in vendor:
            raise HTTPException(404, f"no vendored file {name!r}")
        return FileResponse(vendor[name], media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    return app
