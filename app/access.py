"""Who may write or compute: one access policy for every route.

The rule. A server that listens beyond loopback (127.0.0.0/8, ::1) needs the operator's
``CIRCUITLAB_API_TOKEN`` for every request that

- writes or computes: every route whose methods are not GET/HEAD/OPTIONS, by default and
  without anything to declare, so a route added later is covered the day it is added;
- computes on the model through GET: such a route opts in with the one-word marker
  ``@computes`` placed under its ``@router.get(...)`` line;
- reads, when the operator sets ``CIRCUITLAB_ACCESS__PROTECT_READS=true`` (reading pages
  and stored runs is open by default).

``@no_token`` exempts a route that must answer everyone (the sign-in form checks the
token itself; health and the vendored scripts are public). The policy is one ASGI
middleware (:class:`AccessGate`) that finds the route a request is bound for and checks
the token before the route reads or validates the body, so it needs no line in route
files and an unauthenticated request learns nothing about the body's fields.

A token is presented as ``Authorization: Bearer <token>`` (API clients; the scheme in
any case), as the session
cookie that ``/login`` sets (the pages), or as a form's ``token`` field (the job forms).
Tokens are compared in constant time and never logged or echoed. "Beyond loopback" is
judged from what the server binds: the resolved ``--host`` addresses at start-up and, per
request, the local address the connection arrived on (``scope["server"]``), so a server
started some other way (``uvicorn --factory``) on 0.0.0.0 is still guarded.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from fastapi import Request
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analysis.errors import CircuitlabError
from app.access_settings import binds_beyond_loopback, is_loopback_address
from app.error_responses import error_response
from app.route_table import route_table

if TYPE_CHECKING:
    from app.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_COOKIE = "circuitlab_session"
_MARK = "__circuitlab_access__"
F = TypeVar("F", bound=Callable[..., Any])


class Unauthorized(CircuitlabError):
    status = 401
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(CircuitlabError):
    status = 403


def computes(endpoint: F) -> F:
    """Marker for a GET route that computes on the model: it needs the token too."""
    setattr(endpoint, _MARK, "computes")
    return endpoint


def no_token(endpoint: F) -> F:
    """Marker for a route that answers everyone (it checks the token itself, or is
    public by nature)."""
    setattr(endpoint, _MARK, "open")
    return endpoint


def route_needs_token(methods: set[str], endpoint: Any, protect_reads: bool) -> bool:
    """Whether the policy guards a route (beyond loopback); the route-table test and the
    OpenAPI contract read the same answer."""
    mark = getattr(endpoint, _MARK, None)
    if mark == "open":
        return False
    return mark == "computes" or protect_reads or bool(set(methods) - SAFE_METHODS)


def off_localhost(settings: Settings, scope: dict[str, Any]) -> bool:
    """The configured bind address, or the address this request actually arrived on."""
    if binds_beyond_loopback(settings.host):
        return True
    server = scope.get("server")
    if server and isinstance(server[0], str):
        try:
            ipaddress.ip_address(server[0].split("%")[0])
        except ValueError:
            return False  # a name (the test client's "testserver"), not a socket address
        return not is_loopback_address(server[0])
    return False


def start_refusal(settings: Settings) -> str | None:
    """Why ``circuitlab serve`` must not start with these settings, or None."""
    if not binds_beyond_loopback(settings.host) or settings.api_token is not None:
        return None
    if settings.access.insecure_no_token:
        return None
    return (f"refusing to serve on {settings.host}: it listens beyond localhost and "
            "CIRCUITLAB_API_TOKEN is not set, so anyone who can reach the port could write "
            "and compute. Set CIRCUITLAB_API_TOKEN, bind 127.0.0.1, or pass "
            "--insecure-no-token to accept that.")


def session_value(token: str) -> str:
    """What the sign-in cookie holds: a keyed digest of the token, not the token."""
    return hmac.new(token.encode(), b"circuitlab-session-v1", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def token_matches(given: str, token: SecretStr) -> bool:
    """Constant-time comparison with the operator's token."""
    return _same(given, token.get_secret_value())


