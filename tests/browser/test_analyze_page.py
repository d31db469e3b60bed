"""The Analyze page in headless Chromium against a real server on the default embedded
model, SmolLM2-135M-Instruct."""

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
    # The seeds' error: renin's first token " ren" first, aldosterone's " al" second.
    assert '" ren"' in rows.nth(0).inner_text() and '" al"' in rows.nth(1).inner_text()
    assert page.locator("#topk tr.is-b").count() == 1  # B is highlighted in the top-k
    assert page.locator("#topk tr.is-a").count() == 1
    metric = page.locator(".metric").inner_text()
    assert "prefers B" in metric and "whole answers: B is likelier" in metric
    answers = page.locator("table.answers").first.locator("tbody tr")
    assert "(3 tokens)" in answers.nth(0).inner_text()  # " al" + "d" + "osterone"
    assert page.locator("#prediction .tok").count() == 13  # SmolLM2 adds no BOS
    assert "Plain completion" in page.locator(".format-label").first.inner_text()
    # Both formats side by side: in the chat format " The" comes first, not " ren".
    cols = page.locator("#formats .format-col")
    assert cols.count() == 2
    assert '" ren"' in cols.nth(0).locator("ol li").first.inner_text()
    assert '" The"' in cols.nth(1).locator("ol li").first.inner_text()
    shot(page, "analyze-seed-prompt")

    # One click switches the form to the seeds' chat format, and the result says so.
    page.click("[data-prompt-format=seeds_chat]")
    assert page.is_checked("#chat_template")
    assert page.input_value("#answer_prefix") == " Answer:"
    assert page.input_value("#system_prompt") == ""
    assert page.get_attribute("[data-prompt-format=seeds_chat]", "aria-pressed") == "true"
    page.click("#predict-btn")
    page.wait_for_selector("#prediction .format-label:text-matches('Seeds')")
    assert page.locator("pre.formatted").first.inner_text().startswith(
        "<|im_start|>system")
    assert '" The"' in page.locator("#topk tbody tr").first.inner_text()
    shot(page, "analyze-seeds-chat-format")
    page.click("[data-prompt-format=plain]")
    assert not page.is_checked("#chat_template") and page.input_value("#answer_prefix") == ""
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


# Room left in a select beside its chosen option's text (padding and the arrow need ~24 px).
SELECT_ROOM = """e => {
    const c = document.createElement('canvas').getContext('2d');
    c.font = getComputedStyle(e).font;
    return e.clientWidth - c.measureText(e.options[e.selectedIndex].text).width; }"""


@pytest.mark.parametrize("width", [1440, 1280])
def test_every_select_of_the_form_shows_its_whole_choice(  # type: ignore[no-untyped-def]
        page, live_server: str, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 1000})
    page.goto(live_server + "/")
    page.locator("details.settings summary").click()
    for field in ("#model", "#method", "#mode", "#drop_always_on"):
        options = page.eval_on_selector(field, "e => e.options.length")
        for i in range(options):  # every choice, not only the default
            page.eval_on_selector(field, f"e => {{ e.selectedIndex = {i}; }}")
            room = page.eval_on_selector(field, SELECT_ROOM)
            assert room >= 24, (field, i, room)
