"""Build an exemplar index: one pass of the model over a corpus, every MLP neuron's
activations folded into streaming statistics (``accumulate.IndexState``).

Speed, measured by ``benchmarks/bench_index.py`` against the bare forward:

* no unembedding and no final layers: the forward stops inside the last layer, right
  after its down-projection input (the node) is read;
* texts are sorted by length within chunks of ``chunk_texts`` and batched up to
  ``batch_tokens`` padded tokens, so little compute goes to padding; padding is on the
  right and the model is causal, so real tokens never attend to it and no attention mask
  is needed (the fused causal kernel runs);
* ``bfloat16`` on CPUs with AVX512-BF16/AMX and on GPUs (``dtype="auto"``);
* nodes are read by plain forward pre-hooks on each down projection rather than an
  nnsight trace: each hook folds its layer's ``[tokens, neurons]`` block into the state
  and drops it before the next layer runs, so memory holds one layer's activations at a
  time, and the hot loop pays no tracing cost per batch.

Resumable and cancellable: the batches are a deterministic function of the token table
and settings, and each snapshot records how many batches are folded in, so a re-run on
the same directory continues at the next batch and ends with the numbers of one
uninterrupted build. ``should_stop`` is polled after every batch; a stop writes a
snapshot and raises :class:`Cancelled`.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.attribution.adapters import get_adapter
from analysis.errors import InputError
from analysis.models import LoadedModel, activate
from analysis.neurons import store
from analysis.neurons.accumulate import IndexState
from analysis.neurons.corpus import Corpus
from analysis.neurons.schema import IndexMeta, IndexProgress, IndexSettings, IndexSummary


class Cancelled(Exception):
    """``should_stop`` turned true: a consistent snapshot was written; re-run to resume."""

    def __init__(self, summary: IndexSummary) -> None:
        super().__init__(f"indexing stopped at {summary.tokens_done:,} of "
                         f"{summary.tokens_total:,} tokens; run it again to resume")
        self.summary = summary


class _StopForward(Exception):
    """Raised by the last layer's hook: nothing after its node is needed."""


