"""Stage 7, measured: did the correction fix the target, does it generalise, what did it
break, and can the model still write?

* :func:`evaluate_prompts` (the evaluation core's ``evaluate_items``) scores each
  evaluation prompt before and after: P(expected), P(wrong), ranks, m and the top-1 on
  each side, and its outcome (corrected, improved, broken, ... see analysis.evaluation).
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

from pydantic import BaseModel, Field, ValidationError

from analysis.comparison.verdict import Verdict
from analysis.errors import LimitExceeded
from analysis.evaluation import ItemResult, OutcomeCounts, evaluate_items
from analysis.models import LoadedModel, activate
from analysis.prompts import PromptSpec, format_prompt

DEGENERATE_REPETITION = 0.5
MAX_NEW_TOKENS = 256


# Before/after scores live in the one evaluation core (analysis.evaluation); these names
# stay for callers that knew them here.
EvalRow = ItemResult
evaluate_prompts = evaluate_items


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


# --------------------------------------------------------------------------------------
# A job's whole evaluation, as stored on the job and read by its page and Experiments
# --------------------------------------------------------------------------------------


class CircuitVerdictRef(BaseModel):
    """The circuit verdict of a job's variant on its target, computed once after the
    evaluation; the whole comparison is stored as a comparison run (``comparison_id``)."""

    verdict: Verdict | None = None
    reasons: list[str] = Field(default_factory=list)
    comparison_id: str | None = None
    threshold: float | None = None
    nodes_base: int | None = None
    nodes_variant: int | None = None
    warnings: list[str] = Field(default_factory=list)
    error: str | None = Field(None, description="Why there is no verdict, when there is none.")


class JobEvaluation(BaseModel):
    """Before (the base) vs after (the variant): every item by the evaluation core (the
    target first, with its top-10), the outcome counts, the degeneration check on both,
    and the circuit verdict."""

    target_prompt: str | None = Field(None, description="The target, formatted as scored.")
    target_format: str | None = None
    items: list[ItemResult] = Field(default_factory=list)
    summary: OutcomeCounts | None = None
    degeneration_before: DegenerationReport | None = None
    degeneration_after: DegenerationReport | None = None
    circuit: CircuitVerdictRef | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    seconds: float | None = None

    @property
    def target(self) -> ItemResult | None:
        return next((r for r in self.items if r.kind == "target"), None)

    @property
    def degeneration_worse(self) -> bool:
        """Small base models loop too: what matters is whether the correction made it
        worse."""
        b, a = self.degeneration_before, self.degeneration_after
        return b is not None and a is not None and a.n_degenerate > b.n_degenerate

    @classmethod
    def stored(cls, raw: dict[str, Any] | None) -> JobEvaluation | None:
        """A job's stored evaluation, or None when it has none or was written by a
        version before the evaluation core (its page says so)."""
        if not raw:
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError:
            return None
