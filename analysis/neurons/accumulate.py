"""Streaming statistics of every neuron of every layer: top-k, bottom-k, moments, counts
and the shared position sample. Memory is bounded by the state itself (``[L, K, N]`` and
``[L, S, N]``): each batch's activations are folded in and dropped, never kept."""

from __future__ import annotations

import math

import numpy as np
import torch


class IndexState:
    """The running state of an index build, per layer. Top-k lists are kept ``[K, N]``
    (neurons last) so each batch merges with one ``topk`` along dim 0."""

    # Above this many candidates per kept slot, one full topk beats gathering them.
    full_topk_factor = 4.0

    def __init__(self, n_layers: int, n_neurons: int, k: int, sample_size: int) -> None:
        shape = (n_layers, n_neurons)
        self.k = k
        self.top_val = torch.full((n_layers, k, n_neurons), -math.inf)
        self.top_idx = torch.full((n_layers, k, n_neurons), -1, dtype=torch.int64)
        self.neg_val = torch.full((n_layers, k, n_neurons), -math.inf)  # top of -a
        self.neg_idx = torch.full((n_layers, k, n_neurons), -1, dtype=torch.int64)
        self.sum = torch.zeros(shape, dtype=torch.float64)
        self.sumsq = torch.zeros(shape, dtype=torch.float64)
        self.first_sum = torch.zeros(shape, dtype=torch.float64)
        self.max = torch.full(shape, -math.inf)
        self.min = torch.full(shape, math.inf)
        self.n_pos = torch.zeros(shape, dtype=torch.int64)
        self.n_large = torch.zeros(shape, dtype=torch.int64)
        self.sample = torch.full((n_layers, sample_size, n_neurons), math.nan,
                                 dtype=torch.float16)
        self.thresholds = [math.nan] * n_layers

    # --- one batch of one layer ------------------------------------------------------
    def update(self, layer: int, acts: torch.Tensor, positions: torch.Tensor,
               first_rows: torch.Tensor, sample_rows: torch.Tensor,
               sample_slots: torch.Tensor) -> None:
        """Fold in ``acts [n, N]`` (float32): the layer's activations at ``n`` real tokens
        whose global corpus positions are ``positions [n]``."""
        if math.isnan(self.thresholds[layer]):
            self.thresholds[layer] = calibrate(acts, first_rows)
        thr = self.thresholds[layer]
        # The hot loop's cost is passes over the [n, N] block; each was timed on 2 CPU
        # cores at n=3000, N=1536: column sums as reductions (0.6 ms; a matvec took
        # 1.5), ``acts * acts`` (``square()`` allocated slower), and the threshold counts
        # as a float matvec (bool reductions go through int64 and cost 3-4x more).
        ones = torch.ones(1, acts.shape[0], dtype=acts.dtype)
        square = acts * acts
        self.sum[layer] += acts.sum(0).double()
        self.sumsq[layer] += square.sum(0).double()
        self.n_pos[layer] += (ones @ (acts > thr).float())[0].long()
        self.n_large[layer] += (ones @ (square > thr * thr).float())[0].long()
        if first_rows.numel():
            self.first_sum[layer] += acts.index_select(0, first_rows).sum(0).double()
        batch_max, batch_min = acts.amax(0), acts.amin(0)
        torch.maximum(self.max[layer], batch_max, out=self.max[layer])
        torch.minimum(self.min[layer], batch_min, out=self.min[layer])
        self._merge(self.top_val, self.top_idx, layer, acts, positions, batch_max)
        self._merge(self.neg_val, self.neg_idx, layer, acts, positions, batch_min.neg(),
                    negate=True)
        if sample_rows.numel():
            self.sample[layer, sample_slots] = acts.index_select(0, sample_rows).half()

    def _merge(self, vals: torch.Tensor, idx: torch.Tensor, layer: int, acts: torch.Tensor,
               positions: torch.Tensor, best: torch.Tensor, negate: bool = False) -> None:
        """Merge the batch into the layer's top-k (``negate``: of ``-acts``).

        ``topk`` over the whole ``[n, N]`` block is the dearest pass, and after the first
        batch almost every value is below its neuron's current k-th: only the values that
        beat it are gathered (one comparison pass) and merged with the kept lists by a
        small sort. The full ``topk`` runs only while the lists are still filling."""
        kth = vals[layer, -1]
        if not bool((best > kth).any()):
            return
        mask = acts < -kth if negate else acts > kth
        n_cand = int(torch.count_nonzero(mask))  # 20x faster than a bool sum
        if n_cand > acts.shape[1] * self.k * self.full_topk_factor:
            v, rows = acts.topk(min(self.k, acts.shape[0]), dim=0, largest=not negate)
            if negate:
                v = v.neg()
            keep_v, keep = torch.cat([vals[layer], v]).topk(self.k, dim=0)
            idx[layer] = torch.cat([idx[layer], positions[rows]]).gather(0, keep)
            vals[layer] = keep_v
            return
        rows, cols = mask.nonzero(as_tuple=True)
        cand = acts[rows, cols]
        if negate:
            cand = cand.neg()
        n_neurons = acts.shape[1]
        all_cols = torch.cat([torch.arange(n_neurons).repeat(self.k), cols])
        all_vals = torch.cat([vals[layer].reshape(-1), cand])
        all_pos = torch.cat([idx[layer].reshape(-1), positions[rows]])
        # Sort by neuron, then by value (descending); keep each neuron's first k.
        by_value = torch.sort(all_vals, descending=True, stable=True).indices
        order = by_value[torch.sort(all_cols[by_value], stable=True).indices]
        counts = torch.bincount(all_cols, minlength=n_neurons)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(order)) - starts[all_cols[order]]
        keep = order[rank < self.k]  # neuron-major, k per neuron
        vals[layer] = all_vals[keep].reshape(n_neurons, self.k).t().contiguous()
        idx[layer] = all_pos[keep].reshape(n_neurons, self.k).t().contiguous()

    # --- to and from disk ------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The snapshot arrays (see ``store``), neurons before k."""
        def lnk(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).contiguous()

        return {
            "top_val": lnk(self.top_val).numpy(),
            "top_idx": lnk(self.top_idx).to(torch.int32).numpy(),
            "bot_val": lnk(self.neg_val).neg().numpy(),
            "bot_idx": lnk(self.neg_idx).to(torch.int32).numpy(),
            "sum": self.sum.numpy().copy(), "sumsq": self.sumsq.numpy().copy(),
            "first_sum": self.first_sum.numpy().copy(),
            "max": self.max.numpy().copy(), "min": self.min.numpy().copy(),
            "n_pos": self.n_pos.numpy().copy(), "n_large": self.n_large.numpy().copy(),
            "sample_act": lnk(self.sample).numpy(),
        }

    def load(self, arrays: dict[str, np.ndarray], thresholds: list[float]) -> None:
        """Continue from a snapshot (the exact numbers it saved)."""
        def lkn(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a)).transpose(1, 2).contiguous()

        self.top_val = lkn(arrays["top_val"])
        self.top_idx = lkn(arrays["top_idx"]).to(torch.int64)
        self.neg_val = lkn(arrays["bot_val"]).neg()
        self.neg_idx = lkn(arrays["bot_idx"]).to(torch.int64)
        for name in ("sum", "sumsq", "first_sum", "max", "min", "n_pos", "n_large"):
            setattr(self, name, torch.from_numpy(np.array(arrays[name])))
        self.sample = lkn(arrays["sample_act"])
        self.thresholds = list(thresholds)


def calibrate(acts: torch.Tensor, first_rows: torch.Tensor) -> float:
    """The layer's activation scale: RMS over the first batch's tokens that are not at a
    text's first position (attention-sink positions would inflate it)."""
    keep = torch.ones(acts.shape[0], dtype=torch.bool)
    keep[first_rows] = False
    rest = acts[keep] if bool(keep.any()) else acts
    return float(rest.double().square().mean().sqrt())
