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


def test_model_work_runs_on_one_dedicated_thread_and_waiters_hold_none(
        client: TestClient) -> None:
    """A burst queues futures, not threads: every piece of work runs on the same named
    worker thread, and 30 waiting requests add no thread (they used to hold one each of
    the shared pool, starving cheap routes and growing RSS). Event-driven, not timed."""
    import asyncio
    import threading

    from tests.waiting import PATIENCE_S

    manager = client.app.state.manager  # type: ignore[attr-defined]
    release = threading.Event()
    ran_on: list[tuple[int, str]] = []

    def work(lm: object) -> None:
        ran_on.append((threading.get_ident(), threading.current_thread().name))
        release.wait(PATIENCE_S)

    async def burst() -> int:
        tasks = [asyncio.ensure_future(manager.run("tiny-llama", work)) for _ in range(30)]
        while manager.queue_status()["depth"] < 30:
            await asyncio.sleep(0.01)
        threads = threading.active_count()
        release.set()
        await asyncio.gather(*tasks)
        return threads

    before = threading.active_count()
    during = asyncio.run(burst())
    assert during <= before + 1  # at most the worker thread itself, started on first use
    assert len(ran_on) == 30 and len({ident for ident, _ in ran_on}) == 1
    assert ran_on[0][1].startswith("circuitlab-model")
