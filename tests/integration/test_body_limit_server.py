"""A 100 MB body against the real server (uvicorn in its own process): refused with 413,
and the server's resident memory does not grow with it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CACHE_DIR, PROJECT_ROOT

pytestmark = pytest.mark.integration
BODY = 100_000_000


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CIRCUITLAB_CACHE_DIR": str(CACHE_DIR),
           "CIRCUITLAB_DATA_DIR": str(tmp_path_factory.mktemp("data")),
           "CIRCUITLAB_LOAD_ON_START": "false", "CIRCUITLAB_JOBS__START_WORKER": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(url + "/api/v1/health", timeout=2) as r:
                    json.load(r)
                break
            except OSError:
                time.sleep(0.25)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _stream(total: int) -> Iterator[bytes]:
    chunk = b" " * (1 << 20)
    for _ in range(total // len(chunk)):
        yield chunk


def test_a_100_mb_body_is_refused_before_parsing(server: tuple[str, int]) -> None:
    url, pid = server
    before = _rss_kb(pid)
    with httpx.Client(timeout=60) as client:
        # Streamed without a length: counted as it arrives, cut off at the cap.
        streamed = client.post(url + "/api/v1/predict", content=_stream(BODY),
                               headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert "8 MB" in streamed.json()["error"]["message"]
        # Declared length: answered before a byte of the body is read.
        try:
            declared = client.post(url + "/api/v1/screen", content=_stream(BODY),
                                   headers={"content-type": "application/json",
                                            "content-length": str(BODY)})
            assert declared.status_code == 413
        except httpx.TransportError:
            pass  # the server may close the connection while the client still sends
    grown_mb = (_rss_kb(pid) - before) / 1024
    print(f"server RSS grew by {grown_mb:.1f} MB under two 100 MB bodies")
    assert grown_mb < 20
