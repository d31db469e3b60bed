"""Hardening (issue 23): inputs that used to 500, reads closed to DNS rebinding, the token
checked before the body, response headers, CSV cells, rate limits and stated limits."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

DEEP_YAML = "texts: " + "[" * 50_000 + "]" * 50_000
ALIASES_YAML = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: [" + ", ".join(["*a"] * 100) + "]\n"


@pytest.mark.parametrize("text", [DEEP_YAML, ALIASES_YAML, "when: 2001-13-45\n"],
                         ids=["deep", "aliases", "bad-timestamp"])
def test_yaml_import_refuses_a_hostile_document_with_a_422_naming_it(
        client: TestClient, text: str) -> None:
    api = client.post("/api/v1/jobs/import-yaml", content=text.encode(),
                      headers={"Content-Type": "application/yaml"})
    assert api.status_code == 422, api.text
    assert api.json()["error"]["field"] == "yaml"
    assert "YAML" in api.json()["error"]["message"]
    page = client.post("/jobs/import", data={"yaml_text": text})
    assert page.status_code == 422, page.text[:300]
    assert "YAML" in page.text


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/runs", "/runs", "/api/v1/health",
                                  "/runs/anything/neuron?layer=0&neuron=1"])
def test_a_foreign_host_header_is_refused_on_every_route(client: TestClient,
                                                         path: str) -> None:
    """DNS rebinding: evil.example re-pointed at 127.0.0.1 reads nothing, computes nothing."""
    served = client.app.state.manager.served  # type: ignore[attr-defined]
    r = client.get(path, headers={"Host": "evil.example:8000"})
    assert r.status_code == 400, r.text[:300]
    assert "evil.example" in r.text and "CIRCUITLAB_ALLOWED_HOSTS" in r.text
    assert client.app.state.manager.served == served  # type: ignore[attr-defined]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000",
                                  "app.localhost", "10.0.0.7:8000", "testserver"])
def test_local_names_addresses_and_configured_hosts_are_answered(client: TestClient,
                                                                 host: str) -> None:
    assert client.get("/api/v1/health", headers={"Host": host}).status_code == 200


def test_the_allow_list_is_localhost_and_the_configured_host_by_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from app.host_guard import HostAllowList
    from app.settings import Settings

    monkeypatch.delenv("CIRCUITLAB_ALLOWED_HOSTS", raising=False)
    default = HostAllowList(Settings())
    assert not default.allows("testserver") and not default.allows("evil.example")
    assert default.allows("localhost:8000") and default.allows("127.0.0.1")
    assert HostAllowList(Settings(host="lab.example.org")).allows("lab.example.org:8000")
    monkeypatch.setenv("CIRCUITLAB_ALLOWED_HOSTS", "lab.example.org, *.corp.example")
    more = HostAllowList(Settings())
    assert more.allows("lab.example.org") and more.allows("gpu.corp.example:443")
    assert not more.allows("corp.example.evil.example")


@pytest.fixture(scope="module")
def remote(tiny_dirs, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Listening on every interface, with a token."""
    from tests.unit.access_apps import TOKEN, tiny_client

    with tiny_client(tiny_dirs, tmp_path_factory.mktemp("remote"), host="0.0.0.0",
                     api_token=TOKEN) as c:
        yield c


@pytest.mark.parametrize(("path", "body", "content_type"), [
    ("/api/v1/predict", b"{not json", "application/json"),
    ("/api/v1/predict", b'{"prompt": 5, "secret_field": []}', "application/json"),
    ("/api/v1/jobs", b"[]", "application/json"),
    ("/analyze/predict", b"prompt=", "application/x-www-form-urlencoded"),
])
def test_beyond_localhost_the_token_is_checked_before_the_body(
        remote: TestClient, path: str, body: bytes, content_type: str) -> None:
    r = remote.post(path, content=body, headers={"Content-Type": content_type})
    assert r.status_code == 401, r.text[:300]
    assert "prompt" not in r.text and "secret_field" not in r.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_case_insensitive(remote: TestClient, scheme: str) -> None:
    from tests.unit.access_apps import TOKEN

    r = remote.post("/api/v1/predict", json={"prompt": "The capital of France is"},
                    headers={"Authorization": f"{scheme} {TOKEN}"})
    assert r.status_code == 200, r.text[:300]
    wrong = remote.post("/api/v1/predict", json={"prompt": "Hi"},
                        headers={"Authorization": f"{scheme} {TOKEN}x"})
    assert wrong.status_code == 401


def test_a_form_that_carries_the_token_still_passes(remote: TestClient) -> None:
    """The job form sends the token as a field: the gate reads the form and the route
    reads it again."""
    from tests.unit.access_apps import TOKEN
    from tests.unit.test_cross_site import JOB

    refused = remote.post("/jobs", data=JOB)
    assert refused.status_code == 401
    r = remote.post("/jobs", data={**JOB, "token": TOKEN}, follow_redirects=False)
    assert r.status_code < 400, r.text[:300]


