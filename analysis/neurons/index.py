"""The neuron exemplar index: what every MLP neuron of a model responds to over a corpus.

A node is the same as in attribution: one neuron's value at the MLP down-projection's
input. ``build_index`` runs the model over a corpus once and keeps, per neuron, its
top-k (and bottom-k) activating contexts, its activation moments and counts, the mean at
the first position, and its activations at a shared uniform sample of token positions
(histogram and quantile samples). ``NeuronIndex`` reads it, also while it grows.

This module is the public face; the parts live beside it: ``schema`` (types),
``build`` (the pass), ``accumulate`` (streaming state), ``store`` (on-disk format),
``reader``, ``always_on``, ``search``, ``describe``.
"""

from __future__ import annotations

from pathlib import Path

from analysis.neurons.build import Cancelled, build_index
from analysis.neurons.reader import NeuronIndex
from analysis.neurons.schema import (
    Exemplar,
    IndexMeta,
    IndexProgress,
    IndexSettings,
    IndexSummary,
    NeuronStats,
    SearchHit,
)

__all__ = [
    "Cancelled",
    "Exemplar",
    "IndexMeta",
    "IndexProgress",
    "IndexSettings",
    "IndexSummary",
    "NeuronIndex",
    "NeuronStats",
    "SearchHit",
    "build_index",
    "default_index_dir",
]


def default_index_dir(data_dir: Path, model: str, corpus_key: str) -> Path:
    """Where an index of (model, corpus) lives by default. A different revision of the
    same model name is refused there (the build key holds the revision)."""
    return Path(data_dir) / "indexes" / model / corpus_key[:16]
