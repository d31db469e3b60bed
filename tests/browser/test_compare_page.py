"""The Compare page in Chromium, on the default embedded model and the seeds' v4 texts (a
few steps of full fine-tuning on chat-formatted texts, cached): pick the variant, compare,
read the verdict, the side-by-side graphs, the neuron table and the prompt set; reopen the
permalink."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser.conftest import shot
from tests.conftest import CACHE_DIR, DEFAULT_MODEL, SEED_PROMPT
from tests.waiting import PATIENCE_MS

pytestmark = pytest.mark.browser
VARIANT = "smollm2-v4"


@pytest.fixture(scope="module")
def registered(v4_full_variant: Path, server_data: Path, live_server: str) -> str:
    """The v4 variant registered in the running server's database, as a job would."""
    from app.store.tables import init_db
    from app.store.variants import VariantStore

    store = VariantStore(init_db(f"sqlite:///{server_data / 'circuitlab.db'}"), CACHE_DIR)
    store.add(VARIANT, "full", DEFAULT_MODEL, v4_full_variant)
    return VARIANT


def plotted(page, target: str) -> int:  # type: ignore[no-untyped-def]
    return int(page.evaluate(f"""() => document.getElementById('{target}').data
        .filter(t => (t.name || '').includes('towards'))
        .reduce((n, t) => n + t.x.length, 0)"""))


def test_compare_page_side_by_side(page, live_server: str, registered: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server + "/compare")
    # The variant registered after start-up is offered (found in the database).
    assert page.locator(f"#variant option[value='{registered}']").count() == 1
    page.select_option("#variant", registered)
    page.fill("#prompt", SEED_PROMPT)
    page.fill("#answer_a", " aldosterone")
    page.fill("#answer_b", " renin")
    page.fill("#prompt_set", "generalization | The mineralocorticoid that controls sodium "
                             "retention is | aldosterone | renin\nside_effect | Conn's "
                             "syndrome is caused by an excess of | aldosterone")
    page.click("#compare-btn")
    page.wait_for_selector("#graph-diff .main-svg", timeout=PATIENCE_MS)
    assert re.search(r"/compare/\w+$", page.url)

    verdict = page.locator("#verdict .v").inner_text().strip().lower()
    assert verdict in ("pathway removed", "compensated", "no change", "made worse")
    assert page.locator("#verdict li").count() >= 1
    # The summary's P(A) change is what the JSON API predicts for the two models.
    body = {"prompt": SEED_PROMPT, "answers": [" aldosterone", " renin"]}
    p_a = {name: page.request.post(f"{live_server}/api/v1/predict",
                                   data={**body, "model": name}).json()["answers"][0]["prob"]
           for name in (DEFAULT_MODEL, registered)}
    change = page.locator("#summary-table tbody tr").nth(1).locator("td").nth(3).inner_text()
    assert float(change.removesuffix(" pt")) == pytest.approx(
        100 * (p_a[registered] - p_a[DEFAULT_MODEL]), abs=0.006), change
    m_cells = page.locator("#summary-table tbody tr").nth(0).locator("td")
    m_base, m_tuned = (float(m_cells.nth(i).inner_text()) for i in (1, 2))
    if m_tuned < m_base:  # the verdict follows m, whatever the hope
        assert verdict in ("made worse", "no change")
    assert page.locator("#compare-formatted").inner_text() == SEED_PROMPT
    base_nodes, tuned_nodes = plotted(page, "graph-base"), plotted(page, "graph-tuned")
    assert base_nodes > 0 and tuned_nodes > 0
    assert plotted(page, "graph-diff") >= max(base_nodes, tuned_nodes)
    rows = page.locator("#compare-neurons tbody tr")
    assert rows.count() > 0
    categories = set(page.locator("#compare-neurons tbody tr td:nth-child(5)").all_inner_texts())
    assert categories <= {"persistent driver", "strengthened", "weakened", "new", "gone",
                          "sign flip"}
    assert page.locator("#prompt-set-table tbody tr").count() == 3
    assert page.locator("#weights-plot .main-svg").count() >= 1
    assert page.locator("#patching-plot .main-svg").count() >= 1

    # Sorting the neuron table by delta puts the largest change first.
    page.click("#compare-neurons th:nth-child(4)")
    deltas = [float(v) for v in page.locator(
        "#compare-neurons tbody tr td:nth-child(4)").all_inner_texts()]
    assert deltas == sorted(deltas, reverse=True)
    shot(page, "compare-v4")

    page.goto(page.url)  # the permalink reopens without recomputing
    page.wait_for_selector("#graph-base .main-svg", timeout=PATIENCE_MS)
    assert page.locator("#verdict .v").inner_text().strip().lower() == verdict
    assert page.input_value("#prompt") == SEED_PROMPT

    # The difference view draws edges (weight change), and a click on a node of any of
    # the three graphs opens the neuron panel, as on Analyze.
    assert page.evaluate("""() => document.getElementById('graph-diff').data
        .filter(t => (t.name || '').startsWith('edges ')).length""") > 0
    for target in ("graph-base", "graph-diff"):
        page.locator(f"#{target}").scroll_into_view_if_needed()
        node = page.evaluate(f"""() => {{
            const gd = document.getElementById('{target}');
            const L = gd._fullLayout, box = gd.getBoundingClientRect();
            const t = gd.data.find(d => (d.name || '').includes('towards') && d.x.length);
            return {{id: t.customdata[0], px: box.left + L._size.l + L.xaxis.l2p(t.x[0]),
                     py: box.top + L._size.t + L.yaxis.l2p(t.y[0])}};
        }}""")
        page.mouse.move(node["px"] + 2, node["py"] + 2)
        page.mouse.move(node["px"], node["py"])
        page.wait_for_timeout(400)
        page.mouse.click(node["px"], node["py"])
        page.wait_for_selector(f"#neuron-panel[data-layer='{node['id'][1]}']"
                               f"[data-neuron='{node['id'][2]}']", timeout=PATIENCE_MS)
    shot(page, "compare-neuron-panel")
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_compare_refuses_a_variant_compared_with_itself(page, live_server: str,  # type: ignore[no-untyped-def]
                                                         registered: str) -> None:
    page.goto(live_server + f"/compare?base={registered}&variant={registered}")
    # The base list holds base models only; force the mistake through the form's fields.
    page.evaluate(f"""() => {{ const o = document.createElement('option');
        o.value = '{registered}'; o.text = '{registered}';
        document.getElementById('base').appendChild(o);
        document.getElementById('base').value = '{registered}'; }}""")
    page.select_option("#variant", registered)
    page.fill("#prompt", SEED_PROMPT)
    page.fill("#answer_a", " aldosterone")
    page.click("#compare-btn")
    error = page.wait_for_selector(".field-error", timeout=PATIENCE_MS)
    assert "itself" in error.inner_text()


def test_the_form_column_is_not_clipped_at_1024(page, live_server: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 22.6: at 1024 px the Compare form's paired fields (base and variant, answers
    A and B) stack, so a model name or an answer is not cut to 'smollm2' / 'aldosteron'."""
    page.set_viewport_size({"width": 1024, "height": 900})
    page.goto(live_server + "/compare")
    widths = page.evaluate("""() => ['base', 'variant', 'answer_a', 'answer_b'].map(id => {
        const e = document.getElementById(id);
        const option = e.tagName === 'SELECT' && e.options.length ?
            e.options[e.selectedIndex].text : '';
        return {id, width: e.clientWidth, option}; })""")
    for w in widths:
        assert w["width"] >= 200, w
    shot(page, "compare-form-1024")
