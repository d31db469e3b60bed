"""Signing in with the API token, for the pages beyond localhost: the token is checked
once and a keyed digest of it rides in an HttpOnly, SameSite=Strict cookie, which a page on
another site can neither read nor make the browser send (app/cross_site.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.access import SESSION_COOKIE, Unauthorized, no_token, session_value, token_matches
from app.deps import SettingsDep, templates_of

router = APIRouter(include_in_schema=False)


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
async def login(settings: SettingsDep,
                token: Annotated[str, Form(min_length=1, max_length=500)],
                next: Annotated[str, Form(max_length=200)] = "/") -> Response:
    if settings.api_token is None or not token_matches(token, settings.api_token):
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
