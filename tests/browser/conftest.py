"""A real server process and Debian's headless Chromium driven by Playwright.

Chromium comes from the system (dev.sh installs Debian's package): Playwright's own
browser download is neither needed nor possible here. Screenshots of the main states go
to test-artifacts/ so a person can look at them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CACHE_DIR, PROJECT_ROOT
from tests.waiting import PATIENCE_S, wait_for

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def _chromium() -> str:
    path = os.environ.get("CIRCUITLAB_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("Chromium not found: run ./dev.sh test (it installs Debian's chromium) "
                    "or set CIRCUITLAB_CHROMIUM")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The live server's data directory (its SQLite database): tests register variants
    there, as a finished correction job does."""
    return tmp_path_factory.mktemp("server-data")


@pytest.fixture(scope="session")
def live_server(server_data: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "CIRCUITLAB_CACHE_DIR": str(CACHE_DIR),
           "CIRCUITLAB_DATA_DIR": str(server_data)}
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "server.log", "w")  # noqa: SIM115 - outlives this block
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + PATIENCE_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}; see {ARTIFACTS/'server.log'}")
            try:
                with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as r:
                    if json.load(r).get("model_loaded"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not load its model within {PATIENCE_S:g} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    """One Chromium for the browser tier, closed when the tier ends: Playwright's sync API
    keeps an event loop running in the main thread, and later tiers' asyncio.run (the
    burst and endpoint tests) must not find one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=_chromium(), headless=True,
                               args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors  # type: ignore[attr-defined]
    # The UI must work with the network cut: any request off this machine fails the test.
    offsite: list[str] = []

    def _guard(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    pg.route("**/*", _guard)
    yield pg
    context.close()
    assert offsite == [], f"the page tried to reach the network: {offsite}"


def shot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_js(page, expression: str, arg: object = None,  # type: ignore[no-untyped-def]
            patience_s: float = PATIENCE_S) -> None:
    """Wait until a JS expression (or ``arg => ...`` function) is truthy in the page.
    Playwright's ``wait_for_function`` evaluates its predicate with ``eval`` inside the
    page, which the app's CSP (``script-src 'self'``) forbids; ``page.evaluate`` goes
    through the DevTools protocol, which the CSP does not govern. Waits on the state, with
    the suite's one ceiling."""
    wait_for(lambda: page.evaluate(expression, arg), f"the page to show {expression[:60]!r}",
             patience_s=patience_s, poll_s=0.1)
