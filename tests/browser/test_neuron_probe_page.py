"""Stage 4 by hypothesis and Stage 5's start, in headless Chromium on the default model
(issue 22): with an index of biomedical glosses that mention the kidney, analyze the
seed prompt, probe "kidney", read each kidney neuron's status, activation and the group's
zeroing result (its words checked against its numbers), open a hit's panel and find it in
view, search the Neurons page on the run, and draft texts from a concept candidate: none
names renin.

Runs after test_neuron_meaning_page.py (name order), whose corpus it uploads again: the
server returns that ready index at once, or builds it when this file runs alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.neurons.corpus import default_corpus
from tests.browser.conftest import shot
from tests.browser.test_circuit_browser import analyze_seed
from tests.browser.test_neuron_meaning_page import TOPICS

pytestmark = pytest.mark.browser

STATUSES = {"in circuit", "pruned", "always-on", "inactive"}


def ensure_index(page, live_server: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    texts = [t for t in default_corpus().texts if any(w in t.lower() for w in TOPICS)]
    assert sum("kidney" in t.lower() for t in texts[:160]) >= 3  # the fixture has them
    corpus = tmp_path / "bio-glosses.txt"
    corpus.write_text("\n".join(texts[:160]) + "\n")
    page.goto(live_server + "/indexes")
    page.set_input_files("#corpus-file", str(corpus))
    page.click("#index-build button[type=submit]")
    page.wait_for_selector("#indexes-table tr[data-state='ready']", timeout=600_000)


def in_view(page, selector: str) -> bool:  # type: ignore[no-untyped-def]
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return bool(box and size and box["y"] >= 0 and box["y"] + 40 <= size["height"]
                and box["x"] + box["width"] <= size["width"] + 1)


def test_probe_kidney_open_a_hit_and_draft_texts(page, live_server: str,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    ensure_index(page, live_server, tmp_path)
    url = analyze_seed(page, live_server)
    run_id = url.split("?")[0].rsplit("/", 1)[1]

    page.fill("#probe-query", "kidney")
    page.click("#probe-btn")
    page.wait_for_selector("#probe-table > tbody > tr", timeout=180_000)
    rows = page.locator("#probe-table > tbody > tr")
    assert rows.count() >= 1
    statuses = [rows.nth(i).get_attribute("data-status") for i in range(rows.count())]
    assert set(statuses) <= STATUSES
    assert set(statuses) - {"in circuit"}, "the kidney neurons the issue found are not kept"
    for i in range(rows.count()):
        text = rows.nth(i).inner_text()
        assert re.search(r"[+-]\d", text)  # an influence and an activation are shown
        assert " on " in text  # "... on ' kidney'": the activation's token
    # The group: m before -> after, and words that agree with the sign of the change.
    group = page.locator("#probe-group").inner_text()
    before, after = (float(x.replace("−", "-")) for x in
                     re.search(r"m ([+-−][\d.]+) → ([+-−][\d.]+)", group).groups())  # type: ignore[union-attr]
    verdict = page.locator("#probe-verdict").inner_text()
    if abs(after - before) < 0.1:
        assert verdict.startswith("no change")
    elif after > before:  # zeroing them helped A: together they were pushing B
        assert "push B" in verdict and "towards A" in verdict
    else:
        assert "push A" in verdict and "towards B" in verdict
    page.locator("#probe-result").scroll_into_view_if_needed()
    shot(page, "probe-kidney")

    # A hit opens its panel where the user is looking, not 1,300 px below.
    first = rows.first
    name = first.get_attribute("data-neuron") or ""
    layer, neuron = re.match(r"L(\d+)/N(\d+)", name).groups()  # type: ignore[union-attr]
    first.locator("a[data-action='open-neuron']").click()
    page.wait_for_selector(f"#neuron-panel[data-layer='{layer}'][data-neuron='{neuron}']")
    assert in_view(page, "#panel")
    shot(page, "probe-hit-panel")
    page.click("#neuron-panel [data-action='close-panel']")
    page.wait_for_selector("#neuron-panel", state="detached")

    # The Neurons page's search on this run says the same status and links to the panel.
    page.goto(live_server + "/indexes")
    page.fill("input[name=q]", "kidney")
    page.select_option("#search-run", run_id)
    page.click("#search-run ~ button[type=submit]")
    page.wait_for_selector("#probe-table > tbody > tr", timeout=180_000)
    hit = page.locator(f"#probe-table tr[data-neuron='{name}']")
    assert hit.get_attribute("data-status") == statuses[0]
    hit.locator("a[data-action='open-neuron']").click()
    page.wait_for_selector(f"#neuron-panel[data-layer='{layer}'][data-neuron='{neuron}']")
    assert in_view(page, "#panel")

    # Draft texts from a concept candidate: every draft is checked, none names renin.
    page.goto(url)
    page.wait_for_selector("#concepts-table tbody tr .draft-btn", timeout=180_000)
    page.locator("#concepts-table .draft-btn").first.click()
    page.wait_for_selector("#drafts-source", timeout=300_000)
    assert "resident model" in page.locator("#drafts-source").inner_text()
    drafts = page.locator("#drafts-form textarea")
    assert drafts.count() >= 1
    for i in range(drafts.count()):
        assert "renin" not in drafts.nth(i).input_value().lower()
    assert page.locator("#drafts-preview").inner_text().startswith("In-context preview")
    shot(page, "drafts-from-candidate")
