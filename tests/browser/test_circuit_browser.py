"""The circuit browser in headless Chromium on the embedded model: analyze the seed
prompt, read the graph, open a neuron, label it, zero it, re-filter, reopen a permalink,
and go from the screening page to a pre-filled Analyze page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.browser.conftest import shot, wait_js
from tests.conftest import SEED_PROMPT
from tests.waiting import PATIENCE_MS

pytestmark = pytest.mark.browser

GRAPH = "#graph-plot[data-rendered]"


def graph_markers(page) -> int:  # type: ignore[no-untyped-def]
    """Node markers Plotly drew (the two "towards" traces), read from the live figure."""
    return int(page.evaluate("""() => document.getElementById('graph-plot').data
        .filter(t => (t.name || '').startsWith('towards'))
        .reduce((n, t) => n + t.x.length, 0)"""))


def analyze_seed(page, live_server: str) -> str:  # type: ignore[no-untyped-def]
    page.goto(live_server + "/")
    page.fill("#prompt", SEED_PROMPT)
    page.fill("#answer_a", " aldosterone")
    page.fill("#answer_b", " renin")
    page.click("#analyze-btn")
    page.wait_for_selector(GRAPH, timeout=PATIENCE_MS)
    return str(page.url)


def click_isolated_node(page) -> dict:  # type: ignore[no-untyped-def]
    """Click the biggest marker where Plotly drew it (a real mouse click on the plot)."""
    page.locator("#graph-plot").scroll_into_view_if_needed()
    # The node farthest from any other, so the click cannot land on a neighbour.
    target = page.evaluate("""() => {
        const gd = document.getElementById('graph-plot');
        const L = gd._fullLayout;
        const box = gd.getBoundingClientRect();
        const pts = [];
        gd.data.forEach(t => {
            if (!(t.name || '').startsWith('towards')) return;
            t.x.forEach((x, i) => pts.push({id: t.customdata[i],
                px: box.left + L._size.l + L.xaxis.l2p(x),
                py: box.top + L._size.t + L.yaxis.l2p(t.y[i])}));
        });
        let best = null, bestGap = -1;
        pts.forEach(p => {
            const gap = Math.min(...pts.filter(q => q !== p)
                .map(q => Math.hypot(p.px - q.px, p.py - q.py)));
            if (gap > bestGap) { best = p; bestGap = gap; }
        });
        return best;
    }""")
    page.mouse.move(target["px"], target["py"])
    page.mouse.click(target["px"], target["py"])
    return target  # type: ignore[no-any-return]


def test_analyze_graph_panel_label_intervention_filter_permalink(page, live_server: str) -> None:  # type: ignore[no-untyped-def]
    start = page.url
    url = analyze_seed(page, live_server)
    assert re.search(r"/runs/[0-9a-f]{16}$", url), "the URL becomes the run's permalink"
    assert url != start
    n_nodes = int(page.get_attribute("#graph-plot", "data-nodes"))
    assert n_nodes > 10
    assert graph_markers(page) == n_nodes
    assert page.locator("#neurons-table tr.node-row").count() == n_nodes
    assert "prefers B" in page.locator(".cards").inner_text()
    assert page.locator("#topk tr.is-b").count() == 1
    assert page.locator("#faithfulness tbody tr").count() == 6
    shot(page, "circuit-seed-prompt")

    # Clicking a node in the graph opens its panel.
    target = click_isolated_node(page)
    layer, neuron = target["id"][1], target["id"][2]
    page.wait_for_selector("#neuron-panel", timeout=PATIENCE_MS)
    assert page.get_attribute("#neuron-panel", "data-layer") == str(layer)
    assert page.get_attribute("#neuron-panel", "data-neuron") == str(neuron)
    page.wait_for_selector("#position-plot .main-svg")
    assert page.locator("#promotes li").count() > 0

    # Save a label; it shows on the next run of the same prompt.
    page.fill("#neuron-label", "renin pathway booster")
    page.click(".label-form button[type=submit]")
    page.wait_for_selector(".saved")
    shot(page, "circuit-neuron-panel")

    # Zeroing the neuron re-runs the prediction and shows m before and after.
    m_before = float(page.locator("#metric-m").inner_text())
    page.click("#zero-btn")
    page.wait_for_selector("#intervention-result")
    m_after = float(page.locator("#m-after").inner_text())
    assert m_after != pytest.approx(m_before, abs=1e-3)
    shot(page, "circuit-zeroed-neuron")

    page.click("#analyze-btn")  # same settings: the stored run comes back, labels fresh
    page.wait_for_selector(f"{GRAPH} ", timeout=PATIENCE_MS)
    wait_js(page, "document.querySelector('.label-cell') && "
                           "[...document.querySelectorAll('.label-cell')]"
                           ".some(td => td.textContent.includes('renin pathway booster'))")

    # Moving tau re-filters the graph and the table together, without a new run.
    page.eval_on_selector("#view-tau", """el => { el.value = '0.4';
        el.dispatchEvent(new Event('input', {bubbles: true})); }""")
    wait_js(page,
        f"Number(document.getElementById('shown-nodes').textContent) < {n_nodes}")
    wait_js(page, """() => {
        const gd = document.getElementById('graph-plot');
        const shown = Number(document.getElementById('shown-nodes').textContent);
        return gd && gd.data && gd.data.filter(t => (t.name||'').startsWith('towards'))
            .reduce((n, t) => n + t.x.length, 0) === shown; }""")
    shown = int(page.locator("#shown-nodes").inner_text())
    assert 0 < shown < n_nodes
    assert page.locator("#neurons-table tr.node-row").count() == shown
    shot(page, "circuit-tau-0.4")

    # The permalink reopens the run without recomputing.
    page.goto(url)
    page.wait_for_selector(GRAPH)
    assert graph_markers(page) == n_nodes
    assert page.input_value("#answer_b") == " renin"
    page.goto(live_server + "/runs")
    assert page.locator(f"#runs-table a[href='{url.removeprefix(live_server)}']").count() == 1
    shot(page, "runs-page")
    assert [e for e in page.console_errors if "status of 4" not in e] == []


def test_sortable_table_exports_and_inline_errors(page, live_server: str) -> None:  # type: ignore[no-untyped-def]
    analyze_seed(page, live_server)
    for fmt, magic in (("png", b"\x89PNG"), ("svg", b"<svg")):
        with page.expect_download() as info:
            page.click(f"[data-export={fmt}]")
        data = Path(info.value.path()).read_bytes()
        assert data.startswith(magic) and info.value.suggested_filename.endswith(f".{fmt}")
    with page.expect_download() as info:
        page.click("a.export-csv")
    assert Path(info.value.path()).read_text().startswith("layer,neuron")
    page.click("#neurons-table th:has-text('layer')")
    layers = [int(x) for x in page.locator("#neurons-table tr.node-row td:first-child")
              .all_inner_texts()]
    assert layers == sorted(layers, reverse=True)

    # Bad settings: the message appears next to the field and the page keeps working.
    page.eval_on_selector("#tau", "el => { el.removeAttribute('max'); el.value = '2'; }")
    page.click("#analyze-btn")
    page.wait_for_selector("#tau + .field-error")
    assert "less than or equal to 1" in page.locator("#tau + .field-error").inner_text()
    page.fill("#tau", "0.15")
    page.fill("#answer_b", " aldosterone")
    page.click("#analyze-btn")
    page.wait_for_selector("#answer_b + .field-error")
    shot(page, "analyze-same-answers")
    page.fill("#answer_b", " renin")
    page.click("#analyze-btn")
    page.wait_for_selector(GRAPH, timeout=PATIENCE_MS)
    assert page.locator(".field-error").count() == 0
    assert [e for e in page.console_errors if "status of 4" not in e] == []


def test_screening_opens_a_target_case_in_analyze(page, live_server: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server + "/screen")
    items = [{"prompt": SEED_PROMPT, "answer": " aldosterone"},
             {"prompt": "The capital of France is", "answer": " Paris"}]
    page.fill("#items_json", json.dumps(items))
    page.click("#screen-form button[type=submit]")
    page.wait_for_selector("#screen-table")
    assert page.locator("#screen-table tbody tr").count() == 2
    assert page.locator("#screen-table tr.target").count() >= 1
    shot(page, "screening")
    page.locator("#screen-table tr.target a.open-analyze").first.click()
    page.wait_for_selector("#analyze-form")
    assert page.input_value("#prompt") == SEED_PROMPT
    # A is the whole expected answer, B the wrong top-1 token (SmolLM2: " ren").
    assert page.input_value("#answer_a") == " aldosterone"
    assert page.input_value("#answer_b") == " ren"

    # A malformed list gets an inline message, and the page keeps working.
    page.goto(live_server + "/screen")
    page.fill("#items_json", "[{\"prompt\": ")
    page.click("#screen-form button[type=submit]")
    page.wait_for_selector("#items_json + .field-error")
    assert "not valid JSON" in page.locator("#items_json + .field-error").inner_text()
    assert [e for e in page.console_errors if "status of 4" not in e] == []
