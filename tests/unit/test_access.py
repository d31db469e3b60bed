"""The access policy (issue 16): off-localhost, every route that writes or computes refuses
a request without the API token (the route table is walked, so a route added later is
covered or this fails), reads stay open, the token is checked in constant time and never
logged; the server refuses to start beyond localhost without one."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.routing import Mount
from typer.testing import CliRunner

from app.access import SAFE_METHODS, SESSION_COOKIE, route_needs_token, start_refusal
from app.access_settings import AccessSettings, binds_beyond_loopback
from app.cli import cli
from app.route_table import route_table
from app.settings import Settings
from tests.unit.access_apps import TOKEN, tiny_client

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
RUN = {"prompt": PROMPT, "answer_a": " aldosterone", "answer_b": " renin", "tau": 0.02,
       "method": "grad_x_act"}
SHORT = "The capital of France is"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Routes that answer everyone on purpose: signing in checks the token itself.
OPEN_WRITES = {"/login", "/logout"}


@pytest.fixture(scope="module")
def remote(tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[TestClient]:
    """Listening on every interface, with a token."""
    with tiny_client(tiny_dirs, tmp_path_factory.mktemp("remote"), host="0.0.0.0",
                     api_token=TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def run_id(remote: TestClient) -> str:
    r = remote.post("/api/v1/attribute", json=RUN, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["run_id"]  # type: ignore[no-any-return]


def _url(route: Any, run_id: str) -> str:
    values = {"run_id": run_id, "job_id": "no-such-job", "layer": "0", "neuron": "0",
              "kind": "json", "what": "json", "name": "htmx.min.js",
              "supernode_id": "1"}
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: values[m.group(1)], route.path_format)


def _call(client: TestClient, method: str, route: Any, url: str,
          headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    if method in SAFE_METHODS or method == "DELETE":
        return client.request(method, url, headers=headers)
    if route.path_format.startswith("/api/"):
        return client.request(method, url, json={}, headers=headers)
    return client.request(method, url, data={"x": "1"}, headers=headers)


def test_every_write_or_compute_route_needs_the_token_off_localhost(
        remote: TestClient, run_id: str) -> None:
    guarded, open_writes = [], set()
    for route in route_table(remote.app):
        if isinstance(route.original_route, Mount):
            continue  # /static: files, GET only
        if not isinstance(route.original_route, APIRoute):
            # Starlette routes (the docs) bypass dependencies: they must only read.
            assert set(route.methods or ()) <= SAFE_METHODS, route.path_format
            continue
        if route_needs_token(route.methods, route.endpoint, False):
            guarded.append(route)
        elif set(route.methods) - SAFE_METHODS:
            open_writes.add(route.path_format)
    assert open_writes == OPEN_WRITES
    assert len(guarded) >= 25  # every POST/PUT/DELETE plus the model-computing GETs
    for route in guarded:
        url = _url(route, run_id)
        for method in route.methods:
            refused = _call(remote, method, route, url)
            assert refused.status_code == 401, (method, url, refused.status_code)
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            wrong = _call(remote, method, route, url, {"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, (method, url)
            allowed = _call(remote, method, route, url, AUTH)
            assert allowed.status_code not in (401, 403), (method, url, allowed.text[:300])
            assert allowed.status_code < 500, (method, url, allowed.text[:300])


def test_reads_stay_open_and_do_no_model_work(remote: TestClient, run_id: str) -> None:
    manager = remote.app.state.manager  # type: ignore[attr-defined]
    for route in route_table(remote.app):
        if not isinstance(route.original_route, APIRoute) or route_needs_token(
                route.methods, route.endpoint, False):
            continue
        if set(route.methods) - SAFE_METHODS:
            continue  # /login, /logout
        served = manager.served
        r = remote.get(_url(route, run_id))
        assert r.status_code not in (401, 403) and r.status_code < 500, (route.path_format,
                                                                          r.text[:300])
        # A GET that computes on the model must carry @computes; this catches one that
        # does not.
        assert manager.served == served, f"{route.path_format} ran the model: mark @computes"


def test_the_model_computing_gets_are_marked(remote: TestClient, run_id: str) -> None:
    r = remote.get("/api/v1/neurons/1/5")
    assert r.status_code == 401
    assert remote.get("/api/v1/neurons/1/5", headers=AUTH).status_code == 200
    assert remote.get(f"/runs/{run_id}/neuron?layer=1&neuron=5").status_code == 401


def test_labels_on_the_api_and_the_form_need_the_token(remote: TestClient,
                                                       run_id: str) -> None:
    """The issue's finding: PUT label and the form's label answered 200 without a token."""
    assert remote.put("/api/v1/neurons/1/5/label", json={"label": "x"}).status_code == 401
    form = {"layer": "1", "neuron": "5", "label": "kidney"}
    assert remote.post(f"/runs/{run_id}/label", data=form).status_code == 401
    # The job forms' token field is accepted too.
    ok = remote.post(f"/runs/{run_id}/label", data={**form, "token": TOKEN})
    assert ok.status_code == 200 and "kidney" in ok.text
    assert remote.post(f"/runs/{run_id}/label",
                       data={**form, "token": "wrong"}).status_code == 401


def test_signing_in_sets_a_strict_cookie_that_opens_the_forms(
        tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    with tiny_client(tiny_dirs, tmp_path, host="0.0.0.0", api_token=TOKEN) as c:
        assert "Sign in" in c.get("/").text
        assert c.post("/login", data={"token": "wrong"}).status_code == 401
        signed = c.post("/login", data={"token": TOKEN, "next": "//evil.example/x"},
                        follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert TOKEN not in cookie  # a keyed digest rides in it, not the token
        predicted = c.post("/analyze/predict", data={"prompt": SHORT})
        assert predicted.status_code == 200, predicted.text
        c.post("/logout")
        assert c.post("/analyze/predict", data={"prompt": SHORT}).status_code == 401
        c.cookies.set(SESSION_COOKIE, "forged")
        assert c.post("/analyze/predict", data={"prompt": SHORT}).status_code == 401


def test_on_localhost_writes_need_no_token(client: TestClient) -> None:
    assert client.put("/api/v1/neurons/1/5/label", json={"label": ""}).status_code == 200


def test_the_address_a_request_arrived_on_counts(tiny_dirs: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """Configured for 127.0.0.1 but reached on a LAN address (started some other way):
    guarded all the same; a loopback address other than .1 is local."""
    with tiny_client(tiny_dirs, tmp_path, base_url="http://10.1.2.3:8000",
                     api_token=TOKEN) as c:
        assert c.put("/api/v1/neurons/1/5/label", json={"label": ""}).status_code == 401
        assert c.get("/api/v1/models").status_code == 200
    with tiny_client(tiny_dirs, tmp_path, base_url="http://127.0.0.2:8000",
                     api_token=TOKEN) as c:
        assert c.put("/api/v1/neurons/1/5/label", json={"label": ""}).status_code == 200


def test_without_a_token_configured_off_localhost_nothing_writes(
        tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    with tiny_client(tiny_dirs, tmp_path, host="0.0.0.0") as c:
        r = c.post("/api/v1/predict", json={"prompt": SHORT})
        assert r.status_code == 403
        assert "CIRCUITLAB_API_TOKEN" in r.json()["error"]["message"]
    with tiny_client(tiny_dirs, tmp_path, host="0.0.0.0",
                     access=AccessSettings(insecure_no_token=True)) as c:
        assert c.post("/api/v1/predict", json={"prompt": SHORT}).status_code == 200


def test_protected_reads(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    with tiny_client(tiny_dirs, tmp_path, host="0.0.0.0", api_token=TOKEN,
                     access=AccessSettings(protect_reads=True)) as c:
        assert c.get("/runs").status_code == 401
        assert c.get("/api/v1/models").status_code == 401
        assert c.get("/api/v1/models", headers=AUTH).status_code == 200
        assert c.get("/api/v1/health").status_code == 200  # monitors
        assert c.get("/login").status_code == 200


def test_the_token_is_never_logged_or_shown(remote: TestClient,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        remote.post("/api/v1/predict", json={"prompt": SHORT}, headers=AUTH)
        remote.post("/api/v1/predict", json={"prompt": SHORT},
                    headers={"Authorization": f"Bearer {TOKEN}x"})
    assert TOKEN not in caplog.text
    settings = remote.app.state.settings  # type: ignore[attr-defined]
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())


@pytest.mark.parametrize(("host", "beyond"), [
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False),
    ("0.0.0.0", True), ("::", True), ("", True), ("10.0.0.7", True),
    ("no-such-host.invalid", True)])
def test_beyond_loopback_is_judged_from_the_resolved_address(host: str, beyond: bool) -> None:
    assert binds_beyond_loopback(host) is beyond


def test_serving_beyond_localhost_needs_a_token_or_the_loud_opt_out() -> None:
    assert start_refusal(Settings(host="127.0.0.2")) is None
    refusal = start_refusal(Settings(host="0.0.0.0"))
    assert refusal is not None and "--insecure-no-token" in refusal
    assert start_refusal(Settings(host="0.0.0.0", api_token=SecretStr("t"))) is None
    assert start_refusal(Settings(host="0.0.0.0",
                                  access=AccessSettings(insecure_no_token=True))) is None
    # docker compose's ${CIRCUITLAB_API_TOKEN:-} is no token, not an empty one.
    assert start_refusal(Settings(host="0.0.0.0", api_token="  ")) is not None


def test_the_cli_refuses_to_serve_beyond_localhost_without_a_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIRCUITLAB_API_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0" in result.output
