"""A burst against the real server: does model work starve the cheap routes?

Starts ``circuitlab serve`` (uvicorn, the embedded default model, a fresh data dir, no
index at start) on a free port, then fires 80 predicts and 20 attributions at once over
the JSON API while a prober asks ``/api/v1/health`` every 0.25 s. Prints

* health latency during the burst (median, 90th percentile, max);
* the latency of the 429 answers (requests beyond the model queue's depth);
* the server's RSS before the burst, right after it, and after a 10 s settle.

Numbers are printed, never asserted (the suite has no timed tests).

    .venv/bin/python benchmarks/bench_burst.py
    .venv/bin/python benchmarks/bench_burst.py --predicts 80 --attributions 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _burst(base: str, predicts: int, attributions: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        health: list[float] = []
        done = asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await client.get("/api/v1/health")
                health.append(time.perf_counter() - t0)
                await asyncio.sleep(0.25)

        async def call(path: str, body: dict[str, object]) -> tuple[int, float]:
            t0 = time.perf_counter()
            r = await client.post(path, json=body)
            return r.status_code, time.perf_counter() - t0

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.5)
        calls = [call("/api/v1/predict", {"prompt": PROMPT, "answers": [" aldosterone",
                                                                          " renin"]})
                 for _ in range(predicts)]
        calls += [call("/api/v1/attribute", {"prompt": PROMPT, "answer_a": " aldosterone",
                                             "answer_b": " renin", "tau": 0.15})
                  for _ in range(attributions)]
        t0 = time.perf_counter()
        results = await asyncio.gather(*calls)
        wall = time.perf_counter() - t0
        done.set()
        await prober
    by_status: dict[int, list[float]] = {}
    for status, seconds in results:
        by_status.setdefault(status, []).append(seconds)
    return {"health": health, "by_status": by_status, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predicts", type=int, default=80)
    parser.add_argument("--attributions", type=int, default=20)
    args = parser.parse_args()
    port = _free_port()
    data = tempfile.mkdtemp(prefix="burst-")
    env = {**os.environ, "CIRCUITLAB_DATA_DIR": data, "CIRCUITLAB_INDEX_ON_START": "false"}
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # model loading on a loaded machine
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=5).json().get("status") == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit("the server did not start")
            time.sleep(1)
        # One warm-up of each, so the burst measures steady state, not first-call costs.
        httpx.post(f"{base}/api/v1/predict", json={"prompt": PROMPT}, timeout=600)
        httpx.post(f"{base}/api/v1/attribute", json={"prompt": PROMPT, "answer_a":
                   " aldosterone", "answer_b": " renin", "tau": 0.15}, timeout=600)
        rss_before = _rss_mb(server.pid)
        result = asyncio.run(_burst(base, args.predicts, args.attributions))
        rss_after = _rss_mb(server.pid)
        time.sleep(10)
        rss_settled = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    health = result["health"]
    by_status = result["by_status"]
    assert isinstance(health, list) and isinstance(by_status, dict)
    print(f"burst: {args.predicts} predicts + {args.attributions} attributions, "
          f"{result['wall']:.1f} s wall, {os.cpu_count()} CPUs")
    print("answers: " + ", ".join(f"{k}: {len(v)}" for k, v in sorted(by_status.items())))
    print(f"health latency during the burst ({len(health)} probes): median "
          f"{statistics.median(health):.3f} s, p90 {_pct(health, 0.9):.3f} s, "
          f"max {max(health):.3f} s")
    for status in (429, 503):
        if status in by_status:
            lat = by_status[status]
            print(f"{status} latency ({len(lat)}): median {statistics.median(lat):.3f} s, "
                  f"max {max(lat):.3f} s")
    print(f"RSS: before {rss_before:.0f} MB, right after {rss_after:.0f} MB, "
          f"after 10 s {rss_settled:.0f} MB (+{rss_settled - rss_before:.0f} MB)")


if __name__ == "__main__":
    main()
