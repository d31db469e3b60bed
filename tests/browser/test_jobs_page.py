"""A correction job from the web form in Chromium, on the embedded model on CPU: the seeds'
v4 texts pass the text check, the in-context preview answers, the job trains with live
progress, its evaluation shows P(aldosterone) rising, and it opens in Compare."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import shot
from tests.seed_texts import RENIN_TEXTS, SEED_PROMPT, V4_TEXTS

pytestmark = pytest.mark.browser


def fill_texts(page, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    boxes = page.locator("#texts textarea")
    while boxes.count() < len(texts):
        page.click("#add-text")
    while boxes.count() > len(texts):
        page.locator("#texts .remove-text").last.click()
    for i, text in enumerate(texts):
        boxes.nth(i).fill(text)


def test_v4_job_from_the_form(page, live_server: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server + "/jobs")
    page.wait_for_load_state("load")
    page.fill("#name", "v4-browser")
    page.fill("#prompt", SEED_PROMPT)
    page.fill("#answer_a", " aldosterone")
    page.fill("#answer_b", " renin")
    page.fill("#topic_words", "blood pressure")

    # The check flags a renin text and passes the v4 ones.
    fill_texts(page, [*V4_TEXTS, RENIN_TEXTS[0]])
    page.click("#check-btn")
    page.wait_for_selector("#text-check")
    assert page.locator(".findings li.flagged").count() == 1
    assert page.locator(f".findings li.flagged[data-text='{len(V4_TEXTS)}']").count() == 1
    fill_texts(page, V4_TEXTS)
    page.click("#check-btn")
    page.wait_for_selector("#text-check >> text=all 4 texts pass")

    page.click("#preview-btn")
    page.wait_for_selector("#preview-table", timeout=60_000)

    page.click("#training-settings summary")
    page.fill("#epochs", "1")
    page.fill("#learning_rate", "2e-5")
    page.select_option("#lr_scheduler", "constant")
    page.fill("#warmup_ratio", "0")
    started = time.monotonic()
    page.click("#queue-btn")
    page.wait_for_url(re.compile(r"/jobs/\w+$"), timeout=30_000)

    # Live progress: the polled fragment shows steps while the job trains.
    page.wait_for_selector("#job-state:text-matches('running|evaluating|succeeded')",
                           timeout=120_000)
    seen_steps = set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = page.locator("#job-state").inner_text().strip()
        step = page.locator("#job-step").inner_text().strip()
        if "/" in step:
            seen_steps.add(step)
        if state in ("succeeded", "failed", "cancelled", "interrupted"):
            break
        time.sleep(0.5)
    wall = time.monotonic() - started
    print(f"v4 job (1 epoch, 4 texts) queued -> {state} in {wall:.0f} s")
    assert state == "succeeded", page.locator("#job-log").inner_text()
    assert seen_steps, "the page showed training steps while it ran"
    assert page.locator("#loss-plot .main-svg").count() >= 1
    before, after = (float(page.locator("#eval-target tbody tr").first.locator("td")
                           .nth(i).inner_text().rstrip("%")) for i in (1, 2))
    assert after > before, (before, after)
    shot(page, "job-v4")

    page.click("#open-compare")
    page.wait_for_selector("#compare-form")
    page.wait_for_load_state("load")  # htmx (deferred) must be wired before the click
    assert page.input_value("#prompt") == SEED_PROMPT
    variant = page.input_value("#variant")
    assert variant.startswith("v4-browser")
    page.click("#compare-btn")
    page.wait_for_selector("#verdict", timeout=180_000)
    shot(page, "job-v4-compare")
    assert page.console_errors == []  # type: ignore[attr-defined]
