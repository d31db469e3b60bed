"""The typed objects of a neuron exemplar index: its settings, progress, summary and what a
reader returns (exemplars, statistics, search hits). No compute here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, computed_field

from analysis.neuron_ref import neuron_name


class IndexSettings(BaseModel):
    """How an index is built. Every field that changes the stored numbers is part of the
    build key: re-running with the same settings on the same directory resumes, other
    settings are refused there."""

    top_k: int = Field(20, ge=1, le=200, description="Top-activating contexts kept per "
                       "neuron (and as many most-negative ones).")
    n_quantile_samples: int = Field(6, ge=0, le=20, description="Typical-firing contexts "
                                    "shown per neuron, at evenly spread upper quantiles.")
    sample_size: int = Field(512, ge=16, le=16384, description="Token positions drawn "
                             "uniformly at random from the corpus (one sample shared by "
                             "every neuron) whose activations give the histogram and the "
                             "quantile samples.")
    max_len: int = Field(64, ge=2, le=4096, description="Tokens per text; longer texts "
                         "are cut at the end.")
    batch_tokens: int = Field(4096, ge=64, le=1_000_000, description="Padded tokens per "
                              "forward (rows x longest row of the batch).")
    chunk_texts: int = Field(4096, ge=1, description="Texts sorted by length together: "
                             "batches are built within a chunk, chunks run in corpus "
                             "order, so a growing index has seen the corpus evenly.")
    snapshot_tokens: int = Field(50_000, ge=1, description="Tokens between two "
                                 "readable snapshots (and resume points); the first comes "
                                 "after a fifth of it, the next ones double their spacing "
                                 "up to it.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Dtype of the indexing forward. auto: bfloat16 on a GPU or a "
        "CPU with native bf16 (AVX512-BF16/AMX), where it is faster and the exemplar "
        "rankings agree with float32 (benchmarks/bench_index.py measures both); float32 "
        "elsewhere.")
    seed: int = Field(0, description="Seed of the position sample.")

    def resolved(self, device: str) -> IndexSettings:
        """These settings with ``auto`` replaced by the dtype this machine runs."""
        if self.dtype != "auto":
            return self
        import torch

        native = device.startswith("cuda") or torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return self.model_copy(update={"dtype": "bfloat16" if native else "float32"})

    def build_key_fields(self) -> dict[str, object]:
        """The settings that change stored numbers (not the snapshot cadence)."""
        return self.model_dump(exclude={"snapshot_tokens"})


class IndexProgress(BaseModel):
    tokens_done: int
    tokens_total: int
    tokens_per_s: float
    eta_s: float | None


class IndexSummary(BaseModel):
    path: str
    model: str
    revision: str
    corpus_name: str
    corpus_key: str
    n_texts: int
    tokens_done: int
    tokens_total: int
    complete: bool
    seconds: float = Field(description="Time spent by this call.")
    tokens_per_s: float = Field(description="Tokens indexed per second by this call.")
    size_bytes: int


class IndexMeta(BaseModel):
    """meta.json: what an index holds and how far it got."""

    format: int
    model: str
    revision: str
    corpus_name: str
    corpus_key: str
    build_key: str
    settings: IndexSettings
    n_layers: int
    n_neurons: int
    n_texts: int
    tokens_done: int
    tokens_total: int
    texts_done: int
    batches_done: int
    complete: bool
    snapshot: str | None = Field(None, description="Directory of the current snapshot.")
    thresholds: list[float] = Field(default_factory=list, description="Per layer: the "
                                    "activation scale (RMS over non-first positions of "
                                    "the first batch) that 'active' is measured against.")
    size_bytes: int = 0


class Exemplar(BaseModel):
    """One context: ``left + token + right`` is a stretch of one corpus text."""

    left: str
    token: str
    right: str
    activation: float
    text_id: int
    quantile: float | None = None


class NeuronStats(BaseModel):
    layer: int
    neuron: int
    count: int = Field(description="Tokens seen.")
    mean: float
    std: float
    max: float
    min: float
    frac_active: float = Field(description="Fraction of tokens with activation > threshold.")
    threshold: float = Field(description="The layer's activation scale used for "
                             "frac_active and the always-on rule.")
    frac_large: float = Field(description="Fraction of tokens with |activation| > threshold.")
    first_pos_mean: float = Field(description="Mean activation at the first position.")
    always_on: bool
    always_on_reason: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        return neuron_name(self.layer, self.neuron)


class SearchHit(BaseModel):
    layer: int
    neuron: int
    score: float
    description: str
    example: Exemplar

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        return neuron_name(self.layer, self.neuron)
