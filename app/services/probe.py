"""The concept probe of a run (analysis/probe.py): the neurons an exemplar index knows for
a concept, or named ones, measured on the run's prompt.

The stored run keeps only its kept nodes, so the probe recomputes the prompt's dense
attribution with the run's own method and settings; it is cached for the runs probed
recently, so trying "kidney", then "sodium", attributes once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from analysis.attribution import CircuitResult
from analysis.attribution.core import Attribution, attribute
from analysis.errors import InputError
from analysis.models import LoadedModel
from analysis.neurons.search import search as search_index
from analysis.probe import MAX_PROBED, ProbeResult, probe
from app.services.index_readers import IndexReaders
from app.services.runs import load_result
from app.store.tables import IndexRecord

KEEP_ATTRIBUTIONS = 8

_cache: OrderedDict[tuple[str, str, str], Attribution] = OrderedDict()
_lock = threading.Lock()


def dense_attribution(result: CircuitResult, lm: LoadedModel) -> Attribution:
    """Runs in the model thread: the run's prompt attributed again, densely, as it was."""
    key = (lm.name, lm.revision, result.cache_key or repr((result.input_ids, result.target_a,
                                                           result.target_b, result.params)))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    p = result.params
    attr = attribute(lm.model, lm.tokenizer, result.input_ids, result.target_a,
                     result.target_b, method=p.method, ig_steps=p.ig_steps,
                     ig_baseline=p.ig_baseline)
    with _lock:
        _cache[key] = attr
        while len(_cache) > KEEP_ATTRIBUTIONS:
            _cache.popitem(last=False)
    return attr


def found_by_search(reader: Any, query: str, limit: int) -> dict[tuple[int, int],
                                                                dict[str, object]]:
    """The search's hits for the query, best first, with what it says of each."""
    return {(h.layer, h.neuron): {"score": h.score, "description": h.description,
                                  "example": _example_text(h.example)}
            for h in search_index(reader, query, limit)}


def _example_text(example: Any) -> str | None:
    if example is None:
        return None
    return f"{example.left}[{example.token}]{example.right}"


def peaks_of(reader: Any, neurons: Sequence[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """Each neuron's largest |activation| over the index's corpus (its top exemplar)."""
    arrays = reader.arrays if reader is not None else None
    if arrays is None:
        return {}
    out = {}
    for layer, neuron in neurons:
        values = [float(arrays[name][layer, neuron, 0]) for name in ("top_val", "bot_val")
                  if name in arrays]
        values = [abs(v) for v in values if np.isfinite(v)]
        if values and max(values) > 0:
            out[(layer, neuron)] = max(values)
    return out


def run_probe(result: CircuitResult, lm: LoadedModel, neurons: Sequence[tuple[int, int]],
              *, factor: float, query: str | None,
              found: dict[tuple[int, int], dict[str, object]] | None = None,
              peaks: dict[tuple[int, int], float] | None = None) -> ProbeResult:
    """Runs in the model thread."""
    if len(neurons) > MAX_PROBED:
        raise InputError(f"probe at most {MAX_PROBED} neurons at once (got {len(neurons)})",
                         field="neurons")
    attr = dense_attribution(result, lm)
    return probe(lm.model, lm.tokenizer, result, attr, neurons, factor=factor, query=query,
                 peaks=peaks, found=found)


async def probe_run(run: Any, manager: Any, labels: Any, readers: IndexReaders, *,
                    query: str | None, neurons: Sequence[tuple[int, int]], factor: float,
                    limit: int) -> tuple[ProbeResult, IndexRecord | None]:
    """The probe of a stored run: the index's hits for ``query`` (best ``limit``) and the
    named ``neurons``; returns the result and the index row it searched (or None)."""
    result = load_result(run, manager, labels)
    query = (query or "").strip() or None
    if query is None and not neurons:
        raise InputError("type a concept (e.g. kidney) or name neurons (e.g. L6/N1284)",
                         field="query")
    base = manager.spec(run.model).base
    row, reader = await run_in_threadpool(readers.index_for, run.model, base)
    found: dict[tuple[int, int], dict[str, object]] = {}
    if query is not None:
        if reader is None:
            raise InputError(f"no exemplar index for {run.model} yet, so no neuron is known "
                             f"for {query!r}: build one on /indexes, or name neurons "
                             f"(e.g. L6/N1284)", field="query")
        found = await run_in_threadpool(found_by_search, reader, query, limit)
    chosen = list(dict.fromkeys([*found, *neurons]))
    peaks = peaks_of(reader, chosen)
    probed = await manager.run(run.model, lambda lm: run_probe(
        result, lm, chosen, factor=factor, query=query, found=found, peaks=peaks))
    return probed, row
