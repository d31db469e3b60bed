"""circuit-tracer's own viewer on our export, in headless Chromium: the README's steps
(``circuitlab analyze ... --output DIR``, serve ``DIR/viewer`` with circuit-tracer's
handler, open ``index.html?slug=<slug>``) on the embedded model's seed prompt. The graph
renders with one output node named for m, and clicking a neuron or the output fetches
nothing from a model hub. A single-target graph whose only neuron is in layer 0 renders
too. The viewer comes from ../shared/realclient (circuit-tracer's frontend with its
libraries vendored, and its local_server handler); without it the tests skip."""

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
from typing import Any

import pytest

from analysis.attribution import CircuitResult
from analysis.attribution.export import (
    NEURON_TYPE,
    REMAINDER_TYPE,
    to_circuit_tracer,
    write_viewer_files,
)
from tests.browser.conftest import ARTIFACTS
from tests.conftest import CACHE_DIR, PROJECT_ROOT, REALCLIENT, SEED_PROMPT
from tests.waiting import PATIENCE_S

pytestmark = pytest.mark.browser

VIEWER = REALCLIENT / "viewer"
SERVE = REALCLIENT / "serve_ct.py"
LAYER0_SLUG = "layer0-only"

# Every node the viewer drew: its data and where it sits on screen.
DRAWN = """() => [...document.querySelectorAll('.link-graph svg text.node')].map(e => {
    const r = e.getBoundingClientRect(), d = e.__data__ || {};
    return {id: d.nodeId, feature_type: d.feature_type, clerp: d.clerp,
            logitToken: d.logitToken, layer: d.layer,
            x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width};
})"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> None:
    env = {**os.environ, "CIRCUITLAB_CACHE_DIR": str(CACHE_DIR)}
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def viewer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's step on the seed prompt (``analyze --output DIR`` writes DIR/viewer),
    plus a single-target run of the same model cut to its strongest layer-0 neuron."""
    if not (VIEWER / "index.html").is_file() or not SERVE.is_file():
        pytest.skip(f"circuit-tracer's viewer is not at {REALCLIENT} (CI has ../shared)")
    out = tmp_path_factory.mktemp("viewer-export")
    _cli("analyze", SEED_PROMPT, "--contrastive", " aldosterone", " renin", "--tau", "0.15",
         "--method", "relp", "--output", str(out / "contrastive"))
    _cli("analyze", SEED_PROMPT, "--target", " renin", "--tau", "0.15", "--no-edges",
         "--output", str(out / "single"))
    single = CircuitResult.load(out / "single" / "graph.json")
    first = max((n for n in single.nodes if n.layer == 0), key=lambda n: abs(n.influence))
    layer0 = single.model_copy(update={"nodes": [first], "edges": []})
    write_viewer_files(to_circuit_tracer(layer0, slug=LAYER0_SLUG), out / "contrastive" / "viewer")
    return out / "contrastive" / "viewer"


