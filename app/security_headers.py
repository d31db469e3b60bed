"""Response headers every answer carries.

- ``X-Content-Type-Options: nosniff`` on everything: a JSON or CSV answer is never run as
  a script or rendered as HTML by a browser that guesses types.
- On HTML pages a Content-Security-Policy that lets only the app's own scripts run
  (``script-src 'self'``: /static and /vendor; no inline ``<script>`` or ``onclick=``,
  which templates/ does not use and tests/unit/test_hardening.py keeps that way) and no
  site frame the pages (``frame-ancestors 'none'``, with ``X-Frame-Options: DENY`` for
  old browsers). Inline *styles* stay allowed: Plotly sets them. FastAPI's /docs and
  /redoc load Swagger/ReDoc from a CDN with an inline script, so they get the frame rule
  only.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(DOCS_PATHS)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("X-Frame-Options", "DENY")
                    headers.setdefault("Content-Security-Policy",
                                       "frame-ancestors 'none'" if docs else CSP)
            await send(message)

        await self.app(scope, receive, with_headers)


def install_security_headers(app: ASGIApp) -> None:
    """Install last (outermost), so refusals by the other middleware carry them too."""
    app.add_middleware(SecurityHeaders)  # type: ignore[attr-defined]
