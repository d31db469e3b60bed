"""Screening (the seeds' Stage 2): find prompts the model gets clearly wrong while the
correct answer is still close (top-1 wrong, correct answer within the top-k).

Small base models often put filler first (" the", " called"); the seeds only count a
*clearly* wrong top-1, so the top-1 can be picked after skipping a configurable list of
filler tokens. Every skipped token is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, computed_field, field_validator

from analysis.answers import resolve_answer
from analysis.errors import InputError
from analysis.models import LoadedModel
from analysis.predict import Limits, TokenProb, next_token_logits, rank_of, top_tokens
from analysis.prompts import MAX_PROMPT_CHARS, PromptSpec, format_label, format_prompt, token_text
from analysis.whole_answer import whole_answer_scores

DEFAULT_FILLER = [
    "the", "a", "an", "called", "known", "also", "not", "one", "that", "this", "its",
    "their", "usually", "typically", "often", "mainly", "primarily", "most", "in", "of",
    "to", "and", "which", "made", "produced", "by", "as", "',", ",", ".", ":", "",
]


class ScreenItem(BaseModel):
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    answer: str = Field(max_length=200, description="The correct answer, e.g. 'aldosterone'.")

    @field_validator("prompt", "answer")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class ScreenOptions(BaseModel):
    top_k: int = Field(5, description="Correct answer must rank within this many tokens.")
    skip_filler: bool = True
    filler_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_FILLER))
    chat_template: bool = False
    system_prompt: str | None = None
    answer_prefix: str = ""
    batch_size: int = Field(8, ge=1, le=64)


class ScreenRow(BaseModel):
    index: int
    prompt: str
    answer: str
    answer_token: str
    answer_emitted: str = Field("", description="The whole answer as the model would emit "
                                "it after the prompt (with its leading space).")
    answer_note: str | None
    top1: TokenProb
    skipped: list[TokenProb]
    top: list[TokenProb]
    correct_rank: int
    rank_excluding_filler: int
    correct_prob: float = Field(description="First-token probability of the correct answer.")
    correct_whole_prob: float | None = Field(
        None, description="Probability of the whole correct answer, teacher-forced.")
    correct_n_tokens: int = 1
    wrong: bool
    target: bool


class ScreenResult(BaseModel):
    model: str
    options: ScreenOptions
    rows: list[ScreenRow]
    format: str = ""
    # Said on every page that shows a screening: which score the target rule reads.
    decided_on: str = ("first tokens: the top-1 token is not a start of the answer, and a "
                       "token that starts the answer ranks within top-k")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_targets(self) -> int:
        return sum(r.target for r in self.rows)

    @property
    def targets(self) -> list[ScreenRow]:
        return [r for r in self.rows if r.target]


def _norm(text: str) -> str:
    return text.strip().lower()


def _matches(token: str, answer: str) -> bool:
    """A token "is" the answer when it is the answer's start (" Ald" for aldosterone)."""
    t, a = _norm(token), _norm(answer)
    return bool(t) and (a == t or (len(t) >= 2 and a.startswith(t)))


def screen(
    lm: LoadedModel,
    items: Sequence[ScreenItem],
    options: ScreenOptions | None = None,
    limits: Limits | None = None,
) -> ScreenResult:
    options = options or ScreenOptions()
    limits = limits or Limits()
    if not items:
        raise InputError("the prompt list is empty", field="items")
    limits.check_batch(len(items))
    limits.check_top_k(options.top_k)
    filler = {_norm(f) for f in options.filler_tokens}
    # Look further than top_k so skipping filler still leaves a real top-1 to report.
    window = min(max(options.top_k + len(filler) + 5, 20), 200)

    formatted = []
    for i, item in enumerate(items):
        spec = PromptSpec(prompt=item.prompt, chat_template=options.chat_template,
                          system_prompt=options.system_prompt,
                          answer_prefix=options.answer_prefix)
        try:
            formatted.append(format_prompt(lm.tokenizer, spec, limits.max_prompt_tokens))
        except InputError as exc:
            raise InputError(f"item {i}: {exc.message}", field=f"items[{i}].prompt") from exc

    rows: list[ScreenRow] = []
    for start in range(0, len(items), options.batch_size):
        chunk = range(start, min(start + options.batch_size, len(items)))
        logits = next_token_logits(lm, [formatted[i].input_ids for i in chunk])
        for row_logits, i in zip(logits, chunk, strict=True):
            rows.append(_screen_row(lm, i, items[i], formatted[i].text, row_logits,
                                    options, filler, window))
    answers = [resolve_answer(lm.tokenizer, _spaced(formatted[i].text, item.answer))
               for i, item in enumerate(items)]
    wholes = whole_answer_scores(
        lm, [(f.input_ids, a.token_ids) for f, a in zip(formatted, answers, strict=True)])
    for row, whole in zip(rows, wholes, strict=True):
        row.correct_whole_prob, row.correct_n_tokens = whole.prob, whole.n_tokens
    return ScreenResult(model=lm.name, options=options, rows=rows,
                        format=format_label(PromptSpec(
                            prompt="-", chat_template=options.chat_template,
                            system_prompt=options.system_prompt,
                            answer_prefix=options.answer_prefix)))


