"""The Analyze page in headless Chromium against a real server on the embedded model."""

from __future__ import annotations

import pytest

from tests.browser.conftest import shot
from tests.conftest import SEED_PROMPT

pytestmark = pytest.mark.browser


def test_analyze_form_shows_the_wrong_answer(page, live_server: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server + "/")
    page.fill("#prompt", SEED_PROMPT)
    page.fill("#answer_a", " aldosterone")
    page.fill("#answer_b", " renin")
    url_before = page.url
    page.click("#predict-btn")
    page.wait_for_selector("#topk tbody tr")
    assert page.url == url_before  # swapped in by htmx, no full reload
    rows = page.locator("#topk tbody tr")
    assert rows.count() == 10
    assert '" renin"' in rows.nth(1).inner_text()
    assert page.locator("tr.is-b").count() == 1  # B (renin) is highlighted in the top-k
    metric = page.locator(".metric").inner_text()
    assert "prefers B" in metric
    assert page.locator(".tok").count() == 14
    shot(page, "analyze-seed-prompt")
    assert page.console_errors == []


def test_empty_prompt_shows_an_inline_error(page, live_server: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server + "/")
    # Bypass the browser's own `required` check to exercise the server's message.
    page.eval_on_selector("#prompt", "el => el.removeAttribute('required')")
    page.click("#predict-btn")
    page.wait_for_selector("#result .error")
    assert "prompt is empty" in page.locator("#result .error").inner_text()
    # ...and next to the field that caused it.
    assert "prompt is empty" in page.locator("#prompt + .field-error").inner_text()
    assert page.get_attribute("#prompt", "aria-invalid") == "true"
    shot(page, "analyze-empty-prompt")
    # The page keeps working after the error.
    page.fill("#prompt", "The capital of France is")
    page.click("#predict-btn")
    page.wait_for_selector("#topk")
    assert page.locator(".field-error").count() == 0
    # Chromium itself logs the 422 response as a console error; nothing else may appear.
    assert [e for e in page.console_errors if "status of 422" not in e] == []
