"""The on-disk format of an exemplar index, and its atomic writes.

An index directory holds::

    meta.json              IndexMeta: model, corpus, settings, progress, current snapshot
    tokens.npy             int32 [tokens_total]   every text's token ids, concatenated
    offsets.npy            int64 [n_texts + 1]    text t is tokens[offsets[t]:offsets[t+1]]
    vocab.json             {token id: decoded text} for the ids the corpus uses
    sample.npy             int32 [sample_size]    global token positions of the sample
    snap-000007/           the current snapshot (arrays stacked over layers):
        top_val.npy  float32 [L, N, K]  top activations, descending   top_idx.npy int32
        bot_val.npy  float32 [L, N, K]  most negative, ascending      bot_idx.npy int32
        sum.npy, sumsq.npy, first_sum.npy  float64 [L, N]
        max.npy, min.npy                   float32 [L, N]
        n_pos.npy, n_large.npy             int64   [L, N]  counts above the threshold
        sample_act.npy     float16 [L, N, S]  activations at the sample (NaN: not seen yet)

A snapshot is written whole into a new directory, then meta.json is replaced (atomic
rename) to name it, then older snapshots are removed: a reader sees either the old or the
new state, never a mix. Readers map a snapshot's files when they open, so a snapshot
removed later stays readable to them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
META = "meta.json"
SNAPSHOT_ARRAYS = ("top_val", "top_idx", "bot_val", "bot_idx", "sum", "sumsq", "first_sum",
                   "max", "min", "n_pos", "n_large", "sample_act")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, json.dumps(value, indent=1).encode())


def save_array_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_snapshot(out_dir: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Write a complete snapshot directory (not yet current: meta.json names it after)."""
    target = out_dir / name
    tmp = out_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for key in SNAPSHOT_ARRAYS:
        with open(tmp / f"{key}.npy", "wb") as f:
            np.save(f, arrays[key])
            f.flush()
            os.fsync(f.fileno())
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def remove_other_snapshots(out_dir: Path, keep: str | None) -> None:
    for path in out_dir.iterdir():
        stale = path.name.startswith("snap-") or (path.name.startswith(".snap-")
                                                  and path.name.endswith(".tmp"))
        if path.is_dir() and stale and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def load_snapshot(out_dir: Path, name: str, *, mmap: bool = True) -> dict[str, np.ndarray]:
    mode = "r" if mmap else None
    return {key: np.load(out_dir / name / f"{key}.npy", mmap_mode=mode)
            for key in SNAPSHOT_ARRAYS}


def size_on_disk(out_dir: Path) -> int:
    return sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
