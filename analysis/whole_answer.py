"""Whole-answer scoring: the probability of every token of an answer given the prompt.

First-token scores (the attribution metric, as in the seeds) cannot tell " aldosterone"
from " aldehyde" when both start with " al". The whole-answer score teacher-forces the
answer after the prompt and sums its tokens' log-probabilities:

    log P(answer | prompt) = sum_i log P(answer_i | prompt, answer_<i)

All (prompt, answer) pairs of a call run as left-padded batches, so every sequence ends
in the last column and only the last ``max answer length + 1`` positions' logits are
computed (``logits_to_keep``), whatever the vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

from analysis.models import LoadedModel
from analysis.nnsight_traces import forward_logits

WHOLE_BATCH = 16


class WholeAnswer(BaseModel):
    """P(whole answer | prompt), teacher-forced."""

    logprob: float = Field(description="Sum of the answer's token log-probabilities.")
    prob: float = Field(description="exp(logprob): the probability of the whole answer.")
    n_tokens: int
    token_logprobs: list[float]


def whole_answer_scores(
    lm: LoadedModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int = WHOLE_BATCH,
) -> list[WholeAnswer]:
    """Score each (prompt ids, answer ids) pair; answers must have at least one token."""
    out: list[WholeAnswer] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        longest = max(len(a) for _, a in chunk)
        logits = forward_logits(lm, [list(p) + list(a) for p, a in chunk], longest + 1)
        logp = logits.log_softmax(-1)  # [B, longest + 1, V]
        for row, (_, answer) in enumerate(chunk):
            n = len(answer)
            # Column -1 predicts after the whole answer; the answer's tokens are predicted
            # by the n columns before it.
            cols = range(logp.shape[1] - 1 - n, logp.shape[1] - 1)
            token_lp = [float(logp[row, c, int(t)]) for c, t in zip(cols, answer, strict=True)]
            total = sum(token_lp)
            out.append(WholeAnswer(logprob=total, prob=math.exp(total), n_tokens=n,
                                   token_logprobs=token_lp))
    return out