def build_key(lm: LoadedModel, corpus: Corpus, settings: IndexSettings) -> str:
    blob = json.dumps([store.FORMAT, lm.name, lm.revision, corpus.key,
                       settings.build_key_fields()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- the token table and the batches ----------------------------------------------------


def tokenize(lm: LoadedModel, corpus: Corpus, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32, offsets int64): texts with the tokenizer's own special tokens (a
    BOS where the model has one, as prompts get), cut at ``max_len``."""
    lengths: list[int] = []
    chunks: list[np.ndarray] = []
    for start in range(0, len(corpus.texts), 2048):
        enc = lm.tokenizer(corpus.texts[start:start + 2048], truncation=True,
                           max_length=max_len)["input_ids"]
        for ids in enc:
            ids = ids or [int(lm.tokenizer.eos_token_id or 0)]
            lengths.append(len(ids))
            chunks.append(np.asarray(ids, dtype=np.int32))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise InputError(f"the corpus has {offsets[-1]:,} tokens, more than an index holds "
                         "(2^31); use a smaller corpus", field="corpus")
    return np.concatenate(chunks), offsets


def plan_batches(offsets: np.ndarray, settings: IndexSettings) -> list[np.ndarray]:
    """The text ids of each batch, in the order they run (deterministic)."""
    lengths = np.diff(offsets)
    batches: list[np.ndarray] = []
    for start in range(0, len(lengths), settings.chunk_texts):
        ids = np.arange(start, min(start + settings.chunk_texts, len(lengths)))
        ids = ids[np.argsort(lengths[ids], kind="stable")]
        first = 0
        for j in range(1, len(ids) + 1):
            if j == len(ids) or (j - first + 1) * int(lengths[ids[j]]) > settings.batch_tokens:
                batches.append(ids[first:j])
                first = j
    return batches


def vocabulary(lm: LoadedModel, tokens: np.ndarray) -> dict[str, str]:
    ids = np.unique(tokens).tolist()
    texts = lm.tokenizer.batch_decode([[i] for i in ids])
    return {str(i): t for i, t in zip(ids, texts, strict=True)}


# --- the model pass ---------------------------------------------------------------------


@contextlib.contextmanager
def _indexing_model(lm: LoadedModel, dtype: str) -> Iterator[torch.nn.Module]:
    """The model to run: the resident one, or a copy in the indexing dtype (never changes
    the resident model; a LoRA variant keeps its own dtype)."""
    want = getattr(torch, dtype)
    model = lm.model
    if model.dtype != want and lm.overlay is None:
        model = copy.deepcopy(model).to(want)
    try:
        yield model
    finally:
        del model


class _Batch:
    """One batch's inputs and where its real tokens sit."""

    def __init__(self, text_ids: np.ndarray, tokens: np.ndarray, offsets: np.ndarray,
                 sample_pos: np.ndarray, pad_id: int) -> None:
        starts, ends = offsets[text_ids], offsets[text_ids + 1]
        lengths = ends - starts
        width = int(lengths.max())
        ids = np.full((len(text_ids), width), pad_id, dtype=np.int64)
        cols = np.arange(width)
        mask = cols[None, :] < lengths[:, None]
        ids[mask] = np.concatenate([tokens[s:e] for s, e in zip(starts, ends, strict=True)])
        positions = (starts[:, None] + cols[None, :])[mask]  # global, row-major
        self.input_ids = torch.from_numpy(ids)
        self.flat = torch.from_numpy(np.flatnonzero(mask.ravel()))
        self.positions = torch.from_numpy(positions)
        self.first_rows = torch.from_numpy(np.flatnonzero(np.broadcast_to(
            cols[None, :] == 0, mask.shape)[mask]))
        slots = np.minimum(np.searchsorted(sample_pos, positions), max(len(sample_pos) - 1, 0))
        hit = (sample_pos[slots] == positions if len(sample_pos)
               else np.zeros(len(positions), dtype=bool))
        self.sample_rows = torch.from_numpy(np.flatnonzero(hit))
        self.sample_slots = torch.from_numpy(slots[hit])
        self.n_tokens = int(lengths.sum())
        self.n_texts = len(text_ids)


def _hooks(model: torch.nn.Module, state: IndexState,
           current: dict[str, _Batch]) -> list[Any]:
    adapter = get_adapter(model)
    n_layers, n_neurons = adapter.n_layers, adapter.n_neurons
    handles = []
    for layer in range(n_layers):
        def hook(module: torch.nn.Module, args: tuple[Any, ...], layer: int = layer) -> None:
            batch = current["batch"]
            x = args[0].reshape(-1, n_neurons)
            acts = x.index_select(0, batch.flat.to(x.device)).float().cpu()
            state.update(layer, acts, batch.positions, batch.first_rows, batch.sample_rows,
                         batch.sample_slots)
            if layer == n_layers - 1:
                raise _StopForward
        handles.append(adapter.mlp(layer).down.register_forward_pre_hook(hook))
    return handles


# --- the build --------------------------------------------------------------------------


def _read_meta(out_dir: Path) -> IndexMeta | None:
    path = out_dir / store.META
    return IndexMeta.model_validate_json(path.read_text()) if path.is_file() else None


def _summary(out_dir: Path, meta: IndexMeta, seconds: float, tokens: int) -> IndexSummary:
    return IndexSummary(
        path=str(out_dir), model=meta.model, revision=meta.revision,
        corpus_name=meta.corpus_name, corpus_key=meta.corpus_key, n_texts=meta.n_texts,
        tokens_done=meta.tokens_done, tokens_total=meta.tokens_total,
        complete=meta.complete, seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        size_bytes=store.size_on_disk(out_dir))


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    with open(out_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise InputError(f"an index build is already running in {out_dir}",
                             field="out") from exc
        yield


def _start(lm: LoadedModel, corpus: Corpus, out_dir: Path, settings: IndexSettings,
           key: str, n_layers: int, n_neurons: int) -> IndexMeta:
    """Write the token table, the sample and an empty meta.json (meta last: a directory
    without it is not an index yet, and a re-run starts it over)."""
    tokens, offsets = tokenize(lm, corpus, settings.max_len)
    total = int(offsets[-1])
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(total, size=min(settings.sample_size, total),
                                replace=False)).astype(np.int32)
    store.save_array_atomic(out_dir / "tokens.npy", tokens)
    store.save_array_atomic(out_dir / "offsets.npy", offsets)
    store.save_array_atomic(out_dir / "sample.npy", sample)
    store.write_json_atomic(out_dir / "vocab.json", vocabulary(lm, tokens))
    meta = IndexMeta(format=store.FORMAT, model=lm.name, revision=lm.revision,
                     corpus_name=corpus.name, corpus_key=corpus.key, build_key=key,
                     settings=settings, n_layers=n_layers, n_neurons=n_neurons,
                     n_texts=len(corpus.texts), tokens_done=0, tokens_total=total,
                     texts_done=0, batches_done=0, complete=False)
    store.write_json_atomic(out_dir / store.META, meta.model_dump(mode="json"))
    return meta


def build_index(lm: LoadedModel, corpus: Corpus, out_dir: Path, settings: IndexSettings,
                on_progress: Callable[[IndexProgress], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> IndexSummary:
    """Index ``corpus`` into ``out_dir`` (created, or resumed if it holds this build)."""
    lm.require_local("indexing")
    settings = settings.resolved(str(lm.device))
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    activate(lm)
    adapter = get_adapter(lm.model)
    n_layers, n_neurons = adapter.n_layers, adapter.n_neurons
    key = build_key(lm, corpus, settings)
    with _exclusive(out_dir):
        meta = _read_meta(out_dir)
        if meta is not None and meta.build_key != key:
            raise InputError(f"{out_dir} holds an index of another model, corpus or "
                             f"settings ({meta.model}, {meta.corpus_name}); choose another "
                             "output directory or delete it", field="out")
        if meta is None:
            meta = _start(lm, corpus, out_dir, settings, key, n_layers, n_neurons)
        if meta.complete:
            return _summary(out_dir, meta, time.perf_counter() - started, 0)
        return _run(lm, out_dir, settings, meta, started, on_progress, should_stop)


def _run(lm: LoadedModel, out_dir: Path, settings: IndexSettings, meta: IndexMeta,
         started: float, on_progress: Callable[[IndexProgress], None] | None,
         should_stop: Callable[[], bool] | None) -> IndexSummary:
    tokens = np.load(out_dir / "tokens.npy")
    offsets = np.load(out_dir / "offsets.npy")
    sample = np.load(out_dir / "sample.npy")
    batches = plan_batches(offsets, settings)
    state = IndexState(meta.n_layers, meta.n_neurons, settings.top_k, len(sample))
    if meta.snapshot is not None:
        state.load(store.load_snapshot(out_dir, meta.snapshot, mmap=False), meta.thresholds)
    pad_id = int(lm.tokenizer.pad_token_id or 0)
    done_here = 0
    since_snapshot = 0
    current: dict[str, _Batch] = {}

    def snapshot(complete: bool) -> None:
        nonlocal meta, since_snapshot
        name = f"snap-{meta.batches_done:06d}"
        store.write_snapshot(out_dir, name, state.arrays())
        meta = meta.model_copy(update={"snapshot": name, "complete": complete,
                                       "thresholds": state.thresholds})
        store.write_json_atomic(out_dir / store.META, meta.model_dump(mode="json"))
        store.remove_other_snapshots(out_dir, keep=name)
        meta = meta.model_copy(update={"size_bytes": store.size_on_disk(out_dir)})
        store.write_json_atomic(out_dir / store.META, meta.model_dump(mode="json"))
        since_snapshot = 0

    with _indexing_model(lm, settings.dtype) as model:
        handles = _hooks(model, state, current)
        base = get_adapter(model).base()
        device = get_adapter(model).input_device
        try:
            for b in range(meta.batches_done, len(batches)):
                batch = _Batch(batches[b], tokens, offsets, sample, pad_id)
                current["batch"] = batch
                with torch.inference_mode(), contextlib.suppress(_StopForward):
                    base(input_ids=batch.input_ids.to(device), use_cache=False)
                meta = meta.model_copy(update={
                    "tokens_done": meta.tokens_done + batch.n_tokens,
                    "texts_done": meta.texts_done + batch.n_texts,
                    "batches_done": b + 1})
                done_here += batch.n_tokens
                since_snapshot += batch.n_tokens
                if on_progress is not None:
                    elapsed = time.perf_counter() - started
                    rate = done_here / elapsed if elapsed > 0 else 0.0
                    left = meta.tokens_total - meta.tokens_done
                    on_progress(IndexProgress(tokens_done=meta.tokens_done,
                                              tokens_total=meta.tokens_total,
                                              tokens_per_s=rate,
                                              eta_s=left / rate if rate > 0 else None))
                if b + 1 == len(batches):
                    break
                if should_stop is not None and should_stop():
                    snapshot(complete=False)
                    raise Cancelled(_summary(out_dir, meta, time.perf_counter() - started,
                                             done_here))
                # Snapshots come early and then double their spacing up to the cadence, so a
                # new index is readable (and searchable) within its first minutes.
                written = meta.tokens_done - since_snapshot
                due = min(settings.snapshot_tokens, max(settings.snapshot_tokens // 5, written))
                if since_snapshot >= due:
                    snapshot(complete=False)
            snapshot(complete=True)
        finally:
            for handle in handles:
                handle.remove()
    return _summary(out_dir, meta, time.perf_counter() - started, done_here)
