"""Next-token predictions: top-k and the probabilities of named answers."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from analysis.answers import resolve_answer
from analysis.errors import InputError, LimitExceeded
from analysis.evaluation import (  # the one scorer; re-exported for older imports
    AnswerProb,
    TokenProb,
    answer_probs,
    next_token_logits,
    rank_of,
    top_tokens,
)
from analysis.models import LoadedModel
from analysis.prompts import (
    PROMPT_FORMATS,
    FormattedPrompt,
    PromptSpec,
    format_label,
    format_prompt,
    has_chat_template,
    in_format,
)
from analysis.whole_answer import whole_answer_scores

__all__ = ["AnswerProb", "Limits", "Prediction", "TokenProb", "next_token_logits", "predict",
           "predict_formats", "rank_of", "top_tokens"]


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


class Prediction(BaseModel):
    model: str
    prompt: FormattedPrompt
    top: list[TokenProb]
    answers: list[AnswerProb]
    format: str = Field("", description="The prompt format's name (see PROMPT_FORMATS).")


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
    wholes = whole_answer_scores(lm, [(formatted.input_ids, a.token_ids) for a in resolved])
    scored = answer_probs(logits, resolved, wholes)
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
