"""In-context preview: what the training texts do to the target when the model merely
*reads* them, before any training (seconds instead of a fine-tune).

Seed 002 found in-context learning a strong baseline for belief changes, and the seeds'
failures (texts that mention the wrong answer) often show up already in context. The
preview scores the target prompt twice:

* **alone** - exactly what ``predict`` scores (same formatting, same tokens);
* **in context** - the texts placed before the prompt: all together, each one alone, and
  (when the text check flags some) the unflagged ones together, so a flagged text's
  effect is never hidden in the sum. Raw prompt: the texts (each
  stripped of surrounding whitespace) joined by blank lines, a blank line, then the prompt
  and its answer prefix. Chat template: the same block of texts followed by a blank line
  at the start of the *user* turn, before the prompt; system prompt and answer prefix as
  for the prompt alone. Either way the next token is scored at the same place.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from analysis.answers import AnswerToken, resolve_contrast
from analysis.correction.textcheck import check_texts
from analysis.errors import InputError, LimitExceeded
from analysis.evaluation import Scored, TokenProb, score_ids
from analysis.models import LoadedModel
from analysis.prompts import PromptSpec, format_prompt

DEFAULT_MAX_CONTEXT_TOKENS = 4096
TOP_K = 5


class PreviewSide(BaseModel):
    """The target's next-token scores in one setting (alone, one text, or all texts)."""

    label: str = Field(description="'prompt alone', 'text 2', 'all texts', ...")
    texts: list[int] = Field(default_factory=list, description="1-based texts in context.")
    flagged: list[int] = Field(default_factory=list,
                               description="Which of those texts the text check flags.")
    n_tokens: int
    scores: Scored

    # The table reads these (A = expected, B = wrong), all from the evaluation core.
    @property
    def prob_a(self) -> float:
        return self.scores.expected.prob

    @property
    def prob_b(self) -> float:
        assert self.scores.wrong is not None
        return self.scores.wrong.prob

    @property
    def logit_a(self) -> float:
        return self.scores.expected.logit

    @property
    def logit_b(self) -> float:
        assert self.scores.wrong is not None
        return self.scores.wrong.logit

    @property
    def m(self) -> float:
        assert self.scores.m is not None
        return self.scores.m

    @property
    def rank_a(self) -> int:
        return self.scores.expected.rank

    @property
    def rank_b(self) -> int:
        assert self.scores.wrong is not None
        return self.scores.wrong.rank

    @property
    def top(self) -> list[TokenProb]:
        return self.scores.top


class InContextPreview(BaseModel):
    model: str
    answer_a: AnswerToken
    answer_b: AnswerToken
    alone: PreviewSide
    in_context: PreviewSide = Field(description="All texts together, flagged ones included.")
    per_text: list[PreviewSide] = Field(default_factory=list,
                                        description="Each text alone before the prompt.")
    unflagged: PreviewSide | None = Field(
        None, description="All texts the check does not flag (when some are flagged).")
    flags: dict[int, list[str]] = Field(
        default_factory=dict, description="1-based text -> the text check's raised flags.")
    context_text: str = Field(description="The formatted prompt with the texts, as scored.")

    @property
    def delta_m(self) -> float:
        return self.in_context.m - self.alone.m

    def delta(self, side: PreviewSide) -> float:
        """m with the side's texts minus m alone."""
        return side.m - self.alone.m


def context_prompt(target: PromptSpec, texts: Sequence[str]) -> PromptSpec:
    """The target with the texts before its prompt (see the module docstring)."""
    block = "\n\n".join(t.strip() for t in texts if t.strip())
    if not block:
        return target
    return target.model_copy(update={"prompt": f"{block}\n\n{target.prompt}"})


def in_context_preview(
    lm: LoadedModel,
    target: PromptSpec,
    answer_a: str,
    answer_b: str,
    texts: Sequence[str],
    *,
    topic_words: Sequence[str] = (),
    max_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
) -> InContextPreview:
    """P(A), P(B), m, ranks and the top-5 for the target alone, after all the texts, after
    each text alone, and (when the text check flags some) after the unflagged ones."""
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
    numbered = [(i + 1, t) for i, t in enumerate(texts) if t.strip()]
    findings = check_texts([t for _, t in numbered], wrong_answer=answer_b,
                           correct_answer=answer_a, topic_words=topic_words)
    flags = {n: [name for name in ("mentions_wrong", "mentions_topic", "correct_with_topic")
                 if getattr(f, name)]
             for (n, _), f in zip(numbered, findings, strict=True) if not f.ok}
    settings: list[tuple[str, list[int]]] = [("prompt alone", []),
                                             ("all texts", [n for n, _ in numbered])]
    settings += [(f"text {n}", [n]) for n, _ in numbered] if len(numbered) > 1 else []
    clean = [n for n, _ in numbered if n not in flags]
    if flags and clean:
        settings.append(("unflagged texts", clean))
    by_number = dict(numbered)
    formatted = [format_prompt(lm.tokenizer, context_prompt(target, [by_number[n] for n in ns]))
                 for _, ns in settings]
    for f, (label, _) in zip(formatted, settings, strict=True):
        if len(f.input_ids) > max_tokens:
            raise LimitExceeded(
                f"the prompt with the training texts before it ({label}) is "
                f"{len(f.input_ids)} tokens; the preview's limit is {max_tokens}. Preview "
                "fewer or shorter texts.", field="texts")
    scored = score_ids(lm, [f.input_ids for f in formatted], [(a, b)] * len(formatted),
                       top_k=TOP_K, whole=False)
    sides = [PreviewSide(label=label, texts=ns, flagged=[n for n in ns if n in flags],
                         n_tokens=len(f.input_ids), scores=sc)
             for (label, ns), f, sc in zip(settings, formatted, scored, strict=True)]
    return InContextPreview(
        model=lm.name, answer_a=a, answer_b=b, alone=sides[0], in_context=sides[1],
        per_text=[s for s in sides if s.label.startswith("text ")],
        unflagged=next((s for s in sides if s.label == "unflagged texts"), None),
        flags=flags, context_text=formatted[1].text,
    )
