"""A correction job from the web form in Chromium, on the default embedded model on CPU,
in the seeds' chat format (one click: chat template, empty system turn, " Answer:", and
chat-formatted training texts): the v4 texts pass the text check, the in-context preview
answers, the job trains with live progress, its evaluation shows what the base and the
variant predict, and it opens in Compare in the same format."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import shot
from tests.seed_texts import RENIN_TEXTS, SEED_PROMPT, V4_TEXTS
from tests.waiting import PATIENCE_MS, wait_for

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
    page.click("[data-prompt-format=seeds_chat]")
    assert page.is_checked("#chat_template") and page.is_checked("#use_chat_template")
    assert page.input_value("#answer_prefix") == " Answer:"

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
    page.wait_for_selector("#preview-table", timeout=PATIENCE_MS)

    page.click("#training-settings summary")
    page.fill("#epochs", "1")
    page.fill("#learning_rate", "2e-5")
    page.select_option("#lr_scheduler", "constant")
    page.fill("#warmup_ratio", "0")
    started = time.monotonic()
    page.click("#queue-btn")
    page.wait_for_url(re.compile(r"/jobs/\w+$"), timeout=PATIENCE_MS)

    # Live progress: the polled fragment shows steps while the job trains.
    page.wait_for_selector("#job-state:text-matches('running|evaluating|succeeded')",
                           timeout=PATIENCE_MS)
    seen_steps = set()
    def finished() -> str | None:
        state = page.locator("#job-state").inner_text().strip()
        step = page.locator("#job-step").inner_text().strip()
        if "/" in step:
            seen_steps.add(step)
        return state if state in ("succeeded", "failed", "cancelled", "interrupted") else None

    state = wait_for(finished, "the job to finish", poll_s=0.5)
    wall = time.monotonic() - started
    print(f"v4 job (1 epoch, 4 texts) queued -> {state} in {wall:.0f} s")
    assert state == "succeeded", page.locator("#job-log").inner_text()
    assert seen_steps, "the page showed training steps while it ran"
    assert page.locator("#loss-plot .main-svg").count() >= 1
    before, after = (float(page.locator("#eval-target tbody tr").first.locator("td")
                           .nth(i).inner_text().rstrip("%")) for i in (1, 2))
    # The page shows what the two models say: checked against the JSON API's predictions
    # of the base and of the variant the job registered (first token and whole answer).
    variant = page.locator("#open-compare").get_attribute("href").split("variant=")[1]
    variant = variant.split("&")[0]
    body = {"prompt": SEED_PROMPT, "answers": [" aldosterone", " renin"],
            "chat_template": True, "system_prompt": "", "answer_prefix": " Answer:"}
    api = {name: page.request.post(f"{live_server}/api/v1/predict",
                                   data={**body, "model": name}).json()["answers"][0]
           for name in ("smollm2-135m-instruct", variant)}
    assert before == pytest.approx(100 * api["smollm2-135m-instruct"]["prob"], abs=0.006)
    assert after == pytest.approx(100 * api[variant]["prob"], abs=0.006)
    assert after != before  # four steps moved the model
    whole_row = page.locator("#eval-target tbody tr:has-text('whole answer A')")
    assert "(3 tokens)" in whole_row.inner_text()
    shot(page, "job-v4")

    page.click("#open-compare")
    page.wait_for_selector("#compare-form")
    page.wait_for_load_state("load")  # htmx (deferred) must be wired before the click
    assert page.input_value("#prompt") == SEED_PROMPT
    assert page.is_checked("#chat_template")  # Compare opens in the job's format
    assert page.input_value("#answer_prefix") == " Answer:"
    variant = page.input_value("#variant")
    assert variant.startswith("v4-browser")
    page.click("#compare-btn")
    page.wait_for_selector("#verdict", timeout=PATIENCE_MS)
    shot(page, "job-v4-compare")
    assert page.console_errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [1440, 1280, 1024])
def test_the_job_form_has_room_for_its_texts(page, live_server: str, width: int) -> None:  # type: ignore[no-untyped-def]
    """The form is the work on this page: its text boxes and paired fields are wide enough
    to read what is typed (a 230 px column cut the answers and the base model's name)."""
    page.set_viewport_size({"width": width, "height": 1000})
    page.goto(live_server + "/jobs?concept=L26/N619&words=blood,hormone")
    page.wait_for_selector("#concept-box")
    page.fill("#answer_a", " aldosterone")
    text_width = page.eval_on_selector("#texts textarea", "e => e.clientWidth")
    assert text_width >= 400, text_width
    assert not page.eval_on_selector("#answer_a", "e => e.scrollWidth > e.clientWidth + 1")
    # The selected model's whole name fits its select (text, padding and the arrow).
    room = page.eval_on_selector("#base_model", """e => {
        const c = document.createElement('canvas').getContext('2d');
        c.font = getComputedStyle(e).font;
        return e.clientWidth - c.measureText(e.options[e.selectedIndex].text).width; }""")
    assert room >= 30, room
