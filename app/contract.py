"""The OpenAPI contract names every error a route can answer, in the app's one error shape.

Routes declare nothing for this: when ``/openapi.json`` is built, each operation gets its
4xx/5xx responses from :data:`ERROR_RESPONSES` by what the route is (any route: 400, 404, 422;
a route that takes a body: 413, and 415 on the JSON API; a route the access policy
guards: 401, 403, 413, 429, 503), and FastAPI's own 422 schema (``{"detail": [...]}``,
which this app never sends) is replaced by :class:`ErrorResponse`. A route added later is
covered the same way.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.access import SAFE_METHODS, route_needs_token
from app.route_table import route_table


class ErrorDetail(BaseModel):
    field: str | None
    message: str


class ErrorInfo(BaseModel):
    status: int
    message: str
    field: str | None
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx under /api/: ``{"error": {"status", "message", "field", "details"?}}``."""

    error: ErrorInfo


_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                          "schema": {"type": "integer", "minimum": 1}}}
ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"description": "The Host header names another server (DNS rebinding; "
                         "CIRCUITLAB_ALLOWED_HOSTS adds names), or the body could not be "
                         "read (not UTF-8, a broken form). A request line or header block "
                         "over the HTTP server's limit (e.g. a query string of tens of KB) "
                         "is refused by uvicorn itself before the app: a plain-text 400 "
                         "'Invalid HTTP request received.', not this JSON shape."},
    401: {"description": "The API token is missing or wrong (beyond localhost).",
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    403: {"description": "Refused: cross-site, or beyond localhost with no token configured."},
    404: {"description": "No such record, model or neuron."},
    413: {"description": "The body, or an input in it, is over the operator's limit: the "
                         "body size (CIRCUITLAB_BODY_LIMITS__*), a prompt over "
                         "max_prompt_tokens (default 512) tokens of the model, more than "
                         "max_batch_size (default 64) screening items, epochs over "
                         "max_epochs (default 50), top_k over max_top_k (default 100); the "
                         "message names the limit and its setting."},
    415: {"description": "The JSON API takes application/json bodies."},
    422: {"description": "The input is invalid; the message names the field and the limit."},
    429: {"description": "The model's queue is full; retry after Retry-After seconds.",
          "headers": _RETRY},
    503: {"description": "The model stayed busy past the longest wait; retry later.",
          "headers": _RETRY},
}


# Routes that run (or size) a circuit: their 413 names the operator's circuit limits.
CIRCUIT_ROUTES = ("/api/v1/attribute", "/api/v1/estimate")


def _limits_text(app: FastAPI) -> str:
    settings = getattr(app.state, "settings", None)
    limits = getattr(settings, "circuit_limits", None)
    if limits is None:
        return ""
    return (f" Circuit limits here: max_prompt_tokens={limits.max_prompt_tokens} (formatted "
            f"prompt), max_nodes={limits.max_nodes}, max_edge_pairs={limits.max_edge_pairs} "
            f"(max_nodes x max_nodes with edges on), max_ig_steps={limits.max_ig_steps}; "
            "the message names the one exceeded.")


def error_codes(route: Any, protect_reads: bool) -> list[int]:
    codes = {400, 404, 422}  # 400: a Host the server does not answer to (app/host_guard.py)
    if set(route.methods) - SAFE_METHODS:
        codes |= {413}  # a body that cannot be read; one over a limit
        if route.path_format.startswith("/api/"):
            codes.add(415)
    if route_needs_token(route.methods, route.endpoint, protect_reads):
        codes |= {401, 403, 413, 429, 503}  # model work: token-sized inputs, the queue
    return sorted(codes)


def complete_contract(schema: dict[str, Any], app: FastAPI, protect_reads: bool) -> None:
    ref = "#/components/schemas/ErrorResponse"
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(ErrorResponse.model_json_schema(
        ref_template="#/components/schemas/{model}")["$defs"])
    components["ErrorResponse"] = {k: v for k, v in ErrorResponse.model_json_schema(
        ref_template="#/components/schemas/{model}").items() if k != "$defs"}
    for route in route_table(app):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for code in error_codes(route, protect_reads):
                responses[str(code)] = {
                    **ERROR_RESPONSES[code],
                    "content": {"application/json": {"schema": {"$ref": ref}}}}
                if code == 413 and route.path_format in CIRCUIT_ROUTES:
                    responses["413"]["description"] += _limits_text(app)


def install_contract(app: FastAPI, protect_reads: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            complete_contract(schema, app, protect_reads)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
