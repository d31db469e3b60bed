"""Stage 7, measured: did the correction fix the target, does it generalise, what did it
break, and can the model still write?

* :func:`evaluate_prompts` scores each evaluation prompt before and after: P(expected),
  P(wrong), ranks, m and the top-1 on each side, and whether the item was fixed or
  broken.
* :func:`degeneration_check` generates greedily from a few prompts and flags empty or
  looping output (seed 002: a minimal LoRA "severely damaged" generation).

Before/after: pass two LoadedModels (the base and the variant). A LoRA variant is an
overlay on its base (``analysis.models.load_lora_variant``) and shares its modules; each
side is activated (``analysis.models.activate``) before it is scored, so one copy of the
base weights serves both sides - the same LoRA path Compare uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from analysis.answers import resolve_answer
from analysis.correction.config import EvalItem
from analysis.errors import InputError, LimitExceeded
from analysis.models import LoadedModel, activate
from analysis.predict import next_token_logits, rank_of
from analysis.prompts import PromptSpec, format_prompt, token_text
from analysis.whole_answer import whole_answer_scores

DEGENERATE_REPETITION = 0.5
MAX_NEW_TOKENS = 256
EVAL_BATCH = 8


# --------------------------------------------------------------------------------------
# Before/after scores
# --------------------------------------------------------------------------------------


class EvalSide(BaseModel):
    p_expected: float
    rank_expected: int
    p_wrong: float | None
    rank_wrong: int | None
    m: float | None = Field(description="logit(expected) - logit(wrong), when wrong is given.")
    top1: str
    top1_prob: float
    correct: bool
    # Whole answers (every token, teacher-forced); None in records from before they existed.
    whole_p_expected: float | None = None
    whole_p_wrong: float | None = None
    whole_m: float | None = Field(
        None, description="log P(whole expected) - log P(whole wrong), when wrong is given.")


class EvalRow(BaseModel):
    index: int
    kind: str
    prompt: str
    expected: str = Field(description="The expected answer's scored (first) token.")
    wrong: str | None = Field(description="The wrong answer's scored token, if any.")
    note: str | None = Field(None, description="Multi-token or missing-space answers.")
    before: EvalSide
    after: EvalSide

    @property
    def fixed(self) -> bool:
        """Wrong before, right after."""
        return self.after.correct and not self.before.correct

    @property
    def broken(self) -> bool:
        """Right before, wrong after (a side effect)."""
        return self.before.correct and not self.after.correct

    @property
    def delta_p_expected(self) -> float:
        return self.after.p_expected - self.before.p_expected


def _score(
    lm: LoadedModel, items: Sequence[EvalItem], style: PromptSpec, max_tokens: int | None
) -> list[tuple[EvalSide, str, str | None, str | None]]:
    """Each item's side scored on `lm`: (side, expected token, wrong token, note)."""
    activate(lm)  # a LoRA overlay on, or off for its base
    resolved = []
    batch: list[list[int]] = []
    for i, item in enumerate(items):
        exp = resolve_answer(lm.tokenizer, item.expected, field=f"eval_set[{i}].expected")
        wrong = (resolve_answer(lm.tokenizer, item.wrong, field=f"eval_set[{i}].wrong")
                 if item.wrong and item.wrong.strip() else None)
        if wrong is not None and wrong.token_id == exp.token_id:
            raise InputError(f"evaluation item {i + 1}: expected and wrong are the same token "
                             f"{exp.token_text!r}", field=f"eval_set[{i}].wrong")
        spec = style.model_copy(update={"prompt": item.prompt})
        batch.append(format_prompt(lm.tokenizer, spec, max_tokens).input_ids)
        resolved.append((exp, wrong))
    logits_rows: list[Any] = []
    for start in range(0, len(batch), EVAL_BATCH):
        logits_rows.extend(next_token_logits(lm, batch[start:start + EVAL_BATCH]))
    pairs = [(ids, exp.token_ids) for ids, (exp, _) in zip(batch, resolved, strict=True)]
    wrong_at = [i for i, (_, wrong) in enumerate(resolved) if wrong is not None]
    pairs += [(batch[i], resolved[i][1].token_ids) for i in wrong_at]  # type: ignore[union-attr]
    wholes = whole_answer_scores(lm, pairs, EVAL_BATCH)
    whole_exp = wholes[:len(batch)]
    whole_wrong = dict(zip(wrong_at, wholes[len(batch):], strict=True))
    out = []
    for i, (logits, (exp, wrong)) in enumerate(zip(logits_rows, resolved, strict=True)):
        probs = logits.softmax(-1)
        top = int(logits.argmax())
        rank_e = rank_of(logits, exp.token_id)
        m = None if wrong is None else float(logits[exp.token_id] - logits[wrong.token_id])
        side = EvalSide(
            p_expected=float(probs[exp.token_id]),
            rank_expected=rank_e,
            p_wrong=None if wrong is None else float(probs[wrong.token_id]),
            rank_wrong=None if wrong is None else rank_of(logits, wrong.token_id),
            m=m,
            top1=token_text(lm.tokenizer, top),
            top1_prob=float(probs[top]),
            # With a wrong answer: does the expected one beat it (the seeds' criterion,
            # "Top Answer: Ald" over "Ren")? Without: is it the top-1?
            correct=(m > 0) if m is not None else rank_e == 1,
            whole_p_expected=whole_exp[i].prob,
            whole_p_wrong=whole_wrong[i].prob if i in whole_wrong else None,
            whole_m=(whole_exp[i].logprob - whole_wrong[i].logprob) if i in whole_wrong
            else None,
        )
        notes = [a.note for a in (exp, wrong) if a is not None and a.note]
        out.append((side, exp.token_text, None if wrong is None else wrong.token_text,
                    "; ".join(notes) or None))
    return out


