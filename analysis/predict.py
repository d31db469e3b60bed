"""Next-token predictions: top-k and the probabilities of named answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from analysis.access import forward_logits
from analysis.answers import AnswerToken, resolve_answer
from analysis.errors import InputError, LimitExceeded
from analysis.models import LoadedModel
from analysis.prompts import (
    PROMPT_FORMATS,
    FormattedPrompt,
    PromptSpec,
    format_label,
    format_prompt,
    has_chat_template,
    in_format,
    token_text,
)
from analysis.whole_answer import WholeAnswer, whole_answer_scores


class Limits(BaseModel):
    """Size caps the operator sets; every entry point checks them before touching torch."""

    max_prompt_tokens: int = Field(512, ge=1)
    max_batch_size: int = Field(64, ge=1)
    max_top_k: int = Field(100, ge=1)

    def check_top_k(self, top_k: int) -> None:
        if top_k < 1:
            raise InputError("top_k must be at least 1", field="top_k")
        if top_k > self.max_top_k:
            raise LimitExceeded(
                f"top_k={top_k} is over the limit (max_top_k={self.max_top_k})", field="top_k"
            )

    def check_batch(self, n: int, field: str = "items") -> None:
        if n > self.max_batch_size:
            raise LimitExceeded(
                f"{n} prompts is over the limit (max_batch_size={self.max_batch_size}); "
                "split the list",
                field=field,
            )


class TokenProb(BaseModel):
    rank: int
    token_id: int
    text: str
    prob: float
    logit: float


class AnswerProb(BaseModel):
    answer: AnswerToken
    prob: float = Field(description="First-token probability (the attribution metric's).")
    logit: float
    rank: int
    whole: WholeAnswer | None = Field(
        None, description="Probability of the whole answer, teacher-forced.")


class Prediction(BaseModel):
    model: str
    prompt: FormattedPrompt
    top: list[TokenProb]
    answers: list[AnswerProb]
    format: str = Field("", description="The prompt format's name (see PROMPT_FORMATS).")


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
    return [
        TokenProb(
            rank=i + 1,
            token_id=int(t),
            text=token_text(lm.tokenizer, int(t)),
            prob=float(p),
            logit=float(logits[int(t)]),
        )
        for i, (p, t) in enumerate(zip(values.tolist(), indices.tolist(), strict=True))
    ]


def answer_probs(lm: LoadedModel, logits: Any, answers: Sequence[AnswerToken]) -> list[AnswerProb]:
    probs = logits.softmax(-1)
    return [
        AnswerProb(
            answer=a,
            prob=float(probs[a.token_id]),
            logit=float(logits[a.token_id]),
            rank=rank_of(logits, a.token_id),
        )
        for a in answers
    ]


MAX_ANSWERS = 10


def predict(
    lm: LoadedModel,
    spec: PromptSpec,
    answers: Sequence[str] = (),
    top_k: int = 10,
    limits: Limits | None = None,
) -> Prediction:
    """Top-k next tokens for one prompt, plus the probabilities of named answers."""
    limits = limits or Limits()
    limits.check_top_k(top_k)
    if len(answers) > MAX_ANSWERS:
        raise LimitExceeded(f"at most {MAX_ANSWERS} answers per prediction", field="answers")
    resolved = [resolve_answer(lm.tokenizer, a, field=f"answers[{i}]")
                for i, a in enumerate(answers)]
    formatted = format_prompt(lm.tokenizer, spec, limits.max_prompt_tokens)
    logits = next_token_logits(lm, [formatted.input_ids])[0]
    scored = answer_probs(lm, logits, resolved)
    wholes = whole_answer_scores(lm, [(formatted.input_ids, a.token_ids) for a in resolved])
    for a, whole in zip(scored, wholes, strict=True):
        a.whole = whole
    return Prediction(
        model=lm.name,
        prompt=formatted,
        top=top_tokens(lm, logits, top_k),
        answers=scored,
        format=format_label(spec),
    )


def predict_formats(
    lm: LoadedModel,
    spec: PromptSpec,
    answers: Sequence[str] = (),
    top_k: int = 10,
    limits: Limits | None = None,
) -> list[Prediction]:
    """The prompt in each named format, side by side (the chat format only where the model
    has a template), so a format artefact is not read as the model's knowledge."""
    return [
        predict(lm, in_format(spec, name), answers, top_k, limits)
        for name, fmt in PROMPT_FORMATS.items()
        if not fmt.settings["chat_template"] or has_chat_template(lm.tokenizer)
    ]