def _spaced(text: str, answer: str) -> str:
    """The answer as the model would emit it after the formatted text."""
    return answer if (text[-1:].isspace() or answer[:1].isspace()) else " " + answer


def _screen_row(
    lm: LoadedModel,
    i: int,
    item: ScreenItem,
    text: str,
    logits: Any,
    options: ScreenOptions,
    filler: set[str],
    window: int,
) -> ScreenRow:
    answer = resolve_answer(lm.tokenizer, _spaced(text, item.answer),
                            field=f"items[{i}].answer")
    ranked = top_tokens(lm, logits, window)

    def is_filler(t: TokenProb) -> bool:
        return options.skip_filler and _norm(t.text) in filler \
            and not _matches(t.text, item.answer)

    skipped: list[TokenProb] = []
    top1 = ranked[0]
    for cand in ranked:
        if not is_filler(cand):
            top1 = cand
            break
        skipped.append(cand)
    # Correct rank: the best-ranked token that spells the answer's start, else its token.
    matching = [t for t in ranked if _matches(t.text, item.answer)]
    if matching:
        correct_rank, correct_prob = matching[0].rank, matching[0].prob
    else:
        correct_rank = rank_of(logits, answer.token_id)
        correct_prob = float(logits.softmax(-1)[answer.token_id])
    # "Within top-k" counts real candidates: filler ranked above the answer is not counted.
    effective_rank = correct_rank - sum(
        1 for t in ranked if t.rank < correct_rank and is_filler(t))
    wrong = not _matches(top1.text, item.answer) and top1.token_id != answer.token_id
    return ScreenRow(
        index=i,
        prompt=item.prompt,
        answer=item.answer,
        answer_token=token_text(lm.tokenizer, answer.token_id),
        answer_emitted=answer.answer,
        answer_note=answer.note if answer.multi_token else None,
        top1=top1,
        skipped=skipped,
        top=ranked[: options.top_k + len(skipped)],
        correct_rank=correct_rank,
        rank_excluding_filler=effective_rank,
        correct_prob=correct_prob,
        wrong=wrong,
        target=wrong and effective_rank <= options.top_k,
    )


def parse_screen_json(text: str) -> list[ScreenItem]:
    """The seeds' prompt lists: a JSON list of {"prompt", "answer"} objects, or an object
    holding one under "prompts", "items" or "target_cases". Errors name the item."""
    import json

    from pydantic import ValidationError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         field="items") from exc
    if isinstance(data, dict):
        for key in ("prompts", "items", "target_cases"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            raise InputError('expected a list of {"prompt": ..., "answer": ...} objects '
                             '(or an object with a "prompts" list)', field="items")
    if not isinstance(data, list) or not data:
        raise InputError('expected a non-empty list of {"prompt": ..., "answer": ...}',
                         field="items")
    items = []
    for i, raw in enumerate(data):
        if isinstance(raw, dict) and "answer" not in raw:
            # Stage-1 files sometimes say "correct" or "correct_answer".
            for alt in ("correct_answer", "correct", "expected"):
                if alt in raw:
                    raw = {**raw, "answer": raw[alt]}
                    break
        try:
            items.append(ScreenItem.model_validate(
                {k: raw[k] for k in ("prompt", "answer") if k in raw}
                if isinstance(raw, dict) else raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "item"
            raise InputError(f"item {i}: {loc}: {err['msg']}", field=f"items[{i}]") from exc
    return items
