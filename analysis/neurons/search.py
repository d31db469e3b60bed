"""Find neurons by what their exemplars mention: "kidney" -> neurons whose top contexts
contain the word, ranked.

Each query word is found in the corpus texts case-insensitively as a whole word or an
inflection of its stem (``word_pattern``: "kidney" finds "kidneys", "hormone" finds
"hormonal", but "renal" never finds "adrenal" nor "cell" "cellulose"), which marks the
token positions it covers. A neuron scores,
per word, the share of its top-k exemplars (each weighted by its activation relative to
the best one) whose activating token is part of the word (1) or has the word within
``NEAR_TOKENS`` tokens (``NEAR_WEIGHT``): 1.0 when every strong exemplar is on the word.
Words add up, so a neuron matching
every word of "blood pressure" ranks above one matching a single word. Matching text
rather than token ids finds words the tokenizer splits (" ren" + "in")."""

from __future__ import annotations

import re

import numpy as np

from analysis.neurons.data_description import data_description
from analysis.neurons.reader import NeuronIndex
from analysis.neurons.schema import SearchHit

NEAR_TOKENS = 3
NEAR_WEIGHT = 0.25
MAX_WORDS = 8
# Endings an inflection may add to a query word's stem: plurals, verb forms, adjectives.
_ENDINGS = ("s", "es", "ies", "ed", "ing", "al", "ally", "ic", "y", "ly", "ous", "ar")


def stem(word: str) -> str:
    """The query word without one inflection ending or final e (never shorter than 3)."""
    for ending in ("ies", "es", "s", "e", "y"):
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)]
    return word


def word_pattern(word: str) -> re.Pattern[str]:
    """Whole words that are ``word`` or its stem plus one inflection ending (module
    docstring): the start must be a word boundary, so no match inside another word."""
    root = stem(word)
    endings = "|".join(re.escape(e) for e in sorted({*_ENDINGS, "e", word[len(root):]},
                                                     key=len, reverse=True) if e)
    return re.compile(rf"\b(?:{re.escape(word)}|{re.escape(root)})(?:{endings})?\b")


class _TextCache:
    """Every corpus text decoded once, with each token's character span."""

    def __init__(self, index: NeuronIndex) -> None:
        pieces = [index.token_text(i) for i in np.asarray(index.tokens)]
        lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        self.char_start = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.char_start[1:])
        self.blob = "".join(pieces).lower()
        # Texts are joined end to end; a match must not run across two of them.
        self.text_of = np.repeat(np.arange(len(index.offsets) - 1, dtype=np.int32),
                                 np.diff(index.offsets))
        self.offsets = index.offsets

    def word_hits(self, word: str) -> np.ndarray:
        """Boolean [tokens]: the token positions that a match of ``word`` covers."""
        hits = np.zeros(len(self.char_start) - 1, dtype=bool)
        for m in word_pattern(word).finditer(self.blob):
            first = int(np.searchsorted(self.char_start, m.start(), side="right") - 1)
            last = int(np.searchsorted(self.char_start, m.end() - 1, side="right") - 1)
            if self.text_of[first] == self.text_of[last]:
                hits[first:last + 1] = True
        return hits


def _cache(index: NeuronIndex) -> _TextCache:
    cache = getattr(index, "_text_cache", None)
    if cache is None:
        cache = _TextCache(index)
        index._text_cache = cache  # type: ignore[attr-defined]
    return cache


def search(index: NeuronIndex, query: str, limit: int = 50) -> list[SearchHit]:
    words = [w for w in re.findall(r"\w+", query.lower()) if len(w) >= 2][:MAX_WORDS]
    arrays = index.arrays
    if not words or arrays is None:
        return []
    cache = _cache(index)
    vals = np.asarray(arrays["top_val"], dtype=np.float64)   # [L, N, K]
    idx = np.asarray(arrays["top_idx"], dtype=np.int64)
    valid = (idx >= 0) & np.isfinite(vals)
    safe = np.where(valid, idx, 0)
    best = np.where(valid[..., :1], vals[..., :1], 1.0)
    weight = np.where(valid, np.clip(vals / np.where(best > 0, best, 1.0), 0.0, 1.0), 0.0)
    total = np.maximum(weight.sum(-1), 1e-12)
    text = cache.text_of[safe]
    n_tokens = len(cache.text_of)
    score = np.zeros(vals.shape[:2])
    matched = np.zeros(vals.shape, dtype=bool)
    for word in words:
        hits = cache.word_hits(word)
        if not hits.any():
            continue
        on_token = hits[safe] & valid
        near = np.zeros_like(on_token)
        for d in range(-NEAR_TOKENS, NEAR_TOKENS + 1):
            if d == 0:
                continue
            other = np.clip(safe + d, 0, n_tokens - 1)
            near |= hits[other] & (cache.text_of[other] == text)
        near &= valid & ~on_token
        score += (weight * (on_token + NEAR_WEIGHT * near)).sum(-1) / total
        matched |= on_token | near
    order = np.argsort(-score, axis=None, kind="stable")[:limit]
    out = []
    for flat in order:
        layer, neuron = np.unravel_index(flat, score.shape)
        if score[layer, neuron] <= 0:
            break
        k = int(np.argmax(matched[layer, neuron]))
        example = index.context(int(idx[layer, neuron, k]), float(vals[layer, neuron, k]))
        out.append(SearchHit(layer=int(layer), neuron=int(neuron),
                             score=float(score[layer, neuron]),
                             description=data_description(index, int(layer), int(neuron)),
                             example=example))
    return out
