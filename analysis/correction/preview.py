"""In-context preview: what the training texts do to the target when the model merely
*reads* them, before any training (seconds instead of a fine-tune).

Seed 002 found in-context learning a strong baseline for belief changes, and the seeds'
failures (texts that mention the wrong answer) often show up already in context. The
preview scores the target prompt twice:

* **alone** - exactly what ``predict`` scores (same formatting, same tokens);
* **in context** - the texts placed before the prompt. Raw prompt: the texts (each
  stripped of surrounding whitespace) joined by blank lines, a blank line, then the prompt
  and its answer prefix. Chat template: the same block of texts followed by a blank line
  at the start of the *user* turn, before the prompt; system prompt and answer prefix as
  for the prompt alone. Either way the next token is scored at the same place.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from analysis.answers import AnswerToken, resolve_contrast
from analysis.errors import InputError, LimitExceeded
from analysis.models import LoadedModel
from analysis.predict import TokenProb, next_token_logits, rank_of, top_tokens
from analysis.prompts import PromptSpec, format_prompt

DEFAULT_MAX_CONTEXT_TOKENS = 4096
TOP_K = 5


class PreviewSide(BaseModel):
    """The target's next-token scores in one setting (alone or after the texts)."""

    n_tokens: int
    prob_a: float
    prob_b: float
    logit_a: float
    logit_b: float
    m: float = Field(description="logit(A) - logit(B); positive favours the correct answer.")
    rank_a: int
    rank_b: int
    top: list[TokenProb]


class InContextPreview(BaseModel):
    model: str
    answer_a: AnswerToken
    answer_b: AnswerToken
    alone: PreviewSide
    in_context: PreviewSide
    context_text: str = Field(description="The formatted prompt with the texts, as scored.")

    @property
    def delta_m(self) -> float:
        return self.in_context.m - self.alone.m


def context_prompt(target: PromptSpec, texts: Sequence[str]) -> PromptSpec:
    """The target with the texts before its prompt (see the module docstring)."""
    block = "\n\n".join(t.strip() for t in texts if t.strip())
    if not block:
        return target
    return target.model_copy(update={"prompt": f"{block}\n\n{target.prompt}"})


def _side(lm: LoadedModel, ids: list[int], a: AnswerToken, b: AnswerToken) -> PreviewSide:
    logits = next_token_logits(lm, [ids])[0]
    probs = logits.softmax(-1)
    la, lb = float(logits[a.token_id]), float(logits[b.token_id])
    return PreviewSide(
        n_tokens=len(ids),
        prob_a=float(probs[a.token_id]),
        prob_b=float(probs[b.token_id]),
        logit_a=la,
        logit_b=lb,
        m=la - lb,
        rank_a=rank_of(logits, a.token_id),
        rank_b=rank_of(logits, b.token_id),
        top=top_tokens(lm, logits, TOP_K),
    )


def in_context_preview(
    lm: LoadedModel,
    target: PromptSpec,
    answer_a: str,
    answer_b: str,
    texts: Sequence[str],
    *,
    max_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
) -> InContextPreview:
    """P(A), P(B), m, ranks and the top-5 for the target alone and after the texts."""
    if not any(t.strip() for t in texts):
        raise InputError("there are no training texts to preview", field="texts")
    chars = sum(len(t) for t in texts)
    if chars > max_tokens * 16:  # no tokenizer packs 16 characters a token: refuse early
        raise LimitExceeded(
            f"the training texts are {chars} characters, far over the preview's limit of "
            f"{max_tokens} tokens. Preview fewer or shorter texts.", field="texts")
    a, b = resolve_contrast(lm.tokenizer, answer_a, answer_b)
    if b is None:
        raise InputError("the preview needs the wrong answer B as well", field="answer_b")
    alone = format_prompt(lm.tokenizer, target)
    with_texts = format_prompt(lm.tokenizer, context_prompt(target, texts))
    if len(with_texts.input_ids) > max_tokens:
        raise LimitExceeded(
            f"the prompt with the training texts before it is {len(with_texts.input_ids)} "
            f"tokens; the preview's limit is {max_tokens}. Preview fewer or shorter texts.",
            field="texts",
        )
    return InContextPreview(
        model=lm.name,
        answer_a=a,
        answer_b=b,
        alone=_side(lm, alone.input_ids, a, b),
        in_context=_side(lm, with_texts.input_ids, a, b),
        context_text=with_texts.text,
    )
