"""Neuron meaning in headless Chromium on the default model, as a new user meets it: build
an exemplar index from the Neurons page (an uploaded corpus of biomedical glosses, built by
the server's own job worker), analyze the seed prompt, read in the neurons table what each
kept neuron responds to, open the top drivers towards the wrong answer in the panel, and
find the concept candidates with their exemplars and a "Write texts on" link.

This file runs last in the browser tier (files run in name order): the index it builds
joins every later run of the session's server."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from analysis.neurons.corpus import default_corpus
from tests.browser.conftest import shot
from tests.browser.test_circuit_browser import analyze_seed
from tests.conftest import SEED_PROMPT
from tests.waiting import PATIENCE_MS

pytestmark = pytest.mark.browser

TOPICS = ("blood", "kidney", "hormone", "gland", "pressure", "enzyme")
DRIVERS = 5


def test_build_an_index_and_read_the_drivers(page, live_server: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    texts = [t for t in default_corpus().texts if any(w in t.lower() for w in TOPICS)]
    corpus = tmp_path / "bio-glosses.txt"
    corpus.write_text("\n".join(texts[:160]) + "\n")

    page.goto(live_server + "/indexes")
    page.set_input_files("#corpus-file", str(corpus))
    page.click("#index-build button[type=submit]")
    page.wait_for_selector("#indexes-table tr[data-state]")
    # The list polls while the index builds; the user waits for "ready".
    page.wait_for_selector("#indexes-table tr[data-state='ready']", timeout=PATIENCE_MS)
    assert "bio-glosses" in page.locator("#indexes-table").inner_text()

    analyze_seed(page, live_server)
    rows = page.locator("#neurons-table tr.node-row")
    n_rows = rows.count()
    assert n_rows > 10
    # Every kept neuron's row says what it responds to: its strongest exemplar, marked.
    assert page.locator("#neurons-table tr.node-row .gist mark").count() == n_rows
    # Index-flagged always-on neurons joined the prompt's: the run says which index.
    assert "from the index" in page.locator("#always-on summary").inner_text()

    # The strongest drivers towards B (the table starts sorted by |influence|), each
    # opened from its row: the panel shows its top exemplars with the token marked.
    drivers = page.locator("#neurons-table tr.towards-b-row")
    opened = []
    for i in range(DRIVERS):
        row = drivers.nth(i)
        layer, neuron = row.get_attribute("data-layer"), row.get_attribute("data-neuron")
        if (layer, neuron) in opened:
            continue
        row.click()
        page.wait_for_selector(
            f"#neuron-panel[data-layer='{layer}'][data-neuron='{neuron}'] #exemplars li mark",
            timeout=120_000)  # the panel waits for the model behind the run's other work
        panel = page.locator("#neuron-panel")
        assert panel.locator("#exemplars li mark").count() == 12
        assert panel.locator("#neuron-description").inner_text().strip()
        opened.append((layer, neuron))
        if i == 0:
            shot(page, "neuron-meaning-top-driver")
    assert len(opened) >= 3
    # Opened from the table, the panel is a drawer over the window's edge: Escape closes
    # it, as a user would before reading on.
    page.keyboard.press("Escape")
    page.wait_for_selector("#neuron-panel", state="detached")

    # Stage 4: concept candidates name upstream neurons with exemplars, and offer topic
    # words for training texts that never name the wrong answer.
    page.locator("#concepts").scroll_into_view_if_needed()
    page.wait_for_selector("#concepts-table tbody tr", timeout=120_000)
    first = page.locator("#concepts-table tbody tr").first
    assert first.locator(".ctx").count() >= 1
    link = first.locator("a.button")
    href = link.get_attribute("href") or ""
    assert "/jobs?run=" in href and "concept=" in href and "topics=" not in href
    words = parse_qs(urlsplit(href).query).get("words", [""])[0]
    assert "renin" not in words.lower()  # the concept's words never name an answer
    assert link.inner_text().startswith("Write texts on")
    shot(page, "concept-candidates")
    # It opens the Jobs page with a visible Concept box; Topic words stay the prompt's.
    link.click()
    page.wait_for_selector("#concept-box", timeout=60_000)
    box = page.locator("#concept-box")
    assert box.is_visible() and box.locator(".concept-exemplars li").count() >= 1
    for word in [w for w in words.split(",") if w]:
        assert word in box.inner_text()
        topic = page.input_value("#topic_words").lower()
        assert word in SEED_PROMPT.lower() or word not in topic
    shot(page, "jobs-concept-box")
