"""Correction on the real embedded Gemma-3-270M: the in-context preview of the seeds' v4
texts, and a short full fine-tune on them that raises P(aldosterone) for the seed prompt.

Measured on 2 CPU cores: the preview ~0.5 s; one epoch over the four v4 texts (4 steps,
constant lr 2e-5) ~17 s of training, ~30 s with loading and saving; P(aldosterone)
3.7% -> ~12.6% and renin 11.7% -> ~7.6% (the seeds' own fix on Llama-3.1-8B: 11.4% ->
28.1%). The run is pinned to float32 so a GPU box trains the same way (small updates
round away in bfloat16 weights).
"""

from __future__ import annotations

import time

import pytest

from analysis.correction.config import TrainingConfig
from analysis.correction.evaluate import degeneration_check, evaluate_prompts
from analysis.correction.preview import in_context_preview
from analysis.correction.textcheck import check_texts, suggest_topic_words
from analysis.correction.train import read_metadata
from analysis.models import ModelSpec, load_model
from analysis.predict import predict
from analysis.prompts import PromptSpec
from tests.seed_texts import RENIN_TEXTS, SEED_PROMPT, V4_TEXTS

pytestmark = pytest.mark.integration

RAW = PromptSpec(prompt=SEED_PROMPT)
CHAT = PromptSpec(prompt=SEED_PROMPT, chat_template=True, answer_prefix=" Answer:")


@pytest.mark.parametrize("spec", [RAW, CHAT], ids=["raw", "chat"])
def test_in_context_preview_of_the_v4_texts(embedded_lm, spec: PromptSpec) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    p = in_context_preview(embedded_lm, spec, " aldosterone", " renin", V4_TEXTS)
    seconds = time.perf_counter() - started
    print(f"in-context preview ({'chat' if spec.chat_template else 'raw'}): {seconds:.2f} s")
    for side in (p.alone, p.in_context):
        assert 0 < side.prob_a < 1 and 0 < side.prob_b < 1
        assert side.rank_a >= 1 and side.rank_b >= 1
        assert side.m == pytest.approx(side.logit_a - side.logit_b)
    assert p.in_context.n_tokens > p.alone.n_tokens + 300  # four ~100-token texts
    if not spec.chat_template:  # the documented error: renin 11.7% over aldosterone 3.7%
        assert p.alone.prob_b > 2 * p.alone.prob_a
    assert p.answer_a.token_text == " aldosterone" and p.answer_b.token_text == " renin"


def test_renin_texts_push_renin_in_context(embedded_lm) -> None:  # type: ignore[no-untyped-def]
    # The seeds' lesson, visible without training: reading the renin texts shifts m
    # towards renin, reading the v4 texts does not shift it as far.
    renin = in_context_preview(embedded_lm, CHAT, " aldosterone", " renin", RENIN_TEXTS[1:])
    v4 = in_context_preview(embedded_lm, CHAT, " aldosterone", " renin", V4_TEXTS)
    assert renin.delta_m < 0
    assert v4.delta_m > renin.delta_m


def test_v4_texts_pass_the_text_check() -> None:
    topics = suggest_topic_words(SEED_PROMPT, [" aldosterone", " renin"])
    findings = check_texts(V4_TEXTS, wrong_answer=" renin", correct_answer=" aldosterone",
                           topic_words=topics, wrong_token_forms=[" Ren"])
    assert all(f.ok for f in findings)


def test_short_full_fine_tune_raises_aldosterone(embedded_lm, v4_full_variant,  # type: ignore[no-untyped-def]
                                                 tmp_path) -> None:
    """The shared v4 variant (tests/conftest.py: 1 epoch, lr 2e-5 constant, trained once
    per models cache by train()) moves the seed prompt towards aldosterone."""
    meta = read_metadata(v4_full_variant)
    assert meta["base_model"] == embedded_lm.name
    assert meta["metrics"]["steps"] == 4
    cfg = TrainingConfig.model_validate(meta["config"])
    result_dir = v4_full_variant
    tuned = load_model(ModelSpec(name="v4-short", source="local", path=result_dir,
                                 kind="full", base=embedded_lm.name), tmp_path)
    before = predict(embedded_lm, RAW, [" aldosterone", " renin"])
    after = predict(tuned, RAW, [" aldosterone", " renin"])
    print(f"P(aldosterone) {before.answers[0].prob:.3f} -> {after.answers[0].prob:.3f}, "
          f"P(renin) {before.answers[1].prob:.3f} -> {after.answers[1].prob:.3f}")
    assert after.answers[0].prob > 2 * before.answers[0].prob
    m_before = before.answers[0].logit - before.answers[1].logit
    m_after = after.answers[0].logit - after.answers[1].logit
    assert m_after > m_before + 0.5

    rows = evaluate_prompts(embedded_lm, tuned, cfg.eval_items())
    assert rows[0].kind == "target"
    assert rows[0].after.p_expected == pytest.approx(after.answers[0].prob, rel=1e-3, abs=1e-4)
    assert rows[0].after.m is not None and rows[0].before.m is not None
    assert rows[0].after.m > rows[0].before.m

    report = degeneration_check(tuned, ["Aldosterone is"], max_new_tokens=16)
    assert not report.items[0].empty
