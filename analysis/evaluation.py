"""The one evaluation core: how a prompt with an expected (and maybe a wrong) answer is
scored on one model, and what "corrected" and "improved" mean between two models.

Every page and command that judges answers reads these objects: Predict (the answer
probabilities), the job evaluation, Experiments, Compare's prompt set, the in-context
preview and the CLI. Nothing else computes a probability, a rank, m or a top-1 for an
answer, and nothing else decides "corrected".

The words, each declared once here:

* **corrected** (:data:`CORRECTED_RULE`) - the answer-level rule: the expected answer's
  first token becomes the model's top-1 next token. A move of m alone is not enough: a
  fine-tune that lifts " aldosterone" above " renin" while " sodium" takes the top is
  *improved*, not corrected.
* **improved** / **worse** / **no change** (:data:`IMPROVED_RULE`) - m moved the right way
  by more than the band, :data:`MIN_DELTA_M` by default (the circuit verdict's
  ``min_delta_m``: one band for both).
* **broken** - the expected answer was the top-1 before and is not after (side effects).
* The circuit verdict ("pathway removed", "pathway weakened", "compensated", "diffuse",
  ``analysis.comparison.verdict``) is about *why*, and never uses these words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from analysis.answers import AnswerToken, resolve_answer
from analysis.errors import InputError
from analysis.models import LoadedModel
from analysis.nnsight_traces import forward_logits
from analysis.prompts import PromptSpec, format_prompt, token_text
from analysis.whole_answer import WholeAnswer, whole_answer_scores

EvalKind = Literal["target", "generalization", "side_effect"]
Outcome = Literal["corrected", "still right", "broken", "improved", "no change", "worse"]

# m must move more than this (logit units) to count as improved or worse; the circuit
# verdict's "no change" band (CompareThresholds.min_delta_m) defaults to the same value.
MIN_DELTA_M = 0.1
CORRECTED_RULE = ("Corrected = the expected answer's first token becomes the model's top-1 "
                  "next token (so it also beats the wrong answer); no token is skipped as "
                  "filler, and a rise of the expected answer under another top-1 is "
                  "'improved', not corrected.")
IMPROVED_RULE = (f"Improved / worse = m (logit expected − logit wrong; log P(expected) when "
                 f"there is no wrong answer) rose / fell by more than {MIN_DELTA_M}; broken "
                 "= the expected answer was the top-1 before and is not after.")
SCORE_BATCH = 16


class EvalItem(BaseModel):
    """One prompt to judge: its kind, the expected answer and optionally the wrong one.
    Formatted like the target prompt (chat template, system prompt, answer prefix)."""

    model_config = ConfigDict(extra="forbid")

    kind: EvalKind = "generalization"
    prompt: str = Field(min_length=1, max_length=4000)
    expected: str = Field(min_length=1, max_length=200,
                          description="The answer that should win.")
    wrong: str | None = Field(None, max_length=200,
                              description="The answer it should beat, if any.")


class TokenProb(BaseModel):
    rank: int
    token_id: int
    text: str
    prob: float
    logit: float


class AnswerProb(BaseModel):
    """One answer's scores on one model and prompt."""

    answer: AnswerToken
    prob: float = Field(description="First-token probability (the attribution metric's).")
    logit: float
    rank: int
    whole: WholeAnswer | None = Field(
        None, description="Probability of the whole answer, teacher-forced.")


