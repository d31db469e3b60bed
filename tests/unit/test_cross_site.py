"""Cross-site writes are refused (issue 16): a form post from another origin changes
nothing, the JSON API refuses the bodies a page on another site can send without a CORS
preflight (415), and the app's own pages, API clients and scripts keep working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.access_settings import AccessSettings
from app.cross_site import CrossSiteGuard
from app.settings import Settings
from tests.unit.access_apps import tiny_client

OWN = "http://127.0.0.1:8000"
EVIL = {"Origin": "http://evil.example"}
RUN = {"prompt": "The capital of France is", "answer_a": " Paris", "answer_b": " Rome",
       "tau": 0.02, "method": "grad_x_act"}
JOB = {"name": "x", "base_model": "tiny-llama", "prompt": "The capital of France is",
       "answer_a": " Paris", "answer_b": " Rome", "texts": "Paris is the capital."}


@pytest.fixture(scope="module")
def local(tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[TestClient]:
    """On localhost, as the browser reaches it."""
    with tiny_client(tiny_dirs, tmp_path_factory.mktemp("xsite"), base_url=OWN) as c:
        yield c


@pytest.fixture(scope="module")
def run_id(local: TestClient) -> str:
    r = local.post("/api/v1/attribute", json=RUN)
    assert r.status_code == 200, r.text
    return r.json()["run_id"]  # type: ignore[no-any-return]


def test_a_cross_origin_label_post_is_refused_and_stores_nothing(local: TestClient,
                                                                 run_id: str) -> None:
    form = {"layer": "1", "neuron": "3", "label": "evil"}
    r = local.post(f"/runs/{run_id}/label", data=form, headers=EVIL)
    assert r.status_code == 403 and "cross-site" in r.text
    assert local.get("/api/v1/neurons/1/3").json()["label"] is None
    same = local.post(f"/runs/{run_id}/label", data=form, headers={"Origin": OWN})
    assert same.status_code == 200 and "evil" in same.text  # the app's own page works
    local.put("/api/v1/neurons/1/3/label", json={"label": ""})


def test_a_cross_origin_job_post_queues_nothing(local: TestClient) -> None:
    before = len(local.get("/api/v1/jobs").json()["jobs"])
    r = local.post("/jobs", data=JOB, headers=EVIL)
    assert r.status_code == 403
    assert len(local.get("/api/v1/jobs").json()["jobs"]) == before


@pytest.mark.parametrize("headers", [
    {"Referer": "http://evil.example/page"},  # no Origin: the Referer decides
    {"Origin": "null"},  # a sandboxed frame or a file
    {"Origin": "http://127.0.0.1:9999"},  # another port is another origin
    {"Origin": "https://127.0.0.1:8000"},  # another scheme too
])
def test_other_origins_are_refused(local: TestClient, headers: dict[str, str]) -> None:
    assert local.post("/analyze/predict", data={"prompt": "Hi"}, headers=headers
                      ).status_code == 403


def test_dns_rebinding_is_refused_on_a_local_server(tiny_dirs: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """evil.example re-pointed at 127.0.0.1 is same-origin with itself, not with us: the
    Host allow-list refuses it first (400); were the name allowed, the origin check still
    refuses the write (403)."""
    with tiny_client(tiny_dirs, tmp_path, base_url="http://evil.example:8000") as c:
        r = c.post("/analyze/predict", data={"prompt": "Hi"},
                   headers={"Origin": "http://evil.example:8000"})
        assert r.status_code == 400 and "CIRCUITLAB_ALLOWED_HOSTS" in r.text
    with tiny_client(tiny_dirs, tmp_path, base_url="http://evil.example:8000",
                     allowed_hosts=["evil.example"]) as c:
        r = c.post("/analyze/predict", data={"prompt": "Hi"},
                   headers={"Origin": "http://evil.example:8000"})
        assert r.status_code == 403


def test_scripts_and_api_clients_pass(local: TestClient) -> None:
    # No Origin or Referer (curl, a script): not a page steered by another site.
    assert local.post("/analyze/predict", data={"prompt": "Hi"}).status_code == 200
    # An Authorization header cannot be set by another site's form.
    r = local.post("/api/v1/predict", json={"prompt": "Hi"},
                   headers={**EVIL, "Authorization": "Bearer whatever"})
    assert r.status_code == 200


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"prompt=Hi"),
    ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--"),
    ("text/plain", b'{"prompt": "Hi"}'),
    (None, b'{"prompt": "Hi"}'),
])
def test_the_json_api_refuses_simple_bodies(local: TestClient, content_type: str | None,
                                            body: bytes) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = local.post("/api/v1/predict", content=body, headers=headers)
    if content_type is None:  # httpx adds no type: the request is untyped
        assert "content-type" not in r.request.headers
    assert r.status_code == 415
    error = r.json()["error"]
    assert error["field"] == "content-type" and "application/json" in error["message"]


def test_trusted_origins_are_accepted() -> None:
    settings = Settings(access=AccessSettings(trusted_origins=["https://lab.example.org"]))
    guard = CrossSiteGuard(app=None, settings=settings)  # type: ignore[arg-type]

    def scope(origin: str) -> dict:
        return {"type": "http", "method": "POST", "path": "/jobs", "scheme": "http",
                "server": ("127.0.0.1", 8000),
                "headers": [(b"host", b"127.0.0.1:8000"), (b"origin", origin.encode())]}

    assert guard.refusal(scope("https://lab.example.org")) is None
    assert guard.refusal(scope("https://lab.example.org:443")) is None
    assert guard.refusal(scope("https://other.example.org")) is not None
