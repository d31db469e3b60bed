"""Correction on the default embedded SmolLM2-135M-Instruct: the in-context preview of
the seeds' v4 texts, and a short full fine-tune on them in the seeds' chat format.

Measured on 2 CPU cores: the preview ~0.5 s; one epoch over the four chat-formatted v4
texts (4 steps, constant lr 2e-5) ~30 s with loading and saving. In context the v4 texts
flip the seed prompt (m -0.99 -> +4.1), but as SFT data they do not fix it on this 135M
model: " al" 11.8% -> 9.5%, " ren" 31.8% -> 33.0% (plain completion; the seeds' own fix on
Llama-3.1-8B: 11.4% -> 28.1%). The tests check that the pipeline measures what the model
does - the evaluation agrees with independent predictions and the verdict with m - not
that this recipe works on every model. float32 so a GPU box trains the same way.
"""

from __future__ import annotations

import time

import pytest

from analysis.correction.config import TrainingConfig
from analysis.correction.evaluate import degeneration_check, evaluate_prompts
from analysis.correction.preview import in_context_preview
from analysis.correction.textcheck import check_texts, suggest_topic_words
from analysis.correction.train import build_examples, read_metadata
from analysis.models import ModelSpec, load_model
from analysis.predict import predict
from analysis.prompts import PromptSpec, format_prompt, in_format
from tests.seed_texts import RENIN_TEXTS, SEED_PROMPT, V4_TEXTS

pytestmark = pytest.mark.integration

RAW = PromptSpec(prompt=SEED_PROMPT)
CHAT = in_format(RAW, "seeds_chat")  # chat template, empty system turn, " Answer:"


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
    if not spec.chat_template:  # the documented error: " ren" 31.8% over " al" 11.8%
        assert p.alone.prob_b > 2 * p.alone.prob_a
        # Reading the v4 texts first flips it (measured: m -0.99 -> +4.1).
        assert p.in_context.m > 0 > p.alone.m
    assert p.answer_a.token_text == " al" and p.answer_b.token_text == " ren"


def test_renin_texts_push_renin_in_context(embedded_lm) -> None:  # type: ignore[no-untyped-def]
    # The seeds' lesson, visible without training: reading the renin texts shifts m
    # towards renin, reading the v4 texts shifts it towards aldosterone (plain completion,
    # the format in which SmolLM2 makes the error; measured dm -1.5 and +5.1).
    renin = in_context_preview(embedded_lm, RAW, " aldosterone", " renin", RENIN_TEXTS[1:])
    v4 = in_context_preview(embedded_lm, RAW, " aldosterone", " renin", V4_TEXTS)
    assert renin.delta_m < 0
    assert v4.delta_m > renin.delta_m


def test_v4_texts_pass_the_text_check() -> None:
    topics = suggest_topic_words(SEED_PROMPT, [" aldosterone", " renin"])
    findings = check_texts(V4_TEXTS, wrong_answer=" renin", correct_answer=" aldosterone",
                           topic_words=topics, wrong_token_forms=[" Ren"])
    assert all(f.ok for f in findings)


def test_short_full_fine_tune_on_chat_formatted_texts(embedded_lm, v4_full_variant,  # type: ignore[no-untyped-def]
                                                      tmp_path) -> None:
    """The shared v4 variant (tests/conftest.py: 1 epoch, lr 2e-5 constant, chat-formatted
    texts with an empty system turn, trained once per models cache by train())."""
    meta = read_metadata(v4_full_variant)
    assert meta["base_model"] == embedded_lm.name
    assert meta["metrics"]["steps"] == 4
    cfg = TrainingConfig.model_validate(meta["config"])
    result_dir = v4_full_variant
    tuned = load_model(ModelSpec(name="v4-short", source="local", path=result_dir,
                                 kind="full", base=embedded_lm.name), tmp_path)
    # The texts were trained in the seeds' chat format: an empty system turn, then each
    # text as the assistant's turn.
    examples, _ = build_examples(cfg, embedded_lm.tokenizer)
    assert embedded_lm.tokenizer.decode(examples[0]).startswith(
        "<|im_start|>system\n<|im_end|>\n<|im_start|>assistant\nAldosterone is")
    for spec in (RAW, CHAT):
        before = predict(embedded_lm, spec, [" aldosterone", " renin"])
        after = predict(tuned, spec, [" aldosterone", " renin"])
        print(f"[{after.format}] P(al) {before.answers[0].prob:.4f} -> "
              f"{after.answers[0].prob:.4f}, P(ren) {before.answers[1].prob:.4f} -> "
              f"{after.answers[1].prob:.4f}; whole P(aldosterone) "
              f"{before.answers[0].whole.prob:.4f} -> {after.answers[0].whole.prob:.4f}")
        m_before = before.answers[0].logit - before.answers[1].logit
        m_after = after.answers[0].logit - after.answers[1].logit
        assert abs(m_after - m_before) > 0.01  # four steps at 2e-5 changed the model

        # The evaluation scores what an independent prediction of each model says, first
        # token and whole answer; corrected means the expected answer became the top-1.
        rows = evaluate_prompts(embedded_lm, tuned, cfg.eval_items(), style=spec)
        target = rows[0]
        assert target.kind == "target"
        for side, p in ((target.before, before), (target.after, after)):
            assert side.expected.prob == pytest.approx(p.answers[0].prob, rel=1e-3,
                                                       abs=1e-6)
            assert side.m == pytest.approx(p.answers[0].logit - p.answers[1].logit, abs=1e-3)
            assert side.expected.whole.prob == pytest.approx(p.answers[0].whole.prob, rel=1e-3)
            assert side.whole_m == pytest.approx(
                p.answers[0].whole.logprob - p.answers[1].whole.logprob, abs=1e-3)
        corrected = after.top[0].token_id == after.answers[0].answer.token_id
        assert (target.outcome == "corrected") == (corrected and not target.before.correct)

    report = degeneration_check(tuned, ["Aldosterone is"], max_new_tokens=16)
    assert not report.items[0].empty


def test_compare_in_the_seeds_chat_format(embedded_lm, v4_full_variant, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Compare end to end in the seeds' chat format: the sides' m are the models' own,
    the target row carries whole-answer probabilities, and the verdict follows m."""
    from analysis.analyze import CircuitRequest
    from analysis.attribution import CircuitSettings
    from analysis.comparison import CompareRequest, compare_loaded

    tuned = load_model(ModelSpec(name="v4-chat", source="local", path=v4_full_variant,
                                 kind="full", base=embedded_lm.name), tmp_path)
    req = CompareRequest(circuit=CircuitRequest(
        prompt=CHAT, answer_a=" aldosterone", answer_b=" renin",
        settings=CircuitSettings(tau=0.15, max_nodes=60)))
    result = compare_loaded(embedded_lm, tuned, req)
    for side, lm in ((result.base, embedded_lm), (result.tuned, tuned)):
        p = predict(lm, CHAT, [" aldosterone", " renin"])
        assert side.m == pytest.approx(p.answers[0].logit - p.answers[1].logit, abs=1e-3)
    target = result.prompts[0]
    assert target.kind == "target" and target.after.expected.whole is not None
    assert result.base.threshold == result.tuned.threshold  # one cut, the base's
    assert result.base_circuit is not None and result.base_circuit.prompt == format_prompt(
        embedded_lm.tokenizer, CHAT).text
    if result.tuned.m < result.base.m:
        assert result.comparison.verdict in ("made worse", "no change")