def evaluate_prompts(
    before: LoadedModel,
    after: LoadedModel,
    items: Sequence[EvalItem],
    *,
    style: PromptSpec | None = None,
    max_tokens: int | None = None,
) -> list[EvalRow]:
    """Score every item on both models. Each item's prompt is formatted like `style` (its
    chat template, system prompt and answer prefix; typically the target's); without a
    style, as a raw prompt."""
    if before is after:
        raise InputError("before and after are the same model; pass the base model as "
                         "'before' (a LoRA variant is an overlay on it)", field="before")
    if not items:
        return []
    style = style or PromptSpec(prompt="-")
    scored_before = _score(before, items, style, max_tokens)
    scored_after = _score(after, items, style, max_tokens)
    rows = []
    for i, (item, b, a) in enumerate(zip(items, scored_before, scored_after, strict=True)):
        rows.append(EvalRow(index=i, kind=item.kind, prompt=item.prompt, expected=a[1],
                            wrong=a[2], note=a[3], before=b[0], after=a[0]))
    return rows


# --------------------------------------------------------------------------------------
# Degeneration
# --------------------------------------------------------------------------------------


class GenerationCheck(BaseModel):
    prompt: str
    text: str = Field(description="The greedy continuation (special tokens removed).")
    n_tokens: int
    empty: bool = Field(description="Nothing but whitespace or special tokens came out.")
    repetition: float = Field(description="Mean over n=1..3 of 1 - distinct/total n-grams.")
    degenerate: bool


class DegenerationReport(BaseModel):
    model: str
    max_new_tokens: int
    threshold: float = Field(description="repetition above this (or empty) is degenerate.")
    items: list[GenerationCheck]

    @property
    def n_degenerate(self) -> int:
        return sum(i.degenerate for i in self.items)

    @property
    def any_degenerate(self) -> bool:
        return self.n_degenerate > 0


def repetition_rate(ids: Sequence[int], max_n: int = 3) -> float:
    """Mean over n = 1..max_n of 1 - distinct n-grams / total n-grams of a token sequence.

    0 means every n-gram is new; a loop of one token gives ~1. Over 32 greedy tokens the
    embedded Gemma-3-270M's ordinary prose scored 0.03-0.27 (repeated function words lift
    the unigram term); a 16-token sentence said twice scores 0.48; a two-token loop 0.94.
    Orders with no n-gram (very short outputs) are left out; an output of no tokens scores
    0 and is caught by the empty flag instead.
    """
    rates = []
    for n in range(1, max_n + 1):
        grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def degeneration_check(
    lm: LoadedModel,
    prompts: Sequence[str | PromptSpec],
    max_new_tokens: int = 32,
    *,
    threshold: float = DEGENERATE_REPETITION,
    style: PromptSpec | None = None,
    max_tokens: int | None = None,
) -> DegenerationReport:
    """Greedy continuations of each prompt, flagged when empty or repetitive.

    A string prompt is formatted like `style` (raw when none); a PromptSpec as given.
    `degenerate` = empty, or `repetition_rate` above `threshold` (default 0.5: more than a
    sentence said twice - a shorter loop, or three repeats; see :func:`repetition_rate`).
    Compare the base model's report with the variant's: small base models repeat too.
    """
    import torch

    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise LimitExceeded(f"max_new_tokens must be 1..{MAX_NEW_TOKENS}, got {max_new_tokens}",
                            field="max_new_tokens")
    style = style or PromptSpec(prompt="-")
    activate(lm)
    tok = lm.tokenizer
    special = set(getattr(tok, "all_special_ids", []) or [])
    eos = tok.eos_token_id
    items: list[GenerationCheck] = []
    for prompt in prompts:
        spec = prompt if isinstance(prompt, PromptSpec) else style.model_copy(
            update={"prompt": prompt})
        ids = format_prompt(tok, spec, max_tokens).input_ids
        input_ids = torch.tensor([ids], device=lm.input_device)
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
            )
        new = [int(t) for t in out[0, len(ids):].tolist()]
        if eos is not None and eos in new:  # generation stops there; padding may follow
            new = new[: new.index(eos)]
        text = tok.decode(new, skip_special_tokens=True)
        content = [t for t in new if t not in special]
        empty = not text.strip()
        rep = repetition_rate(content)
        items.append(GenerationCheck(
            prompt=spec.prompt, text=text, n_tokens=len(new), empty=empty,
            repetition=rep, degenerate=empty or rep > threshold,
        ))
    return DegenerationReport(model=lm.name, max_new_tokens=max_new_tokens,
                              threshold=threshold, items=items)
