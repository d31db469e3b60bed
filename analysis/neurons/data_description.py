"""A data-only description of a neuron: which tokens and token pairs dominate its top
activating contexts, with counts, e.g. ``'" blood" ×7, " pressure" ×4 · "blood pressure"
×5'``. No model, no explainer: a reader can check every count against the exemplars."""

from __future__ import annotations

from collections import Counter

import numpy as np

from analysis.neurons.reader import NeuronIndex

MAX_TOKENS = 3
MAX_PAIRS = 2


def _top_positions(index: NeuronIndex, layer: int, neuron: int) -> list[int]:
    arrays = index.arrays
    if arrays is None:
        return []
    vals, idx = arrays["top_val"][layer, neuron], arrays["top_idx"][layer, neuron]
    return [int(i) for v, i in zip(vals, idx, strict=True) if i >= 0 and np.isfinite(v)]


def _listing(counts: Counter[str], most: int, *, strip: bool = False) -> str:
    return ", ".join(f'"{t.strip() if strip else t}" ×{c}'
                     for t, c in counts.most_common(most))


def data_description(index: NeuronIndex, layer: int, neuron: int) -> str:
    index._check(layer, neuron)
    positions = _top_positions(index, layer, neuron)
    if not positions:
        return "no exemplars yet"
    tokens: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    for p in positions:
        tokens[index.token_text(index.tokens[p])] += 1
        text = index.text_of(p)
        start, end = int(index.offsets[text]), int(index.offsets[text + 1])
        if p - 1 >= start:
            pairs[index.decode(index.tokens[p - 1:p + 1]).strip()] += 1
        if p + 1 < end:
            pairs[index.decode(index.tokens[p:p + 2]).strip()] += 1
    repeated = Counter({t: c for t, c in tokens.items() if c >= 2})
    common_pairs = Counter({t: c for t, c in pairs.items() if c >= 2 and t})
    if not repeated:
        return (f"no repeated token in its top {len(positions)} contexts "
                f"(e.g. {_listing(tokens, MAX_TOKENS)})")
    text = _listing(repeated, MAX_TOKENS)
    if common_pairs:
        text += " · " + _listing(common_pairs, MAX_PAIRS)
    return text