def bearer_token(header: str) -> str | None:
    """The credentials of ``Authorization: Bearer <token>``; the scheme is
    case-insensitive (RFC 9110), so ``bearer`` and ``BEARER`` count too."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


async def presented_token_ok(request: Request, token: str) -> bool | None:
    """True for a right token (header, session cookie or form field), False for a wrong
    one, None when none was presented."""
    given = bearer_token(request.headers.get("authorization", ""))
    if given is not None:
        return _same(given, token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and _same(cookie, session_value(token)):
        return True
    if _is_form(request.headers.get("content-type", "")):
        field = (await request.form()).get("token")  # the gate replays the body it read
        if isinstance(field, str) and field:
            return _same(field, token)
    return False if cookie else None


def _is_form(content_type: str) -> bool:
    return content_type.startswith(("application/x-www-form-urlencoded",
                                    "multipart/form-data"))


async def check_access(request: Request, route: Any) -> None:
    """The policy itself (see the module docstring) for the request bound for ``route``."""
    settings: Settings = request.app.state.settings
    if route is None or not route_needs_token(getattr(route, "methods", set()) or set(),
                                              getattr(route, "endpoint", None),
                                              settings.access.protect_reads):
        return
    if not off_localhost(settings, request.scope):
        return
    if settings.api_token is None:
        if settings.access.insecure_no_token:
            return
        raise Forbidden("this server listens beyond localhost and has no API token, so "
                        "it refuses to write or compute; the operator must set "
                        "CIRCUITLAB_API_TOKEN", field="token")
    ok = await presented_token_ok(request, settings.api_token.get_secret_value())
    if ok is None:
        raise Unauthorized("this needs the API token: send 'Authorization: Bearer <token>' "
                           "or sign in at /login", field="token")
    if not ok:
        raise Unauthorized("the API token is not right; check CIRCUITLAB_API_TOKEN or sign "
                           "in again at /login", field="token")


class _RouteFinder:
    """The route a request is bound for, found as the router finds it (first route whose
    path and method match), before the router, the body or any dependency runs."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._table: list[tuple[Any, Any]] | None = None

    def find(self, scope: Scope) -> Any:
        if self._table is None:  # every route is registered by the first request
            from starlette.routing import compile_path

            self._table = [(compile_path(r.path_format)[0], r) for r in route_table(self.app)
                           if getattr(r, "path_format", None) and getattr(r, "methods", None)]
        method = scope["method"]
        for regex, route in self._table:
            if regex.match(scope["path"]) and (
                    method in route.methods or (method == "HEAD" and "GET" in route.methods)):
                return route
        return None


class AccessGate:
    """ASGI middleware that applies :func:`check_access` before the route reads or
    validates the body: an unauthenticated request beyond localhost gets 401, never a 422
    that names the body's fields. Only a form that may carry the ``token`` field is read
    first (the body is bounded by the body-size limit outside this, and replayed)."""

    def __init__(self, app: ASGIApp, fastapi_app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.routes = _RouteFinder(fastapi_app)
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not off_localhost(self.settings, scope):
            await self.app(scope, receive, send)
            return
        from starlette.exceptions import HTTPException

        route = self.routes.find(scope)
        body: bytes | None = None
        headers = Headers(scope=scope)
        try:
            if (route is not None and "authorization" not in headers
                    and _is_form(headers.get("content-type", ""))):
                body = await _read_body(receive)
            await check_access(Request(scope, receive if body is None
                                       else _replaying(body, receive)), route)
        except CircuitlabError as exc:
            response = error_response(Request(scope, receive), exc.status, exc.message,
                                      exc.field, headers=getattr(exc, "headers", None))
            await response(scope, receive, send)
            return
        except HTTPException as exc:  # the body-size limit, while the form was read
            response = error_response(Request(scope, receive), exc.status_code,
                                      str(exc.detail), "body")
            await response(scope, receive, send)
            return
        await self.app(scope, receive if body is None else _replaying(body, receive), send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then waits on the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install_access_gate(app: Any, settings: Settings) -> None:
    """Install before the body-size limit, so the limit bounds what the gate reads."""
    app.add_middleware(AccessGate, fastapi_app=app, settings=settings)
