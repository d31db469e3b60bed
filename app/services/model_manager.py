"""Keeps registered models resident and serialises the work done on them.

Model work runs in a worker thread (never on the event loop) under one lock per process:
torch on 2 CPU cores gains nothing from two concurrent passes, and on a GPU it protects
hooks and adapters that an analysis installs on the shared module tree. A request waits
for its turn on an asyncio semaphore, holding NO thread; only the request that is running
and the next one (already blocked on the model lock, so the hand-over has no gap) hold a
pool thread. Before (issue 23.4) every waiting request held one of the shared pool's 40
threads, blocked on the model lock: the pool ran dry, so every route whose dependencies
run in the pool (health and the 429/503 answers included) waited seconds for a thread,
and each of those threads that ran a pass kept its own allocator arena and torch scratch
memory, so RSS grew by hundreds of MB after a burst and stayed. Now two threads at most do
model work, and the pool hands idle threads out last-in-first-out, so the same ones do it
burst after burst (benchmarks/bench_burst.py: RSS +29 MB after a burst, was +668 MB).

Measured and rejected: one dedicated executor thread, or one turn at a time; either way
the gap between two passes cut a burst's throughput several-fold on 2 cores.

The wait is bounded (``ModelQueueLimits``): a request beyond ``max_depth`` is refused at
once, one that waits past ``max_wait_s`` gives up, both with a Retry-After estimate.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from analysis.errors import Busy, UnknownModel
from analysis.models import (
    LoadedModel,
    ModelRegistry,
    ModelSpec,
    activate,
    load_lora_variant,
    load_model,
)
from app.settings import ModelQueueLimits

T = TypeVar("T")
# Requests holding a pool thread for model work at once: the one running and the next,
# already blocked on the model lock, so the hand-over is immediate (measured: with only
# one, the gap between two passes made a burst's throughput several times lower).
HANDOFF_THREADS = 2


class ModelManager:
    """Full models (bases and full fine-tunes) count against ``max_resident``; the least
    recently used one is swapped out. LoRA variants are overlays on their resident base
    (their adapter matrices only) and are dropped with it."""

    def __init__(self, registry: ModelRegistry, cache_dir: Path, max_resident: int = 1,
                 discover: Callable[[], list[ModelSpec]] | None = None,
                 queue: ModelQueueLimits | None = None) -> None:
        self.registry = registry
        self.cache_dir = cache_dir
        self.max_resident = max_resident
        # Variants registered after start-up (by correction jobs) are found through this.
        self.discover = discover
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._adapters: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self.queue = queue or ModelQueueLimits()
        self._pending = 0  # requests running or waiting for the lock
        self._pending_lock = threading.Lock()
        self._mean_s = 1.0  # moving mean of one work item's seconds, for Retry-After
        self.served = 0  # work items done (health; tests prove a read did no model work)
        self.loading: str | None = None
        self.last_error: str | None = None
        # Turn-taking for requests: one asyncio lock per event loop (tests run several).
        self._turns: dict[int, asyncio.Semaphore] = {}

    def _turn(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        turns = self._turns.get(id(loop))
        if turns is None:
            turns = self._turns[id(loop)] = asyncio.Semaphore(HANDOFF_THREADS)
        return turns

    def loaded(self) -> list[LoadedModel]:
        return [*self._loaded.values(), *self._adapters.values()]

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded or name in self._adapters

    def refresh(self) -> None:
        """Register variants that appeared since start-up (e.g. a finished job's)."""
        if self.discover is None:
            return
        known = set(self.registry.names())
        for spec in self.discover():
            if spec.name not in known:
                self.registry.add(spec)

    def spec(self, name: str) -> ModelSpec:
        """The registered spec of ``name``, looking for new variants before giving up."""
        try:
            return self.registry.get(name)
        except UnknownModel:
            self.refresh()
            return self.registry.get(name)

    def _get_locked(self, name: str) -> LoadedModel:
        lm = self._resident(name)
        activate(lm)
        return lm

    def _resident(self, name: str) -> LoadedModel:
        spec = self.spec(name)  # raises UnknownModel before any loading
        if spec.kind == "lora":
            assert spec.base is not None
            base = self._resident(spec.base)
            cached = self._adapters.get(name)
            if cached is not None and cached.model is base.model:
                return cached
            lm = self._load(name, lambda: load_lora_variant(spec, base, self.cache_dir))
            self._adapters[name] = lm
            return lm
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        while len(self._loaded) >= self.max_resident:
            evicted, _ = self._loaded.popitem(last=False)
            for adapter in [a for a in self._adapters.values() if a.spec.base == evicted]:
                del self._adapters[adapter.name]
        lm = self._load(name, lambda: load_model(spec, self.cache_dir))
        self._loaded[name] = lm
        return lm

    def _load(self, name: str, load: Callable[[], LoadedModel]) -> LoadedModel:
        """Load with /health able to say what is loading and what failed last."""
        self.loading = name
        try:
            return load()
        except Exception as exc:
            self.last_error = f"{name}: {exc}"
            raise
        finally:
            self.loading = None

    def get_sync(self, name: str) -> LoadedModel:
        """Load (start-up, the CLI): waits as long as loading takes, unbounded."""
        with self._lock:
            return self._get_locked(name)

    def queue_status(self) -> dict[str, float | int]:
        return {"depth": self._pending, "max_depth": self.queue.max_depth,
                "max_wait_s": self.queue.max_wait_s, "mean_work_s": round(self._mean_s, 3),
                "served": self.served}

    def _retry_after(self, ahead: int) -> int:
        return max(1, min(300, math.ceil(self._mean_s * max(ahead, 1))))

    @contextmanager
    def _admitted(self) -> Iterator[None]:
        """Counts a request from before it waits for a thread until its work is done."""
        with self._pending_lock:
            if self._pending >= self.queue.max_depth:
                raise Busy(f"the model is busy: {self._pending} requests are running or "
                           f"waiting (the limit is {self.queue.max_depth}); retry in about "
                           f"{self._retry_after(self._pending)} s",
                           self._retry_after(self._pending))
            self._pending += 1
        try:
            yield
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _busy_503(self) -> Busy:
        wait = self._retry_after(self._pending)
        return Busy(f"the model stayed busy for {self.queue.max_wait_s:g} s with "
                    f"{self._pending} requests; retry in about {wait} s", wait, status=503)

    def _run_locked(self, name: str, fn: Callable[[LoadedModel], T]) -> T:
        if not self._lock.acquire(timeout=self.queue.max_wait_s):
            raise self._busy_503()
        started = time.monotonic()
        try:
            return fn(self._get_locked(name))
        finally:
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started)
            self.served += 1
            self._lock.release()

    def run_sync(self, name: str, fn: Callable[[LoadedModel], T]) -> T:
        with self._admitted():
            return self._run_locked(name, fn)

    async def run(self, name: str, fn: Callable[[LoadedModel], T]) -> T:
        """Run `fn` on the named model in a worker thread, one model job at a time; the
        request waits for its turn holding no thread."""
        self.spec(name)  # an unknown name fails now, not after queueing
        with self._admitted():  # counted from before it waits for its turn
            turn = self._turn()
            try:
                await asyncio.wait_for(turn.acquire(), timeout=self.queue.max_wait_s)
            except TimeoutError:
                raise self._busy_503() from None
            try:
                return await run_in_threadpool(self._run_locked, name, fn)
            finally:
                turn.release()
