"""Measured ablation effects of a run's strongest neurons (analysis.attribution.effects),
one batched forward per run, kept for the runs looked at recently: the drivers table and
the concept candidates of one run read the same measurement."""

from __future__ import annotations

import threading
from collections import OrderedDict

from analysis.attribution import CircuitResult
from analysis.attribution.effects import NeuronEffect, run_effects
from analysis.models import LoadedModel

KEEP_RUNS = 64
Effects = dict[tuple[int, int], NeuronEffect]

_cache: OrderedDict[tuple[str, str, str], Effects] = OrderedDict()
_lock = threading.Lock()


def effects_for(result: CircuitResult, lm: LoadedModel) -> Effects:
    """Runs in the model thread. Keyed by the run's cache key (its prompt, answers and
    settings) and the model's revision, so an identical run measures once."""
    key = (lm.name, lm.revision, result.cache_key or repr((result.input_ids,
                                                           result.target_a,
                                                           result.target_b)))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    found = run_effects(lm.model, result)
    with _lock:
        _cache[key] = found
        while len(_cache) > KEEP_RUNS:
            _cache.popitem(last=False)
    return found