@pytest.fixture(scope="module")
def viewer_url(viewer_dir: Path) -> Iterator[str]:
    """circuit-tracer's local_server handler on 127.0.0.1 serving DIR/viewer."""
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "viewer-server.log", "w")  # noqa: SIM115 - outlives this block
    proc = subprocess.Popen([sys.executable, str(SERVE), str(port), str(VIEWER),
                             str(viewer_dir)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + PATIENCE_S  # a ceiling, not a speed target
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"viewer server exited; see {ARTIFACTS / 'viewer-server.log'}")
            try:
                with urllib.request.urlopen(f"{url}/data/graph-metadata.json", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"circuit-tracer's viewer server did not answer in "
                                f"{PATIENCE_S} s")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


class Viewer:
    """One page of the viewer; every request it makes is recorded, and any not to this
    machine is refused (and so recorded before it could leave)."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", lambda route: route.continue_()
                        if route.request.url.startswith("http://127.0.0.1:") else route.abort())

    def open(self, url: str) -> list[dict]:
        self.page.goto(url)
        self.page.wait_for_selector(".link-graph svg text.node", timeout=60_000)
        # The graph is drawn once the output node is among the drawn nodes.
        self.page.wait_for_function("""() => [...document.querySelectorAll(
            '.link-graph svg text.node')].some(e => e.__data__?.feature_type == 'logit')""",
                                    timeout=60_000)
        return self.drawn()

    def drawn(self) -> list[dict]:
        return self.page.evaluate(DRAWN)  # type: ignore[no-any-return]

    def click(self, node: dict, shows: str) -> str:
        """Click a node where it is drawn and wait until the detail panel shows it."""
        self.page.mouse.click(node["x"], node["y"])
        self.page.wait_for_function(
            "text => document.querySelector('.feature-detail')?.innerText.includes(text)",
            arg=shows, timeout=30_000)
        return self.page.inner_text(".feature-detail")

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def offsite(self) -> list[str]:
        return [u for u in self.requests if not u.startswith("http://127.0.0.1:")]


@pytest.fixture()
def viewer(browser: Any) -> Iterator[Viewer]:
    v = Viewer(browser)
    yield v
    v.context.close()


def test_viewer_shows_the_contrastive_circuit_and_fetches_nothing_offsite(
        viewer: Viewer, viewer_url: str, viewer_dir: Path) -> None:
    index = json.loads((viewer_dir / "graph-metadata.json").read_text())
    slug = next(g["slug"] for g in index["graphs"] if g["slug"] != LAYER0_SLUG)
    graph = json.loads((viewer_dir / f"{slug}.json").read_text())
    # The README's query: the one the export documents, the slug alone.
    query = graph["metadata"]["generation_settings"]["viewer_query"]
    assert query == f"slug={slug}"
    drawn = viewer.open(f"{viewer_url}/index.html?{query}")
    viewer.shot("viewer-export-contrastive")
    assert viewer.errors == []

    neurons = [d for d in drawn if d["feature_type"] == NEURON_TYPE]
    n_kept = sum(1 for n in graph["nodes"] if n["feature_type"] == NEURON_TYPE)
    assert len(neurons) == n_kept > 0, "every exported neuron is drawn at the default cut"
    outputs = [d for d in drawn if d["feature_type"] == "logit"]
    assert len(outputs) == 1
    # The metric under its actual tokens (SmolLM2 reads " aldosterone" as " al"+...).
    result = CircuitResult.load(viewer_dir.parent / "graph.json")
    m_name = f"'{result.target_a_text}' − '{result.target_b_text}'"
    assert result.target_a_text == " al" and result.target_b_text == " ren"
    assert outputs[0]["logitToken"] == m_name
    assert outputs[0]["clerp"].startswith(f'm = logit difference "{m_name}" (p=')
    # The output's name is on the page, above its column.
    labels = viewer.page.evaluate(
        "() => [...document.querySelectorAll('.link-graph g.axis text')].map(t => t.textContent)")
    assert m_name in labels
    assert [d["feature_type"] for d in drawn].count(REMAINDER_TYPE) == 1

    # Click the strongest neuron, then the output node: the detail panel shows each, and
    # no request tried to leave this machine (the viewer fetches transcoder features'
    # examples from huggingface.co/<scan>; our neurons are not such features).
    strongest = min((n for n in graph["nodes"] if n["feature_type"] == NEURON_TYPE),
                    key=lambda n: n["influence"])
    target = next(d for d in neurons if d["id"] == strongest["node_id"])
    layer, neuron, _ = strongest["node_id"].split("_")
    # The viewer names a non-transcoder node by layer and index (the Cantor pair undone).
    detail = viewer.click(target, shows=f"L{layer}/{neuron}")
    viewer.shot("viewer-export-neuron-clicked")
    assert "No logit data" in detail  # the viewer's own branch for nodes it fetches nothing for
    viewer.click(outputs[0], shows=m_name)
    viewer.shot("viewer-export-output-clicked")
    assert viewer.errors == []
    assert not [u for u in viewer.requests if "huggingface.co" in u]
    assert viewer.offsite() == []


def test_viewer_draws_a_layer0_only_graph(viewer: Viewer, viewer_url: str,
                                          viewer_dir: Path) -> None:
    graph = json.loads((viewer_dir / f"{LAYER0_SLUG}.json").read_text())
    query = graph["metadata"]["generation_settings"]["viewer_query"]
    drawn = viewer.open(f"{viewer_url}/index.html?{query}")
    viewer.shot("viewer-export-layer0-only")
    assert viewer.errors == []
    neurons = [d for d in drawn if d["feature_type"] == NEURON_TYPE]
    assert [d["layer"] for d in neurons] == ["0"]
    outputs = [d for d in drawn if d["feature_type"] == "logit"]
    assert [d["logitToken"] for d in outputs] == [" ren"]
    layer, neuron, _ = neurons[0]["id"].split("_")
    viewer.click(neurons[0], shows=f"L{layer}/{neuron}")
    viewer.shot("viewer-export-layer0-clicked")
    assert viewer.offsite() == []
