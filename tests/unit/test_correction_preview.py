"""In-context preview on tiny checkpoints: the 'alone' side is exactly predict(), the texts
go where the docs say, and the size cap is enforced."""

from __future__ import annotations

import math

import pytest

from analysis.correction.preview import context_prompt, in_context_preview
from analysis.errors import InputError, LimitExceeded
from analysis.predict import Limits, predict
from analysis.prompts import PromptSpec
from tests.seed_texts import SEED_PROMPT, V4_TEXTS

RAW = PromptSpec(prompt=SEED_PROMPT)
CHAT = PromptSpec(prompt=SEED_PROMPT, chat_template=True, system_prompt="Be brief.",
                  answer_prefix=" Answer:")


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_alone_matches_predict_and_context_changes_it(tiny_lms, arch: str) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms[arch]
    p = in_context_preview(lm, RAW, " aldosterone", " renin", V4_TEXTS[:2])
    ref = predict(lm, RAW, [" aldosterone", " renin"], top_k=5)
    assert p.alone.prob_a == pytest.approx(ref.answers[0].prob, rel=1e-5)
    assert p.alone.prob_b == pytest.approx(ref.answers[1].prob, rel=1e-5)
    assert (p.alone.rank_a, p.alone.rank_b) == (ref.answers[0].rank, ref.answers[1].rank)
    assert [t.token_id for t in p.alone.top] == [t.token_id for t in ref.top]
    assert p.alone.n_tokens == len(ref.prompt.input_ids)
    for side in (p.alone, p.in_context):
        assert side.m == pytest.approx(side.logit_a - side.logit_b)
        assert 0 < side.prob_a < 1 and 0 < side.prob_b < 1
        assert len(side.top) == 5
        assert all(math.isfinite(t.logit) for t in side.top)
    assert p.in_context.n_tokens > p.alone.n_tokens + 100
    assert p.in_context.m != pytest.approx(p.alone.m, abs=1e-6)  # the model read the texts
    assert p.delta_m == pytest.approx(p.in_context.m - p.alone.m)


def test_raw_context_is_texts_then_prompt(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    p = in_context_preview(tiny_lms["llama"], RAW.model_copy(update={"answer_prefix": " A:"}),
                           " aldosterone", " renin", ["  first text\n", "second text\n\n"])
    assert p.context_text == f"first text\n\nsecond text\n\n{SEED_PROMPT} A:"


def test_chat_context_goes_at_the_start_of_the_user_turn(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]
    p = in_context_preview(lm, CHAT, " aldosterone", " renin", ["Aldosterone is a hormone."])
    # The tiny checkpoints' template: <|system|>..<|end|><|user|>..<|end|><|assistant|>..
    user = p.context_text.index("<|user|>")
    assert p.context_text.index("Be brief.") < user
    assert p.context_text.index(f"<|user|>Aldosterone is a hormone.\n\n{SEED_PROMPT}") == user
    assert p.context_text.endswith("<|assistant|> Answer:")


def test_context_prompt_keeps_the_formatting() -> None:
    spec = context_prompt(CHAT, ["a", "  ", "b"])
    assert spec.prompt == f"a\n\nb\n\n{SEED_PROMPT}"
    assert (spec.chat_template, spec.system_prompt, spec.answer_prefix) == (
        True, "Be brief.", " Answer:")


def test_too_many_tokens_is_a_limit_naming_texts(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LimitExceeded) as info:
        in_context_preview(tiny_lms["llama"], RAW, " aldosterone", " renin", V4_TEXTS,
                           max_tokens=200)
    assert info.value.field == "texts"
    assert "200" in info.value.message
    with pytest.raises(LimitExceeded):  # refused before tokenizing
        in_context_preview(tiny_lms["llama"], RAW, " aldosterone", " renin", ["x" * 5000],
                           max_tokens=100)


def test_bad_inputs_are_input_errors(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]
    with pytest.raises(InputError) as info:
        in_context_preview(lm, RAW, " aldosterone", " renin", ["  ", ""])
    assert info.value.field == "texts"
    with pytest.raises(InputError) as info:
        in_context_preview(lm, RAW, " aldosterone", "", V4_TEXTS[:1])
    assert info.value.field == "answer_b"
    with pytest.raises(InputError) as info:
        in_context_preview(lm, RAW, " renin", " renin", V4_TEXTS[:1])
    assert info.value.field == "answer_b"


def test_each_text_alone_all_together_and_the_flagged_ones_marked(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    from tests.seed_texts import RENIN_TEXTS

    lm = tiny_lms["llama"]
    texts = [V4_TEXTS[0], RENIN_TEXTS[0], "  ", V4_TEXTS[1]]
    p = in_context_preview(lm, RAW, " aldosterone", " renin", texts)
    # Numbered as the user typed them (the blank third text is skipped, not renumbered).
    assert [s.label for s in p.per_text] == ["text 1", "text 2", "text 4"]
    assert list(p.flags) == [2] and "mentions_wrong" in p.flags[2]
    assert p.in_context.texts == [1, 2, 4] and p.in_context.flagged == [2]
    assert [s.flagged for s in p.per_text] == [[], [2], []]
    assert p.unflagged is not None and p.unflagged.texts == [1, 4]
    # Each side is exactly the prompt with those texts before it, as predict scores it.
    for side in [*p.per_text, p.unflagged]:
        ref = predict(lm, context_prompt(RAW, [texts[n - 1] for n in side.texts]),
                      [" aldosterone", " renin"], top_k=5,
                      limits=Limits(max_prompt_tokens=4096))
        assert side.prob_a == pytest.approx(ref.answers[0].prob, rel=1e-4)
        assert side.m == pytest.approx(ref.answers[0].logit - ref.answers[1].logit, abs=1e-4)
        assert side.n_tokens == len(ref.prompt.input_ids)
        assert p.delta(side) == pytest.approx(side.m - p.alone.m)
    # One text alone: no per-text rows, nothing flagged, no unflagged row.
    one = in_context_preview(lm, RAW, " aldosterone", " renin", V4_TEXTS[:1])
    assert one.per_text == [] and one.unflagged is None and one.flags == {}
