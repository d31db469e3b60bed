"""Signing in with the API token, for the pages beyond localhost: the token is checked
once and a keyed digest of it rides in an HttpOnly, SameSite=Strict cookie, which a page on
another site can neither read nor make the browser send (app/cross_site.py)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from analysis.errors import Busy
from app.access import SESSION_COOKIE, Unauthorized, no_token, session_value, token_matches
from app.deps import SettingsDep, templates_of

router = APIRouter(include_in_schema=False)

# Guessing the token through the sign-in form is slowed down: each client address gets
# this many failed tries per window, then 429 with Retry-After until the window moves on.
LOGIN_TRIES = 10
LOGIN_WINDOW_S = 60.0


class LoginThrottle:
    """Failed sign-ins per client address in a sliding window (in memory, per process)."""

    def __init__(self, tries: int = LOGIN_TRIES, window_s: float = LOGIN_WINDOW_S) -> None:
        self.tries = tries
        self.window_s = window_s
        self._failed: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failed = self._failed.setdefault(client, deque())
        while failed and now - failed[0] > self.window_s:
            failed.popleft()
        return failed

    def check(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            failed = self._recent(client, now)
            if len(failed) >= self.tries:
                wait = max(1, int(self.window_s - (now - failed[0])) + 1)
                raise Busy(f"too many failed sign-ins from this address ({len(failed)} in "
                           f"{self.window_s:g} s); try again in {wait} s", wait)

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())
            if len(self._failed) > 10_000:  # many addresses: forget the quiet ones
                for key in [k for k, v in self._failed.items() if not v]:
                    del self._failed[key]


def _throttle(request: Request) -> LoginThrottle:
    state = request.app.state
    if not hasattr(state, "login_throttle"):
        state.login_throttle = LoginThrottle()
    return state.login_throttle  # type: ignore[no-any-return]


def _local_path(target: str) -> str:
    """Only a path on this app (no //host or scheme): no open redirect."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


@router.get("/login", response_class=HTMLResponse)
@no_token
async def login_page(request: Request, settings: SettingsDep, next: str = "/") -> HTMLResponse:
    return templates_of(request).TemplateResponse(request, "login.html", {
        "next": _local_path(next[:200]), "token_set": settings.api_token is not None})


@router.post("/login")
@no_token  # it checks the token itself
async def login(request: Request, settings: SettingsDep,
                token: Annotated[str, Form(min_length=1, max_length=500)],
                next: Annotated[str, Form(max_length=200)] = "/") -> Response:
    throttle = _throttle(request)
    client = request.client.host if request.client else "unknown"
    throttle.check(client)
    if settings.api_token is None or not token_matches(token, settings.api_token):
        throttle.failed(client)
        raise Unauthorized("that is not the API token (CIRCUITLAB_API_TOKEN)", field="token")
    response = RedirectResponse(_local_path(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, session_value(settings.api_token.get_secret_value()),
                        httponly=True, samesite="strict", path="/",
                        secure=False)  # plain http on a lab network is common; see README
    return response


@router.post("/logout")
@no_token
async def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
