"""Cross-site writes are refused before any route runs.

Our choice: an Origin/Referer check against the app's own origin, plus a SameSite=Strict
session cookie for the token (app/routes/web/login.py), and no per-form CSRF token.

- A request that changes state (any method but GET/HEAD/OPTIONS) and carries an ``Origin``
  (or, without one, a ``Referer``) from another origin is answered 403. Browsers send
  ``Origin`` with every POST, so a form or fetch on another site is caught; ``curl`` and
  scripts send neither and pass (they are not a browser a page can steer). A request with
  ``Authorization`` is not checked: a page on another site cannot set that header.
- On a server that listens only on loopback the origin must also name a loopback host
  (``localhost``, 127.x, ``[::1]``), which stops DNS rebinding (evil.example re-pointed at
  127.0.0.1 is same-origin with itself, not with us).
- The JSON API (``/api/``) answers 415 to form-encoded, multipart, ``text/plain`` and
  untyped bodies: the only bodies a page on another site can send without a CORS
  preflight, which this app never grants.

``CIRCUITLAB_ACCESS__TRUSTED_ORIGINS`` adds origins (e.g. behind a TLS proxy).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.access import SAFE_METHODS, off_localhost
from app.access_settings import is_loopback_address
from app.settings import Settings

# File uploads over the API are multipart by nature; the Origin check above still
# refuses them from another site.
API_UPLOAD_PATHS = ("/api/v1/corpora",)
SIMPLE_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def _is_loopback_host(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost") or is_loopback_address(host)


class CrossSiteGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.trusted = {k for o in settings.access.trusted_origins
                        if (k := _origin_key(o)) is not None}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            refusal = self.refusal(scope)
            if refusal is not None:
                from app.error_responses import error_response

                status, message, field = refusal
                response = error_response(Request(scope, receive), status, message, field)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = Headers(scope=scope)
        if "authorization" not in headers:
            claimed = headers.get("origin") or headers.get("referer")
            if claimed is not None and not self.own_origin(claimed, scope, headers):
                return (403, "cross-site request refused: it comes from "
                        f"{claimed[:80]!r}, not from this app's own pages (the operator can "
                        "trust an origin with CIRCUITLAB_ACCESS__TRUSTED_ORIGINS)", "origin")
        if scope["path"].startswith("/api/") and _has_body(headers):
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            upload = kind == "multipart/form-data" and scope["path"] in API_UPLOAD_PATHS
            if (not kind or kind in SIMPLE_TYPES) and not upload:
                return (415, f"the JSON API takes application/json bodies, not "
                        f"{kind or 'an untyped body'}; send Content-Type: application/json",
                        "content-type")
        return None

    def own_origin(self, claimed: str, scope: Scope, headers: Headers) -> bool:
        key = _origin_key(claimed)
        if key is None:
            return False  # "null" (a sandboxed or file page) or garbage
        if key in self.trusted:
            return True
        scheme = scope.get("scheme", "http")
        own = _origin_key(f"{scheme}://{headers.get('host', '')}")
        if own is None or key != own:
            return False
        return off_localhost(self.settings, scope) or _is_loopback_host(key[1])


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "chunked" in headers.get("transfer-encoding", "").lower()


def install_cross_site_guard(app: ASGIApp, settings: Settings) -> None:
    app.add_middleware(CrossSiteGuard, settings=settings)  # type: ignore[attr-defined]