class Scored(BaseModel):
    """One model on one item: the expected and wrong answers, m and the top tokens."""

    expected: AnswerProb
    wrong: AnswerProb | None = None
    top: list[TokenProb] = Field(description="The top next tokens, best first (>= 1).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def m(self) -> float | None:
        """logit(expected) - logit(wrong), first tokens; None without a wrong answer."""
        return None if self.wrong is None else self.expected.logit - self.wrong.logit

    @computed_field  # type: ignore[prop-decorator]
    @property
    def whole_m(self) -> float | None:
        """log P(whole expected) - log P(whole wrong)."""
        e, w = self.expected.whole, self.wrong.whole if self.wrong else None
        return None if e is None or w is None else e.logprob - w.logprob

    @property
    def top1(self) -> TokenProb:
        return self.top[0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def correct(self) -> bool:
        """The answer-level rule (CORRECTED_RULE): the expected first token is the top-1."""
        return self.expected.rank == 1

    @property
    def margin(self) -> float:
        """What 'improved' compares: m, or log P(expected) without a wrong answer."""
        return self.m if self.m is not None else math.log(max(self.expected.prob, 1e-45))


def outcome(before: Scored, after: Scored, band: float = MIN_DELTA_M) -> Outcome:
    """The one judgement of an item between two models (see the module docstring).
    ``band``: the no-change band of m (a comparison passes its verdict's)."""
    if after.correct:
        return "still right" if before.correct else "corrected"
    if before.correct:
        return "broken"
    delta = after.margin - before.margin
    if delta > band:
        return "improved"
    if delta < -band:
        return "worse"
    return "no change"


class ItemResult(BaseModel):
    """One item before (the base) and after (the variant), with its outcome."""

    index: int
    kind: EvalKind
    prompt: str
    expected: str = Field(description="The expected answer as given.")
    wrong: str | None = None
    note: str | None = Field(None, description="Multi-token or missing-space answers.")
    before: Scored
    after: Scored
    band: float = Field(MIN_DELTA_M, ge=0, description="The no-change band of m.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome(self) -> Outcome:
        return outcome(self.before, self.after, self.band)

    @property
    def delta_p_expected(self) -> float:
        return self.after.expected.prob - self.before.expected.prob


class OutcomeCounts(BaseModel):
    """How many items ended in each outcome, and the target's."""

    n_items: int
    correct_before: int
    correct_after: int
    counts: dict[str, int]
    target: Outcome | None = None

    @classmethod
    def of(cls, rows: Sequence[ItemResult]) -> OutcomeCounts:
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return cls(n_items=len(rows), correct_before=sum(r.before.correct for r in rows),
                   correct_after=sum(r.after.correct for r in rows), counts=counts,
                   target=next((r.outcome for r in rows if r.kind == "target"), None))


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


def next_token_logits(lm: LoadedModel, batch: Sequence[Sequence[int]]) -> Any:
    """Last-position logits for each sequence, batched with left padding. Returns [B, V]
    float32 on CPU."""
    import torch

    if not batch:
        return torch.empty(0, 0)
    return forward_logits(lm, batch, 1)[:, -1, :]


def rank_of(logits: Any, token_id: int) -> int:
    """1-based rank of a token in a logit vector (ties rank in the token's favour)."""
    return int((logits > logits[token_id]).sum().item()) + 1


def top_tokens(lm: LoadedModel, logits: Any, k: int) -> list[TokenProb]:
    probs = logits.softmax(-1)
    values, indices = probs.topk(k)
    return [TokenProb(rank=i + 1, token_id=int(t), text=token_text(lm.tokenizer, int(t)),
                      prob=float(p), logit=float(logits[int(t)]))
            for i, (p, t) in enumerate(zip(values.tolist(), indices.tolist(), strict=True))]


def answer_probs(logits: Any, answers: Sequence[AnswerToken],
                 wholes: Sequence[WholeAnswer | None] | None = None) -> list[AnswerProb]:
    """Each answer's first-token probability, logit and rank in one logit vector."""
    probs = logits.softmax(-1)
    wholes = wholes if wholes is not None else [None] * len(answers)
    return [AnswerProb(answer=a, prob=float(probs[a.token_id]), logit=float(logits[a.token_id]),
                       rank=rank_of(logits, a.token_id), whole=w)
            for a, w in zip(answers, wholes, strict=True)]


def score_ids(lm: LoadedModel, prompts: Sequence[Sequence[int]],
              answers: Sequence[tuple[AnswerToken, AnswerToken | None]], top_k: int = 1,
              whole: bool = True) -> list[Scored]:
    """Score already formatted prompts (token ids), each with its (expected, wrong)."""
    if top_k < 1:
        raise InputError("top_k must be at least 1", field="top_k")
    wholes: list[WholeAnswer | None] = [None] * (2 * len(prompts))
    if whole:
        pairs = [(ids, a.token_ids or [a.token_id]) for ids, (a, _) in zip(prompts, answers,
                                                                           strict=True)]
        wrong_at = [i for i, (_, b) in enumerate(answers) if b is not None]
        pairs += [(prompts[i], answers[i][1].token_ids or [answers[i][1].token_id])  # type: ignore[union-attr]
                  for i in wrong_at]
        found = whole_answer_scores(lm, pairs)
        wholes[:len(prompts)] = found[:len(prompts)]
        for i, w in zip(wrong_at, found[len(prompts):], strict=True):
            wholes[len(prompts) + i] = w
    out: list[Scored] = []
    for start in range(0, len(prompts), SCORE_BATCH):
        logits = next_token_logits(lm, prompts[start:start + SCORE_BATCH])
        for offset, row in enumerate(logits):
            i = start + offset
            a, b = answers[i]
            scored = answer_probs(row, [a] + ([b] if b is not None else []),
                                  [wholes[i]] + ([wholes[len(prompts) + i]] if b else []))
            out.append(Scored(expected=scored[0], wrong=scored[1] if b else None,
                              top=top_tokens(lm, row, top_k)))
    return out


def resolve_item(lm: LoadedModel, item: EvalItem, field: str
                 ) -> tuple[AnswerToken, AnswerToken | None]:
    """The item's answers as tokens; expected and wrong must differ in their first token."""
    exp = resolve_answer(lm.tokenizer, item.expected, field=f"{field}.expected")
    wrong = (resolve_answer(lm.tokenizer, item.wrong, field=f"{field}.wrong")
             if item.wrong and item.wrong.strip() else None)
    if wrong is not None and wrong.token_id == exp.token_id:
        raise InputError(f"{field}: expected and wrong are the same token "
                         f"{exp.token_text!r}; m would be 0", field=f"{field}.wrong")
    return exp, wrong


def score_items(lm: LoadedModel, items: Sequence[EvalItem], style: PromptSpec | None = None,
                max_tokens: int | None = None, top_k: int = 1,
                field: str = "eval_set", whole: bool = True) -> list[Scored]:
    """Score each item on one model, its prompt formatted like ``style`` (raw when None).
    A LoRA overlay is switched on (or off for its base) first."""
    from analysis.models import activate

    activate(lm)
    style = style or PromptSpec(prompt="-")
    prompts, answers = [], []
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        try:
            spec = style.model_copy(update={"prompt": item.prompt})
            prompts.append(format_prompt(lm.tokenizer, spec, max_tokens).input_ids)
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}", field=f"{where}.prompt") from exc
        answers.append(resolve_item(lm, item, where))
    return score_ids(lm, prompts, answers, top_k, whole)


def notes_of(lm: LoadedModel, item: EvalItem) -> str | None:
    exp, wrong = resolve_item(lm, item, "item")
    notes = [a.note for a in (exp, wrong) if a is not None and a.note]
    return "; ".join(notes) or None


def evaluate_items(before: LoadedModel, after: LoadedModel, items: Sequence[EvalItem], *,
                   style: PromptSpec | None = None, max_tokens: int | None = None,
                   top_k: int = 1, field: str = "eval_set") -> list[ItemResult]:
    """Every item on the base (``before``) and the variant (``after``), with its outcome.
    A LoRA variant is an overlay on its base and shares its modules: each side is
    switched on before it is scored."""
    if before is after:
        raise InputError("before and after are the same model; pass the base model as "
                         "'before' (a LoRA variant is an overlay on it)", field="before")
    if not items:
        return []
    b = score_items(before, items, style, max_tokens, top_k, field)
    a = score_items(after, items, style, max_tokens, top_k, field)
    return [ItemResult(index=i, kind=item.kind, prompt=item.prompt, expected=item.expected,
                       wrong=item.wrong, note=notes_of(after, item), before=sb, after=sa)
            for i, (item, sb, sa) in enumerate(zip(items, b, a, strict=True))]