def test_requests_waiting_for_the_model_hold_no_thread(client: TestClient) -> None:
    """A burst queues asyncio waiters, not threads: with 30 requests waiting behind one
    that is running, the process has at most two more threads than before (they used to
    hold one pool thread each, starving every route whose dependencies need the pool and
    growing RSS). Work still runs one piece at a time. Event-driven, not timed."""
    import asyncio
    import threading

    from app.services.model_manager import HANDOFF_THREADS
    from tests.waiting import PATIENCE_S

    manager = client.app.state.manager  # type: ignore[attr-defined]
    release = threading.Event()
    running = 0
    most = 0
    guard = threading.Lock()

    def work(lm: object) -> None:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        release.wait(PATIENCE_S)
        with guard:
            running -= 1

    async def burst() -> int:
        tasks = [asyncio.ensure_future(manager.run("tiny-llama", work)) for _ in range(30)]
        while manager.queue_status()["depth"] < 30 or running < 1:
            await asyncio.sleep(0.01)
        threads = threading.active_count()
        release.set()
        await asyncio.gather(*tasks)
        return threads

    before = threading.active_count()
    during = asyncio.run(burst())
    # The one running and the next in line hold a pool thread; the other 28 hold none.
    assert during <= before + HANDOFF_THREADS
    assert most == 1


def test_every_answer_says_nosniff_and_pages_allow_only_own_scripts(client: TestClient
                                                                   ) -> None:
    api = client.get("/api/v1/health")
    assert api.headers["x-content-type-options"] == "nosniff"
    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert page.headers["x-content-type-options"] == "nosniff"
    refused = client.get("/", headers={"Host": "evil.example"})  # refusals carry them too
    assert refused.headers["x-content-type-options"] == "nosniff"


def test_templates_have_no_inline_scripts_or_handlers() -> None:
    """The CSP forbids them: behaviour lives in static/js/ (data-action)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "templates"
    handler = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
    script = re.compile(r"<script(?![^>]*\b(src=|type=\"application/json\"))[^>]*>",
                        re.IGNORECASE)
    found = [f"{p.name}: {m.group(0)}" for p in sorted(root.glob("*.html"))
             for m in [*handler.finditer(p.read_text()), *script.finditer(p.read_text())]]
    assert found == []
    assert "javascript:" not in "".join(p.read_text() for p in root.glob("*.html"))


@pytest.mark.parametrize(("cell", "written"), [
    ("=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"), ("+1+1", "'+1+1"),
    ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("-0.25", "-0.25"), ("+3e-05", "+3e-05"), (" renin", " renin"), (7, 7)])
def test_csv_cells_never_start_a_formula(cell: object, written: object) -> None:
    from frontend.csv_cells import csv_text, safe_cell

    assert safe_cell(cell) == written
    assert csv_text(["label"], [["=1+2"]]).splitlines()[1] == "'=1+2"


def test_every_csv_writer_uses_the_one_helper() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    writers = [str(p.relative_to(root)) for folder in ("frontend", "app", "analysis")
               for p in (root / folder).rglob("*.py") if "csv.writer(" in p.read_text()]
    assert writers == ["frontend/csv_cells.py"]


def test_sign_in_is_rate_limited(tiny_dirs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.routes.web.login import LOGIN_TRIES
    from tests.unit.access_apps import TOKEN, tiny_client

    with tiny_client(tiny_dirs, tmp_path, host="0.0.0.0", api_token=TOKEN) as c:
        for _ in range(LOGIN_TRIES):
            assert c.post("/login", data={"token": "guess"}).status_code == 401
        r = c.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_the_schema_states_the_201_and_the_413_limits(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    submit = schema["paths"]["/api/v1/jobs"]["post"]["responses"]
    assert "201" in submit and "200" not in submit
    predict = schema["paths"]["/api/v1/predict"]["post"]["responses"]
    assert "max_prompt_tokens" in predict["413"]["description"]
    assert "uvicorn" in predict["400"]["description"]
    comps = schema["components"]["schemas"]
    assert "MAX_EPOCHS" in comps["JobRequest"]["properties"]["epochs"]["description"]
    assert "64" in comps["ScreenRequest"]["properties"]["items"]["description"]


def test_every_test_is_marked_with_its_folders_tier(request: pytest.FixtureRequest) -> None:
    """tests/conftest.py marks by folder: this unit test carries 'unit', and the two
    integration files without a pytestmark line are integration all the same."""
    import subprocess
    import sys

    assert request.node.get_closest_marker("unit") is not None
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "-m", "integration", "tests/integration/test_always_on_embedded.py",
         "tests/integration/test_layer_patching.py"],
        capture_output=True, text=True, check=False).stdout
    assert "test_always_on_embedded.py::" in out and "test_layer_patching.py::" in out
    assert "deselected" not in out
