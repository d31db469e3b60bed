"""Read an exemplar index, complete or still growing (it reads the snapshot meta.json
names at the moment it is opened; open again to see a newer one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.attribution.logit_lens import check_neuron
from analysis.errors import NotFound
from analysis.neurons import always_on_counts, store
from analysis.neurons.schema import Exemplar, IndexMeta, NeuronStats

LEFT_TOKENS = 12
RIGHT_TOKENS = 4
HISTOGRAM_BINS = 40


def quantile_levels(n: int, sample_size: int) -> list[float]:
    """``n`` levels from the median up to the sample's top, spaced geometrically towards
    the tail (1 - 0.5, ..., 1 - 1/S): typical firing, then ever rarer."""
    if n <= 0:
        return []
    if n == 1:
        return [0.5]
    ratio = (2.0 / max(sample_size, 4)) ** (1.0 / (n - 1))
    return [round(1.0 - 0.5 * ratio**i, 4) for i in range(n)]


class NeuronIndex:
    def __init__(self, path: Path, meta: IndexMeta,
                 arrays: dict[str, np.ndarray] | None, tokens: np.ndarray,
                 offsets: np.ndarray, vocab: dict[str, str], sample: np.ndarray) -> None:
        self.path = path
        self.meta = meta
        self._a = arrays
        self.tokens = tokens
        self.offsets = offsets
        self._vocab = vocab
        self.sample_positions = sample

    @classmethod
    def open(cls, path: Path) -> NeuronIndex:
        path = Path(path)
        meta_path = path / store.META
        if not meta_path.is_file():
            raise NotFound(f"no neuron index at {path}", field="index")
        meta = IndexMeta.model_validate_json(meta_path.read_text())
        arrays = store.load_snapshot(path, meta.snapshot) if meta.snapshot else None
        return cls(path, meta, arrays,
                   np.load(path / "tokens.npy", mmap_mode="r"),
                   np.load(path / "offsets.npy"),
                   json.loads((path / "vocab.json").read_text()),
                   np.load(path / "sample.npy"))

    # --- contexts --------------------------------------------------------------------
    def token_text(self, token_id: int) -> str:
        return self._vocab.get(str(int(token_id)), f"<{int(token_id)}>")

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.token_text(i) for i in ids)

    def text_of(self, position: int) -> int:
        return int(np.searchsorted(self.offsets, position, side="right") - 1)

    def context(self, position: int, activation: float, *, left: int = LEFT_TOKENS,
                right: int = RIGHT_TOKENS, quantile: float | None = None) -> Exemplar:
        text = self.text_of(position)
        start, end = int(self.offsets[text]), int(self.offsets[text + 1])
        return Exemplar(
            left=self.decode(self.tokens[max(start, position - left):position]),
            token=self.token_text(self.tokens[position]),
            right=self.decode(self.tokens[position + 1:min(end, position + 1 + right)]),
            activation=float(activation), text_id=text, quantile=quantile)

    # --- per neuron ------------------------------------------------------------------
    def _check(self, layer: int, neuron: int) -> None:
        check_neuron(self.meta.n_layers, self.meta.n_neurons, layer, neuron)

    def exemplars(self, layer: int, neuron: int, k: int | None = None, *,
                  negative: bool = False) -> list[Exemplar]:
        """Top-activating contexts, highest first (``negative``: most negative first)."""
        self._check(layer, neuron)
        if self._a is None:
            return []
        vals = self._a["bot_val" if negative else "top_val"][layer, neuron]
        idx = self._a["bot_idx" if negative else "top_idx"][layer, neuron]
        out = [self.context(int(i), float(v)) for v, i in zip(vals, idx, strict=True)
               if i >= 0 and np.isfinite(v)]
        return out[:k] if k is not None else out

    def _sample(self, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, positions) of the position sample seen so far."""
        if self._a is None:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        values = np.asarray(self._a["sample_act"][layer, neuron], dtype=np.float32)
        seen = np.isfinite(values)
        return values[seen], self.sample_positions[seen]

    def quantile_samples(self, layer: int, neuron: int) -> list[Exemplar]:
        """Typical firing: one sample context at each of a few quantiles of the neuron's
        activations over the shared uniform position sample, lowest quantile first."""
        self._check(layer, neuron)
        values, positions = self._sample(layer, neuron)
        if not len(values):
            return []
        order = np.argsort(values, kind="stable")
        levels = quantile_levels(self.meta.settings.n_quantile_samples, len(values))
        out = []
        for q in levels:
            j = order[round(q * (len(values) - 1))]
            out.append(self.context(int(positions[j]), float(values[j]), quantile=q))
        return out

    def histogram(self, layer: int, neuron: int,
                  bins: int = HISTOGRAM_BINS) -> tuple[list[float], list[int]]:
        """Bin edges and counts of the neuron's activations over the position sample."""
        self._check(layer, neuron)
        values, _ = self._sample(layer, neuron)
        if not len(values):
            return [], []
        counts, edges = np.histogram(values, bins=bins)
        return edges.tolist(), counts.tolist()

    def stats(self, layer: int, neuron: int) -> NeuronStats:
        self._check(layer, neuron)
        m, a = self.meta, self._a
        count = m.tokens_done
        if a is None or count == 0:
            return NeuronStats(layer=layer, neuron=neuron, count=0, mean=0.0, std=0.0,
                               max=0.0, min=0.0, frac_active=0.0, frac_large=0.0,
                               threshold=0.0, first_pos_mean=0.0, always_on=False)
        mean = float(a["sum"][layer, neuron]) / count
        var = max(float(a["sumsq"][layer, neuron]) / count - mean * mean, 0.0)
        scale = m.thresholds[layer]
        first_mean = float(a["first_sum"][layer, neuron]) / max(m.texts_done, 1)
        frac_large = int(a["n_large"][layer, neuron]) / count
        dense, first = always_on_counts.flags(np.array(a["n_large"][layer, neuron]),
                                       np.array(a["first_sum"][layer, neuron]),
                                       np.array(scale), count, m.texts_done)
        return NeuronStats(
            layer=layer, neuron=neuron, count=count, mean=mean, std=var**0.5,
            max=float(a["max"][layer, neuron]), min=float(a["min"][layer, neuron]),
            frac_active=int(a["n_pos"][layer, neuron]) / count, threshold=scale,
            frac_large=frac_large, first_pos_mean=first_mean,
            always_on=bool(dense or first),
            always_on_reason=always_on_counts.reason(bool(dense), bool(first), frac_large,
                                              first_mean, scale))

    # --- whole model -----------------------------------------------------------------
    def always_on(self) -> set[tuple[int, int]]:
        if self._a is None:
            return set()
        dense, first = always_on_counts.flags(self._a["n_large"], self._a["first_sum"],
                                       np.asarray(self.meta.thresholds),
                                       self.meta.tokens_done, self.meta.texts_done)
        layers, neurons = np.nonzero(dense | first)
        return {(int(la), int(n)) for la, n in zip(layers, neurons, strict=True)}

    @property
    def arrays(self) -> dict[str, np.ndarray] | None:
        """The current snapshot's arrays (see ``store``), or None before the first."""
        return self._a
