"""One error handler for the whole app.

API routes (``/api/...``) answer JSON with a fixed shape::

    {"error": {"status": 422, "message": "...", "field": "prompt", "details": [...]}}

Pages answer an HTML fragment carrying the same message, which htmx swaps in next to the
form. A user's mistake is a 4xx with a message a person can act on; anything unexpected
is a 500 that says so without a stack trace (the trace goes to the server log).
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from analysis.errors import CircuitlabError
from app.route_table import route_table

log = logging.getLogger("circuitlab")


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts)


_LONG_QUOTED = re.compile(r"'([^']{60,})'|\"([^\"]{60,})\"")
MAX_MESSAGE_CHARS = 600


def clip_echoes(message: str) -> str:
    """A value echoed back (an id, a name) is shortened: the user sees which one, the
    server does not mirror kilobytes of it."""
    def short(match: re.Match[str]) -> str:
        quote = match.group(0)[0]
        value = match.group(1) or match.group(2)
        return f"{quote}{value[:40]}…{quote} ({len(value):,} characters)"

    message = _LONG_QUOTED.sub(short, message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "…"
    return message


def _not_finite(value: Any) -> str | None:
    """'NaN' / 'Infinity' for a non-finite number (JSON's NaN literal, or ?tau=nan)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return None


def _problem(err: dict[str, Any]) -> tuple[str, str]:
    """(field, message) of one validation error, in words a person can act on."""
    if err.get("type") == "json_invalid":
        # FastAPI puts the byte offset in loc; it is not a field.
        reason = str((err.get("ctx") or {}).get("error", "")).strip()
        return "body", f"the body is not valid JSON{f' ({reason})' if reason else ''}"
    field = _loc_to_field(err.get("loc", ()))
    if (name := _not_finite(err.get("input"))) is not None:
        return field, f"{name} is not a number this accepts; give a finite number"
    return field, str(err.get("msg", "invalid value")).removeprefix("Value error, ")


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route serves on ``path``."""
    from starlette.routing import compile_path

    exact: set[str] = set()
    templated: set[str] = set()
    for route in route_table(app):
        path_format = getattr(route, "path_format", None)
        if not path_format or not route.methods:
            continue
        if path_format == path:
            exact |= set(route.methods)
        elif compile_path(path_format)[0].match(path):
            templated |= set(route.methods)
    # /jobs/check is its own resource, though /jobs/{job_id} would match it too.
    return sorted(exact or templated)


def error_response(
    request: Request,
    status: int,
    message: str,
    field: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    message = clip_echoes(message)
    response = _error_body(request, status, message, field, details)
    response.headers.update(headers or {})
    return response


def _error_body(request: Request, status: int, message: str, field: str | None,
                details: list[dict[str, Any]] | None) -> Response:
    if _wants_json(request):
        body: dict[str, Any] = {"status": status, "message": message, "field": field}
        if details:
            body["details"] = details
        return JSONResponse({"error": body}, status_code=status)
    templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        "_error.html",
        {"status": status, "message": message, "field": field, "details": details or []},
        status_code=status,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CircuitlabError)
    async def _circuitlab(request: Request, exc: CircuitlabError) -> Response:
        return error_response(request, exc.status, exc.message, exc.field,
                               headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = []
        for err in exc.errors():
            field, msg = _problem(err)
            details.append({"field": field, "message": clip_echoes(msg)})
        first = details[0] if details else {"field": None, "message": "invalid request"}
        summary = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        if len(details) > 1:
            summary += f" (and {len(details) - 1} more problem(s))"
        return error_response(request, 422, summary, first["field"], details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = ("the body could not be read: send UTF-8 JSON (the API) or the "
                       "page's own form")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no page or endpoint at {clip_echoes(repr(request.url.path))}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # The router names the first route on the path only; Allow lists them all.
            allowed = allowed_methods(request.app, request.url.path)
            headers["Allow"] = ", ".join(allowed) or headers.get("Allow", "")
            message = (f"{request.method} is not allowed here; use "
                       f"{' or '.join(allowed) or 'another path'}")
        return error_response(request, exc.status_code, message, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        incident = uuid.uuid4().hex[:8]
        log.exception("unexpected error %s on %s %s", incident, request.method,
                      request.url.path)
        return error_response(
            request, 500,
            f"internal error (incident {incident}); the server log has the details",
        )
