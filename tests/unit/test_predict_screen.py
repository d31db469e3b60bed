"""Predictions and screening on tiny random models of each supported architecture,
checked against a plain forward pass computed in the test."""

from __future__ import annotations

import pytest
import torch

from analysis.errors import InputError, LimitExceeded
from analysis.predict import Limits, next_token_logits, predict
from analysis.prompts import PromptSpec, format_prompt
from analysis.screening import ScreenItem, ScreenOptions, parse_screen_json, screen
from tests.tiny_checkpoints import ARCHS

PROMPTS = [
    "The capital of France is",
    "The primary hormone involved in the regulation of blood pressure and volume is",
    "A common side effect is",
]


def _plain_last_logits(lm, text: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return lm.model(input_ids=ids).logits[0, -1].float()


@pytest.mark.parametrize("arch", ARCHS)
def test_predict_matches_a_plain_forward(tiny_lms, arch: str) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms[arch]
    p = predict(lm, PromptSpec(prompt=PROMPTS[0]), answers=[" Paris", " the"], top_k=5)
    ref = _plain_last_logits(lm, PROMPTS[0]).softmax(-1)
    top = ref.topk(5)
    assert [t.token_id for t in p.top] == top.indices.tolist()
    assert [t.prob for t in p.top] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert [t.rank for t in p.top] == [1, 2, 3, 4, 5]
    for a in p.answers:
        assert a.prob == pytest.approx(float(ref[a.answer.token_id]), abs=1e-6)
        assert a.rank == int((ref > ref[a.answer.token_id]).sum()) + 1


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_logits_equal_one_at_a_time(tiny_lms, arch: str) -> None:  # type: ignore[no-untyped-def]
    """Left padding must not change any prompt's prediction."""
    lm = tiny_lms[arch]
    ids = [format_prompt(lm.tokenizer, PromptSpec(prompt=p)).input_ids for p in PROMPTS]
    assert len({len(i) for i in ids}) > 1  # really padded
    batched = next_token_logits(lm, ids)
    for row, seq in zip(batched, ids, strict=True):
        single = next_token_logits(lm, [seq])[0]
        assert torch.allclose(row, single, atol=1e-4)


def test_limits_are_enforced(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]
    with pytest.raises(LimitExceeded, match="max_top_k=3"):
        predict(lm, PromptSpec(prompt="hi"), top_k=4, limits=Limits(max_top_k=3))
    with pytest.raises(LimitExceeded, match="max_prompt_tokens"):
        predict(lm, PromptSpec(prompt="the " * 40), limits=Limits(max_prompt_tokens=10))
    with pytest.raises(LimitExceeded, match="max_batch_size=2"):
        screen(lm, [ScreenItem(prompt="a", answer="b")] * 3, limits=Limits(max_batch_size=2))


def _row_expectation(lm, item: ScreenItem, options: ScreenOptions):  # type: ignore[no-untyped-def]
    """An independent re-derivation of a screening row from the full distribution."""
    probs = _plain_last_logits(lm, item.prompt).softmax(-1)
    order = probs.argsort(descending=True).tolist()
    texts = [lm.tokenizer.decode([t]) for t in order]
    filler = {f.strip().lower() for f in options.filler_tokens} if options.skip_filler else set()
    top1 = next(i for i, t in enumerate(texts) if t.strip().lower() not in filler)
    return order, texts, top1


@pytest.mark.parametrize("skip", [True, False])
def test_screen_rows_follow_the_distribution(tiny_lms, skip: bool) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["gemma3"]
    # Make the model's own top tokens "filler" so skipping is really exercised.
    base = _plain_last_logits(lm, PROMPTS[1]).softmax(-1).argsort(descending=True).tolist()
    filler = [lm.tokenizer.decode([t]) for t in base[:2]]
    options = ScreenOptions(top_k=5, skip_filler=skip, filler_rule="list", filler_tokens=filler,
                            batch_size=2)
    answer_tok = lm.tokenizer.decode([base[3]])
    items = [ScreenItem(prompt=PROMPTS[1], answer=answer_tok),
             ScreenItem(prompt=PROMPTS[0], answer="Paris"),
             ScreenItem(prompt=PROMPTS[2], answer="constipation")]
    result = screen(lm, items, options)
    assert [r.index for r in result.rows] == [0, 1, 2]
    row = result.rows[0]
    order, _texts, top1 = _row_expectation(lm, items[0], options)
    assert row.top1.token_id == order[top1]
    assert [s.token_id for s in row.skipped] == order[:top1]
    assert (len(row.skipped) > 0) == skip
    if row.answer_token.strip():
        assert row.correct_rank == 4
        assert row.rank_excluding_filler == (2 if skip else 4)
        assert row.wrong and row.target
    assert result.n_targets == sum(r.target for r in result.rows)


def test_parse_screen_json_forms_and_errors() -> None:
    items = parse_screen_json('[{"prompt": "p", "answer": "a"}]')
    assert items == [ScreenItem(prompt="p", answer="a")]
    items = parse_screen_json('{"prompts": [{"prompt": "p", "correct_answer": "a", "x": 1}]}')
    assert items[0].answer == "a"
    for bad, where in [("{not json", "not valid JSON"), ("[]", "non-empty"),
                       ('{"x": 1}', "expected a list"),
                       ('[{"prompt": "p"}]', "item 0"),
                       ('[{"prompt": "", "answer": "a"}]', "item 0"),
                       ('[{"prompt": "p", "answer": "a"}, 5]', "item 1")]:
        with pytest.raises(InputError, match=where):
            parse_screen_json(bad)
