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
token itself; health and the vendored scripts are public). The policy is one app-level
dependency (:data:`AccessPolicy`), so it needs no line in route files.

A token is presented as ``Authorization: Bearer <token>`` (API clients), as the session
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
import socket
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, Field, SecretStr

from analysis.errors import CircuitlabError

if TYPE_CHECKING:
    from app.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_COOKIE = "circuitlab_session"
_MARK = "__circuitlab_access__"
F = TypeVar("F", bound=Callable[..., Any])


class AccessSettings(BaseModel):
    """``CIRCUITLAB_ACCESS__*``; the token itself is ``CIRCUITLAB_API_TOKEN``."""

    insecure_no_token: bool = Field(
        False, description="Serve beyond localhost WITHOUT a token: anyone who can reach "
                           "the port may write labels, queue jobs and occupy the model. "
                           "`circuitlab serve --insecure-no-token`.")
    protect_reads: bool = Field(
        False, description="Beyond localhost, reading pages and stored runs needs the "
                           "token too (sign in at /login).")
    trusted_origins: list[str] = Field(
        default_factory=list, description="Origins besides the app's own whose form posts "
                                          "are accepted, e.g. https://lab.example.org "
                                          "behind a TLS proxy.")


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


def is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@lru_cache(maxsize=32)
def binds_beyond_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on any non-loopback address. A name is resolved
    (what the server will bind); one that does not resolve counts as beyond loopback."""
    if host in ("", "0.0.0.0", "::"):
        return True
    if is_loopback_address(host):
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True
    return not infos or not all(is_loopback_address(str(i[4][0])) for i in infos)


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


async def presented_token_ok(request: Request, token: str) -> bool | None:
    """True for a right token (header, session cookie or form field), False for a wrong
    one, None when none was presented."""
    header = request.headers.get("authorization", "")
    if header.startswith("Bearer "):
        return _same(header.removeprefix("Bearer ").strip(), token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and _same(cookie, session_value(token)):
        return True
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        field = (await request.form()).get("token")  # parsed already by the route
        if isinstance(field, str) and field:
            return _same(field, token)
    return False if cookie else None


async def check_access(request: Request) -> None:
    """The policy itself (see the module docstring)."""
    settings: Settings = request.app.state.settings
    route = request.scope.get("route")
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


AccessPolicy = Depends(check_access)
