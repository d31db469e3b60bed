"""The one evaluation core: the outcome rule on hand-made scores (the v4 case: m crosses
zero while a third token takes the top is 'improved', never 'corrected'), and the scorer
against predict() on tiny checkpoints."""

from __future__ import annotations

import math

import pytest

from analysis.answers import AnswerToken
from analysis.errors import InputError
from analysis.evaluation import (
    CORRECTED_RULE,
    MIN_DELTA_M,
    AnswerProb,
    EvalItem,
    ItemResult,
    OutcomeCounts,
    Scored,
    TokenProb,
    evaluate_items,
    outcome,
    score_items,
)
from analysis.predict import predict
from analysis.prompts import PromptSpec
from tests.seed_texts import SEED_PROMPT

ALD = AnswerToken(answer=" aldosterone", token_id=1, token_text=" al", n_tokens=3)
REN = AnswerToken(answer=" renin", token_id=2, token_text=" ren", n_tokens=2)
SODIUM = TokenProb(rank=1, token_id=3, text=" sodium", prob=0.3, logit=5.0)


def _scored(logit_a: float, logit_b: float, rank_a: int, top: TokenProb | None = None
            ) -> Scored:
    def answer(a: AnswerToken, logit: float, rank: int) -> AnswerProb:
        return AnswerProb(answer=a, prob=math.exp(logit) / 100, logit=logit, rank=rank)

    first = top or TokenProb(rank=1, token_id=1 if rank_a == 1 else 2,
                             text=" al" if rank_a == 1 else " ren", prob=0.3, logit=4.0)
    return Scored(expected=answer(ALD, logit_a, rank_a),
                  wrong=answer(REN, logit_b, 1 if rank_a != 1 and top is None else 3),
                  top=[first])


def test_the_v4_case_is_improved_not_corrected() -> None:
    before = _scored(2.0, 3.0, rank_a=3)                 # " ren" on top, m = -1
    after = _scored(3.2, 3.0, rank_a=2, top=SODIUM)      # m = +0.2, " sodium" on top
    assert before.m == pytest.approx(-1.0) and after.m == pytest.approx(0.2)
    assert not after.correct
    assert outcome(before, after) == "improved"
    row = ItemResult(index=0, kind="target", prompt="p", expected=" aldosterone",
                     before=before, after=after)
    assert row.outcome == "improved"
    assert row.model_dump(mode="json")["outcome"] == "improved"  # stored with the row
    assert "top-1" in CORRECTED_RULE and "'improved', not corrected" in CORRECTED_RULE


@pytest.mark.parametrize(("before", "after", "expected"), [
    ((2.0, 3.0, 2), (4.0, 3.0, 1), "corrected"),
    ((4.0, 3.0, 1), (4.5, 3.0, 1), "still right"),
    ((4.0, 3.0, 1), (2.0, 3.0, 2), "broken"),
    ((2.0, 3.0, 2), (2.0 + MIN_DELTA_M / 2, 3.0, 2), "no change"),
    ((2.0, 3.0, 2), (1.0, 3.0, 2), "worse"),
])
def test_each_outcome(before: tuple[float, float, int], after: tuple[float, float, int],
                      expected: str) -> None:
    assert outcome(_scored(*before), _scored(*after)) == expected


def test_without_a_wrong_answer_improved_reads_log_p_expected() -> None:
    def alone(prob: float, rank: int) -> Scored:
        return Scored(expected=AnswerProb(answer=ALD, prob=prob, logit=0.0, rank=rank),
                      top=[SODIUM])

    assert alone(0.1, 3).m is None
    assert outcome(alone(0.1, 3), alone(0.2, 2)) == "improved"   # log 2 > 0.1
    assert outcome(alone(0.1, 3), alone(0.105, 2)) == "no change"


def test_counts() -> None:
    rows = [ItemResult(index=i, kind=k, prompt="p", expected=" aldosterone", before=b, after=a)
            for i, (k, b, a) in enumerate([
                ("target", _scored(2, 3, 2), _scored(3.2, 3, 2, SODIUM)),
                ("side_effect", _scored(4, 3, 1), _scored(2, 3, 2))])]
    counts = OutcomeCounts.of(rows)
    assert counts.target == "improved"
    assert counts.counts == {"improved": 1, "broken": 1}
    assert (counts.correct_before, counts.correct_after) == (1, 0)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_the_scorer_is_what_predict_says(tiny_lms, arch: str) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms[arch]
    style = PromptSpec(prompt="-", answer_prefix=" A:")
    items = [EvalItem(kind="target", prompt=SEED_PROMPT, expected=" aldosterone",
                      wrong=" renin"),
             EvalItem(prompt="The capital of France is", expected=" Paris")]
    scored = score_items(lm, items, style, top_k=3)
    for item, s in zip(items, scored, strict=True):
        answers = [item.expected] + ([item.wrong] if item.wrong else [])
        ref = predict(lm, style.model_copy(update={"prompt": item.prompt}), answers, top_k=3)
        assert s.expected.prob == pytest.approx(ref.answers[0].prob, rel=1e-4)
        assert s.expected.rank == ref.answers[0].rank
        assert s.expected.whole is not None and ref.answers[0].whole is not None
        assert s.expected.whole.prob == pytest.approx(ref.answers[0].whole.prob, rel=1e-4)
        assert [t.token_id for t in s.top] == [t.token_id for t in ref.top]
        assert s.correct == (ref.top[0].token_id == ref.answers[0].answer.token_id)
        if item.wrong:
            assert s.m == pytest.approx(ref.answers[0].logit - ref.answers[1].logit, abs=1e-4)
        else:
            assert s.m is None and s.wrong is None


def test_evaluate_items_refuses_one_model_and_names_bad_fields(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]
    item = EvalItem(prompt="p is", expected=" renin", wrong=" renin")
    with pytest.raises(InputError) as info:
        evaluate_items(lm, lm, [item])
    assert info.value.field == "before"
    with pytest.raises(InputError) as info:
        score_items(lm, [EvalItem(prompt="x", expected=" a"), item])
    assert info.value.field == "eval_set[1].wrong"
