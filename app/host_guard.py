"""Every request must name this server in its ``Host`` header: DNS rebinding is refused.

A page on evil.example whose name is re-pointed at 127.0.0.1 can make the browser send
requests here that are same-origin with the attacker's page, so the browser lets that
page read the answers (stored runs, jobs) and trigger model work through GET routes. The
one thing such a request cannot hide is ``Host: evil.example``. So every route, reads
included, answers only to

- loopback names and addresses: ``localhost``, ``*.localhost``, 127.x, ``[::1]``;
- any IP address literal (a rebinding attack needs the attacker's *name*; a server bound
  to 0.0.0.0 is reached on its own address);
- the configured ``CIRCUITLAB_HOST`` when it is a name;
- the names in ``CIRCUITLAB_ALLOWED_HOSTS`` (comma-separated; ``*.example.org`` matches
  its subdomains, ``*`` turns the check off, e.g. behind a proxy that checks it).

Anything else is answered 400 in the app's error shape, naming the host and the setting.
"""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.settings import Settings

WILDCARD_BINDS = ("", "0.0.0.0", "::")


def host_name(header: str) -> str:
    """The name of a Host header, without port or IPv6 brackets, lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header  # a name, or a bare IPv6 address


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True


class HostAllowList:
    def __init__(self, settings: Settings) -> None:
        names = {"localhost"}
        if settings.host.strip().lower() not in WILDCARD_BINDS:
            names.add(host_name(settings.host))
        self.any = False
        self.suffixes: list[str] = [".localhost"]
        for entry in settings.allowed_hosts:
            entry = entry.strip().lower()
            if entry == "*":
                self.any = True
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            elif entry:
                names.add(host_name(entry))
        self.names = names

    def allows(self, header: str | None) -> bool:
        if self.any or header is None:  # no Host (HTTP/1.0): not a browser's request
            return True
        name = host_name(header).rstrip(".")
        return (name in self.names or _is_ip(name)
                or any(name.endswith(s) for s in self.suffixes))

    def described(self) -> str:
        return ", ".join([*sorted(self.names), *(f"*{s}" for s in self.suffixes),
                          "IP addresses"])


class HostGuard:
    """ASGI middleware: the allow-list above, before anything else runs."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.allow = HostAllowList(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = Headers(scope=scope).get("host")
            if not self.allow.allows(header):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                from app.error_responses import error_response

                response = error_response(
                    Request(scope, receive), 400,
                    f"this server does not answer to the host name {header!r} (the Host "
                    f"header); it answers to {self.allow.described()}. The operator adds "
                    "names with CIRCUITLAB_ALLOWED_HOSTS (comma-separated)", "host")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_host_guard(app: ASGIApp, settings: Settings) -> None:
    """Install last, so it is the outermost middleware."""
    app.add_middleware(HostGuard, settings=settings)  # type: ignore[attr-defined]
