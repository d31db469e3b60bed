"""Resolving answer strings (" aldosterone", " Ald", "renin") to the token the model emits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from analysis.errors import InputError
from analysis.prompts import token_text

MAX_ANSWER_CHARS = 200


class AnswerToken(BaseModel):
    answer: str
    token_id: int
    token_text: str
    n_tokens: int
    note: str | None = None
    # Every token of the answer, for whole-answer scoring (empty in records stored
    # before whole-answer scoring existed).
    token_ids: list[int] = []

    @property
    def multi_token(self) -> bool:
        return self.n_tokens > 1


def resolve_answer(tokenizer: Any, answer: str, field: str = "answer") -> AnswerToken:
    """The first token of `answer`, with a note when that is not the whole answer."""
    if not answer or not answer.strip():
        raise InputError("the answer is empty; type the word the model should predict",
                         field=field)
    if len(answer) > MAX_ANSWER_CHARS:
        raise InputError(f"the answer is longer than {MAX_ANSWER_CHARS} characters",
                         field=field)
    ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InputError(f"the answer {answer!r} produced no tokens", field=field)
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids[0] == unk:
        raise InputError(
            f"the answer {answer!r} starts with a token this model does not know", field=field
        )
    first = token_text(tokenizer, ids[0])
    notes = []
    if len(ids) > 1:
        rest = "".join(token_text(tokenizer, t) for t in ids[1:])
        notes.append(
            f"{answer!r} is {len(ids)} tokens; first-token scores use {first!r} "
            f"(the rest, {rest!r}, counts only in the whole-answer probability)"
        )
    if not answer[0].isspace():
        notes.append(
            f"no leading space: after a word the model usually predicts ' {answer.strip()}'"
        )
    return AnswerToken(
        answer=answer,
        token_id=int(ids[0]),
        token_text=first,
        n_tokens=len(ids),
        note="; ".join(notes) or None,
        token_ids=[int(t) for t in ids],
    )


def resolve_contrast(
    tokenizer: Any, a: str, b: str | None
) -> tuple[AnswerToken, AnswerToken | None]:
    """Answers A and B for a contrastive metric; they must be different tokens."""
    ta = resolve_answer(tokenizer, a, field="answer_a")
    if b is None or not b.strip():
        return ta, None
    tb = resolve_answer(tokenizer, b, field="answer_b")
    if ta.token_id == tb.token_id:
        raise InputError(
            f"answers A and B are the same token {ta.token_text!r}; logit(A) - logit(B) "
            "would be 0. Pick two different answers.",
            field="answer_b",
        )
    return ta, tb
