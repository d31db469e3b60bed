"""The app's routes as they are served, flat: what the access gate, the error handler's
405 and the OpenAPI contract all read."""

from __future__ import annotations

from typing import Any


def route_table(app: Any) -> list[Any]:
    """Every route as it is served, flat: FastAPI >= 0.16x keeps an included router as one
    nested entry of ``app.routes``; each item has ``path_format``, ``methods``,
    ``endpoint``, ``include_in_schema`` and ``original_route``."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are copied into app.routes
        return [_Plain(r) for r in app.routes]
    return list(iter_route_contexts(app.routes))


class _Plain:
    def __init__(self, route: Any) -> None:
        self.original_route = route

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original_route, name)
