"""Whole-answer scoring and the two named prompt formats, on tiny random models of each
architecture, checked against one unpadded forward pass per answer written in the test."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.predict import predict, predict_formats
from analysis.prompts import PROMPT_FORMATS, PromptSpec, format_label, format_prompt, in_format
from analysis.screening import ScreenItem, screen
from analysis.whole_answer import whole_answer_scores
from tests.tiny_checkpoints import ARCHS

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


def _reference_logprob(lm, prompt_ids: list[int], answer_ids: list[int]) -> float:  # type: ignore[no-untyped-def]
    """log P(answer | prompt) from one forward over prompt + answer, no padding, no cache."""
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logp = lm.model(input_ids=ids).logits[0].float().log_softmax(-1)
    start = len(prompt_ids) - 1
    return sum(float(logp[start + i, t]) for i, t in enumerate(answer_ids))


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_answer_matches_a_plain_forward(tiny_lms, arch: str) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms[arch]
    tok = lm.tokenizer
    prompts = [tok(p)["input_ids"] for p in (PROMPT, "The capital of France is", "A")]
    answers = [tok(a, add_special_tokens=False)["input_ids"]
               for a in (" aldosterone", " Paris", " renin and angiotensin")]
    pairs = [(p, a) for p in prompts for a in answers]  # unequal lengths on both sides
    scores = whole_answer_scores(lm, pairs, batch_size=4)
    for (p, a), s in zip(pairs, scores, strict=True):
        ref = _reference_logprob(lm, p, a)
        assert s.logprob == pytest.approx(ref, abs=2e-4)
        assert s.prob == pytest.approx(math.exp(ref), rel=1e-3)
        assert s.n_tokens == len(a) == len(s.token_logprobs)


def test_predict_reports_first_token_and_whole_answer(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]
    p = predict(lm, PromptSpec(prompt=PROMPT), answers=[" aldosterone", " renin"], top_k=3)
    for a in p.answers:
        assert a.whole is not None and a.whole.n_tokens == a.answer.n_tokens
        assert a.answer.token_ids[0] == a.answer.token_id
        # The first token's log-prob is the whole answer's first term.
        assert a.whole.token_logprobs[0] == pytest.approx(math.log(a.prob), abs=1e-4)
        if a.answer.n_tokens > 1:
            assert a.whole.prob < a.prob
    assert p.format == "Plain completion"


def test_screening_reports_whole_answer_and_its_rule(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["qwen3"]
    result = screen(lm, [ScreenItem(prompt=PROMPT, answer="aldosterone")])
    row = result.rows[0]
    formatted = format_prompt(lm.tokenizer, PromptSpec(prompt=PROMPT))
    ids = lm.tokenizer(" aldosterone", add_special_tokens=False)["input_ids"]
    assert row.correct_whole_prob == pytest.approx(
        math.exp(_reference_logprob(lm, formatted.input_ids, ids)), rel=1e-3)
    assert "first tokens" in result.decided_on
    assert result.format == "Plain completion"


def test_named_formats_and_the_empty_system_turn(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]  # its tokenizer has tests.tiny_checkpoints.CHAT_TEMPLATE
    spec = PromptSpec(prompt=PROMPT)
    chat = in_format(spec, "seeds_chat")
    assert (chat.chat_template, chat.system_prompt, chat.answer_prefix) == (True, "", " Answer:")
    text = format_prompt(lm.tokenizer, chat).text
    # '' is an empty system turn (the seeds' setting); None is no system turn at all.
    assert text.startswith("<bos><|system|><|end|><|user|>") and text.endswith(" Answer:")
    no_system = format_prompt(lm.tokenizer, chat.model_copy(update={"system_prompt": None}))
    assert no_system.text.startswith("<bos><|user|>")
    assert format_label(chat) == PROMPT_FORMATS["seeds_chat"].label
    # Without a template the system prompt plays no part: '' and None are both plain.
    assert format_label(spec.model_copy(update={"system_prompt": ""})) == "Plain completion"
    assert format_label(spec.model_copy(update={"answer_prefix": " A:"})).startswith(
        "Plain completion + answer prefix")
    both = predict_formats(lm, spec, [" renin"], top_k=3)
    assert [p.format for p in both] == [f.label for f in PROMPT_FORMATS.values()]
    assert both[1].prompt.text == text
    assert both[0].answers[0].prob != both[1].answers[0].prob
    saved = lm.tokenizer.chat_template
    lm.tokenizer.chat_template = None
    try:
            # Without a template only the plain format is offered.
        assert [p.format for p in predict_formats(lm, spec)] == ["Plain completion"]
    finally:
        lm.tokenizer.chat_template = saved
