"""Before/after evaluation and the degeneration check, on tiny checkpoints and variants
trained from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.answers import resolve_answer
from analysis.correction.config import EvalItem, TrainingConfig
from analysis.correction.evaluate import (
    degeneration_check,
    evaluate_prompts,
    repetition_rate,
)
from analysis.correction.train import train
from analysis.errors import InputError, LimitExceeded
from analysis.evaluation import Scored
from analysis.models import LoadedModel, ModelSpec, activate, load_lora_variant, load_model
from analysis.predict import predict
from analysis.prompts import PromptSpec
from tests.seed_texts import SEED_PROMPT, V4_TEXTS

# Trains with TRL, or starts worker processes or Ray: the integration tier.
pytestmark = pytest.mark.integration

pytest.importorskip("trl")

ITEMS = [
    EvalItem(prompt=SEED_PROMPT, expected=" aldosterone", wrong=" renin", kind="target"),
    EvalItem(prompt="The primary hormone regulating blood pressure is", expected=" aldosterone",
             wrong=" renin"),
    EvalItem(prompt="The neurotransmitter associated with reward is", expected=" dopamine",
             kind="side_effect"),
]


def _variant(tiny_dirs: dict[str, Path], out: Path, method: str) -> Path:
    spec = ModelSpec(name="tiny-llama", source="local", path=tiny_dirs["llama"], device="cpu")
    cfg = TrainingConfig(name="v", texts=V4_TEXTS[:2], epochs=2, method=method,  # type: ignore[arg-type]
                         learning_rate=1e-2, lr_scheduler="constant", warmup_ratio=0)
    train(cfg, spec, tiny_dirs["llama"].parent, out)
    return out


@pytest.fixture(scope="module")
def full_variant(tiny_dirs, tmp_path_factory) -> LoadedModel:  # type: ignore[no-untyped-def]
    out = _variant(tiny_dirs, tmp_path_factory.mktemp("ev") / "full", "full")
    return load_model(ModelSpec(name="v-full", source="local", path=out, device="cpu"),
                      out.parent)


@pytest.fixture(scope="module")
def lora_pair(tiny_dirs, tmp_path_factory) -> tuple[LoadedModel, LoadedModel]:  # type: ignore[no-untyped-def]
    """A base of its own (the overlay attaches to it) and the LoRA variant over it."""
    out = _variant(tiny_dirs, tmp_path_factory.mktemp("ev") / "lora", "lora")
    base = load_model(ModelSpec(name="tiny-llama", source="local", path=tiny_dirs["llama"],
                                device="cpu"), tiny_dirs["llama"].parent)
    variant = load_lora_variant(ModelSpec(name="v-lora", source="local", path=out,
                                          kind="lora", base="tiny-llama"), base, out.parent)
    return base, variant


def _check_side(side: Scored, lm: LoadedModel, item: EvalItem) -> None:
    answers = [item.expected] + ([item.wrong] if item.wrong else [])
    ref = predict(lm, PromptSpec(prompt=item.prompt), answers, top_k=1)
    assert side.expected.prob == pytest.approx(ref.answers[0].prob, rel=1e-4)
    assert side.expected.rank == ref.answers[0].rank
    assert side.top1.text == ref.top[0].text
    # Correct is the one rule: the expected first token is the top-1 (not merely m > 0).
    assert side.correct == (side.expected.rank == 1)
    if item.wrong:
        assert side.wrong is not None
        assert side.wrong.prob == pytest.approx(ref.answers[1].prob, rel=1e-4)
        assert side.m == pytest.approx(ref.answers[0].logit - ref.answers[1].logit, abs=1e-4)
    else:
        assert side.wrong is None and side.m is None


def test_rows_score_both_models(tiny_lms, full_variant) -> None:  # type: ignore[no-untyped-def]
    base = tiny_lms["llama"]
    rows = evaluate_prompts(base, full_variant, ITEMS)
    assert [(r.index, r.kind) for r in rows] == [(0, "target"), (1, "generalization"),
                                                 (2, "side_effect")]
    for row, item in zip(rows, ITEMS, strict=True):
        _check_side(row.before, base, item)
        _check_side(row.after, full_variant, item)
        # Scored by the first token; the note says when that is not the whole answer.
        first = resolve_answer(base.tokenizer, item.expected)
        assert row.expected == item.expected
        assert row.after.expected.answer.token_text == first.token_text
        assert (row.note is not None) == (first.note is not None)
        assert row.delta_p_expected == pytest.approx(row.after.expected.prob
                                                     - row.before.expected.prob)
    assert rows[0].after.expected.prob != pytest.approx(rows[0].before.expected.prob, rel=1e-3)


def test_a_lora_overlay_is_scored_off_and_on_over_one_copy_of_its_base(tiny_lms, lora_pair) -> None:  # type: ignore[no-untyped-def]
    base, variant = lora_pair
    assert variant.model is base.model  # one copy of the weights serves both sides
    rows = evaluate_prompts(base, variant, ITEMS)
    for row, item in zip(rows, ITEMS, strict=True):
        _check_side(row.before, tiny_lms["llama"], item)  # overlay off == the base model
    activate(variant)
    for row, item in zip(rows, ITEMS, strict=True):
        _check_side(row.after, variant, item)
    assert rows[0].after.m != pytest.approx(rows[0].before.m, abs=1e-4)
    # The same scores in the other order: switching never drifts.
    again = evaluate_prompts(variant, base, ITEMS[:1])
    assert again[0].before.m == pytest.approx(rows[0].after.m, abs=1e-6)
    assert again[0].after.m == pytest.approx(rows[0].before.m, abs=1e-6)


def test_the_overlay_scores_what_peft_scores(tiny_lms, lora_pair) -> None:  # type: ignore[no-untyped-def]
    """The LoRA path that stays agrees with PEFT, the path the evaluation used before."""
    import copy

    from peft import PeftModel

    base, variant = lora_pair
    adapter_dir = variant.spec.path
    peft_lm = copy.copy(tiny_lms["llama"])
    peft_lm.model = PeftModel.from_pretrained(copy.deepcopy(tiny_lms["llama"].model),
                                              str(adapter_dir)).eval()
    rows = evaluate_prompts(base, variant, ITEMS)
    for row, item in zip(rows, ITEMS, strict=True):
        _check_side(row.after, peft_lm, item)


def test_the_same_model_on_both_sides_is_refused(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as info:
        evaluate_prompts(tiny_lms["llama"], tiny_lms["llama"], ITEMS)
    assert info.value.field == "before"


def test_style_formats_every_item(tiny_lms, full_variant) -> None:  # type: ignore[no-untyped-def]
    style = PromptSpec(prompt="-", chat_template=True, answer_prefix=" Answer:")
    rows = evaluate_prompts(tiny_lms["llama"], full_variant, ITEMS[:1], style=style)
    ref = predict(tiny_lms["llama"], style.model_copy(update={"prompt": SEED_PROMPT}),
                  [" aldosterone"], top_k=1)
    assert rows[0].before.expected.prob == pytest.approx(ref.answers[0].prob, rel=1e-4)


def test_bad_items_name_their_field(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    bad = [ITEMS[0], EvalItem(prompt="p is", expected=" renin", wrong=" renin")]
    with pytest.raises(InputError) as info:
        evaluate_prompts(tiny_lms["llama"], tiny_lms["gemma3"], bad)
    assert info.value.field == "eval_set[1].wrong"
    assert evaluate_prompts(tiny_lms["llama"], tiny_lms["gemma3"], []) == []


def test_repetition_rate() -> None:
    assert repetition_rate(list(range(32))) == 0.0
    assert repetition_rate([7] * 32) > 0.95
    assert repetition_rate([1, 2] * 16) > 0.9
    sentence_twice = repetition_rate(list(range(16)) * 2)
    assert 0.45 < sentence_twice < 0.5
    assert repetition_rate([]) == 0.0
    assert repetition_rate([5]) == 0.0


def test_degeneration_check_on_a_tiny_model(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]
    prompts: list[str | PromptSpec] = [SEED_PROMPT, PromptSpec(prompt="Aldosterone is",
                                                                chat_template=True)]
    report = degeneration_check(lm, prompts, max_new_tokens=12)
    assert report.max_new_tokens == 12 and len(report.items) == 2
    assert report.items[1].prompt == "Aldosterone is"
    for item in report.items:
        assert 0 <= item.n_tokens <= 12
        assert 0.0 <= item.repetition <= 1.0
        assert item.degenerate == (item.empty or item.repetition > report.threshold)
    assert report.n_degenerate == sum(i.degenerate for i in report.items)
    # Greedy: the same prompt gives the same text.
    again = degeneration_check(lm, [SEED_PROMPT], max_new_tokens=12)
    assert again.items[0].text == report.items[0].text
    strict = degeneration_check(lm, [SEED_PROMPT], max_new_tokens=12, threshold=-1.0)
    assert strict.items[0].degenerate and strict.any_degenerate


def test_degeneration_check_caps_new_tokens(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LimitExceeded) as info:
        degeneration_check(tiny_lms["llama"], [SEED_PROMPT], max_new_tokens=10_000)
    assert info.value.field == "max_new_tokens"
