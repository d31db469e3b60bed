"""Screening (the seeds' Stage 2): find prompts the model gets clearly wrong while the
correct answer is still close (top-1 wrong, correct answer within the top-k).

Small models often put filler first (" the", " called"); the seeds only count a
*clearly* wrong top-1. Whether a top token is filler is decided by asking the model
(``filler_rule="model"``, the default): the token is appended to the prompt and the model's
next top-1 is read. The token is filler - a lead-in - only when that continuation starts
the *expected* answer. Otherwise it is the model's answer, however short: " A" after "The
most common blood group is" is followed by "." and is a clearly wrong answer, and " cell"
after "The powerhouse of the cell is the" is followed by " membrane" - the start of a wrong
answer, not a lead-in to the right one - while " a" after "is called" leading to
" aldosterone" is filler. A fixed list of strings stays as the user's override
(``filler_rule="list"``). Every skipped token - above the top-1, or ranked below it but
not counted in the expected answer's rank - is reported with the reason, and so is the
check of the top-1 that stayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field, field_validator

from analysis.answers import resolve_answer
from analysis.errors import InputError, input_error
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


FillerRule = Literal["model", "list"]
MAX_FILLER_CHECKS = 3  # top tokens the model is asked about per prompt


class ScreenOptions(BaseModel):
    top_k: int = Field(5, description="Correct answer must rank within this many tokens.")
    skip_filler: bool = Field(True, description="Skip filler before judging the top-1.")
    filler_rule: FillerRule = Field(
        "model", description="model: a top token is filler (a lead-in) only when the "
        "model, with it appended, goes on to the expected answer; list: the tokens in "
        "filler_tokens are filler (the user's override).")
    filler_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_FILLER),
                                     description="The list the 'list' rule uses.")
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
    skipped: list[TokenProb] = Field(
        description="Every token skipped as filler, by rank: those above the top-1 and "
        "those below it not counted in the expected answer's rank.")
    skip_reasons: list[str] = Field(default_factory=list,
                                    description="Why each skipped token is filler.")
    top1_reason: str | None = Field(None, description="Why the top-1 is not filler "
                                    "(the model rule's check of it).")
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
    decided_on: str = ("first tokens: the top-1 token (after filler) is not a start of the "
                       "answer, and a token that starts the answer ranks within top-k, "
                       "filler above it not counted")

    @property
    def filler_text(self) -> str:
        """The filler rule in force, said wherever a screening is shown."""
        o = self.options
        if not o.skip_filler:
            return "no token is skipped as filler"
        if o.filler_rule == "list":
            return ("filler = the fixed list (" + ", ".join(repr(t) for t in o.filler_tokens[:8])
                    + ("…" if len(o.filler_tokens) > 8 else "") + ")")
        return ("filler = a top token after which the model goes on to the expected answer "
                "(the model is asked: the token is appended, up to "
                f"{MAX_FILLER_CHECKS} tokens per prompt); a token after which it goes on "
                "to anything else, a wrong candidate included, is its answer")

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
        asked = _ask_model(lm, [formatted[i].input_ids for i in chunk], logits, options)
        for row_logits, i, nexts in zip(logits, chunk, asked, strict=True):
            rows.append(_screen_row(lm, i, items[i], formatted[i].text, row_logits,
                                    options, filler, window, nexts))
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


def _ask_model(lm: LoadedModel, prompts: list[list[int]], logits: Any,
               options: ScreenOptions) -> list[dict[int, TokenProb]]:
    """For each prompt, its top few tokens -> the model's top-1 after that token is
    appended (one batched forward pass for all of them). Empty unless the model rule is
    in force."""
    if not options.skip_filler or options.filler_rule != "model":
        return [{} for _ in prompts]
    asks = [(row, int(t)) for row, row_logits in enumerate(logits)
            for t in row_logits.topk(MAX_FILLER_CHECKS).indices.tolist()]
    out: list[dict[int, TokenProb]] = [{} for _ in prompts]
    for start in range(0, len(asks), options.batch_size):
        chunk = asks[start:start + options.batch_size]
        after = next_token_logits(lm, [prompts[row] + [tok] for row, tok in chunk])
        for (row, tok), row_logits in zip(chunk, after, strict=True):
            out[row][tok] = top_tokens(lm, row_logits, 1)[0]
    return out


def _model_filler(cand: TokenProb, nexts: dict[int, TokenProb], answer: str,
                  candidates: dict[int, TokenProb]) -> tuple[bool | None, str]:
    """The model rule on one top token: (is filler, why); None when it was not asked.
    Only a continuation that starts the expected answer makes a lead-in; one that goes on
    to another candidate is the start of a wrong answer."""
    follow = nexts.get(cand.token_id)
    if follow is None:
        return None, ""
    said = f"{cand.text!r} is followed by {follow.text!r} ({follow.prob:.0%})"
    if _matches(follow.text, answer):
        return True, f"{said}, the expected answer: a lead-in"
    known = candidates.get(follow.token_id)
    where = (f" (a candidate ranked {known.rank} here)" if known is not None
             and known.token_id != cand.token_id else "")
    return False, f"{said}, not the expected answer{where}: an answer"


def _screen_row(
    lm: LoadedModel,
    i: int,
    item: ScreenItem,
    text: str,
    logits: Any,
    options: ScreenOptions,
    filler: set[str],
    window: int,
    nexts: dict[int, TokenProb] | None = None,
) -> ScreenRow:
    answer = resolve_answer(lm.tokenizer, _spaced(text, item.answer),
                            field=f"items[{i}].answer")
    ranked = top_tokens(lm, logits, window)
    candidates = {t.token_id: t for t in ranked}
    verdicts: dict[int, tuple[bool, str]] = {}

    def is_filler(t: TokenProb) -> bool:
        if not options.skip_filler or _matches(t.text, item.answer):
            return False
        if t.token_id not in verdicts:
            if options.filler_rule == "list":
                listed = _norm(t.text) in filler
                verdicts[t.token_id] = (listed, f"{t.text!r} is on the filler list"
                                        if listed else "")
            else:
                found, why = _model_filler(t, nexts or {}, item.answer, candidates)
                verdicts[t.token_id] = (bool(found), why)
        return verdicts[t.token_id][0]

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
    uncounted = [t for t in ranked if t.rank < correct_rank and is_filler(t)]
    effective_rank = correct_rank - len(uncounted)
    # Every skip is listed: filler below the top-1 that the rank leaves out is one too.
    reasons = [verdicts[t.token_id][1] for t in skipped]
    for t in uncounted:
        if t.rank > top1.rank:
            skipped.append(t)
            reasons.append(f"{verdicts[t.token_id][1]} (ranked {t.rank}, below the top-1: "
                           "not counted in the expected answer's rank)")
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
        skip_reasons=reasons,
        top1_reason=verdicts.get(top1.token_id, (False, ""))[1] or None,
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
            raise input_error(exc, prefix=f"item {i}: ", field=f"items[{i}]") from exc
    return items
