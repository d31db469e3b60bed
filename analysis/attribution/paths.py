"""The strongest paths through a circuit: from the embeddings, through kept neurons, to m.

What a path's score is (our documented choice). For an edge s -> t between kept nodes
the stored ``raw`` is ``a_s * d a_t / d a_s``, the part of t's activation that s supplies
directly; divided by ``a_t`` it is a *share* of t's activation (clipped to [-1, 1], so a
nearly silent target cannot blow a path up). What the kept sources do not supply,
``rest(t) = 1 - sum_s share(s -> t)``, comes from the token embeddings through the
residual stream and attention (and from neurons outside the circuit). The last hop is
the node's *direct* effect on m (the ``raw`` of its edge to the metric). So

    score(n1 -> ... -> nk -> m) = rest(n1) * prod share(n_i -> n_i+1) * direct(nk)

in logit units, signed: positive pushes towards A, negative towards B. Under the
linearisation the edges come from, the scores of all paths through a node add up to its
influence restricted to the circuit, and the scores of all paths add up to the kept
nodes' direct effects: a decomposition, not just a ranking.

"Why B" (``towards="B"``, and likewise "why A") ranks *coherent* paths only: every share
along the path is positive and so is the first node's rest, so the only sign on the path
is the last node's direct effect. Then every node's part of the path (the product from it
to m) pushes the same way as the path itself. A signed decomposition would also list, as
a path "into B", a chain whose first node pushes A along it and meets a negative share
later; such a chain cancels against others and says nothing about why B wins. A node on a
coherent B path can still push A *in total*, through its other paths; the view shows each
node's total influence beside it.

How they are found: the graph is a DAG in layer order (edges run from a lower layer to a
higher one), so the k best paths are a dynamic programme, never an enumeration. For every
node we keep the k best prefixes from the embeddings and the k best suffixes to m, per
sign (the product of signed factors fixes the sign; the best of one sign is the largest
magnitude of that sign); paths through a selected node are best-prefix x best-suffix
pairs. Cost O((nodes + edges) * k log k).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, Field

from analysis.attribution.results import METRIC_NODE_ID, CircuitResult, Node
from analysis.errors import InputError

MAX_K = 50
SILENT = 1e-9  # |activation| below this supplies no share

Towards = Literal["A", "B"]
Partial = tuple[float, tuple[str, ...]]  # (|value|, node ids)


class CircuitPath(BaseModel):
    """One path from the embeddings through kept nodes to m."""

    nodes: list[str] = Field(description="Node ids, first (reads the embeddings) to last.")
    tokens: list[str | None] = Field(description="The token at each node's position.")
    score: float = Field(description="rest * product of shares * direct effect (logit units).")

    @property
    def towards(self) -> Towards:
        return "A" if self.score > 0 else "B"


class PathGraph:
    """A circuit's nodes with the path factors: rest(t), share(s -> t), direct(t).
    ``coherent``: only positive shares, and only nodes with a positive rest start a path
    (module docstring)."""

    def __init__(self, result: CircuitResult, coherent: bool = False) -> None:
        self.coherent = coherent
        self.nodes: dict[str, Node] = {n.node_id: n for n in result.nodes}
        self.order = sorted(self.nodes, key=lambda i: (self.nodes[i].layer,
                                                       self.nodes[i].position, i))
        self.into: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.out: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.direct: dict[str, float] = {}
        for e in result.edges:
            if e.source not in self.nodes:
                continue
            if e.target == METRIC_NODE_ID:
                self.direct[e.source] = self.direct.get(e.source, 0.0) + e.raw
                continue
            target = self.nodes.get(e.target)
            if target is None or abs(target.activation) < SILENT:
                continue
            share = max(-1.0, min(1.0, e.raw / target.activation))
            if coherent and share <= 0:
                continue
            self.into[e.target].append((e.source, share))
            self.out[e.source].append((e.target, share))
        self.rest = {i: 1.0 - sum(f for _, f in self.into[i]) for i in self.nodes}
        if coherent:  # the rest counts every kept source, reinforcing or not
            full = PathGraph(result)
            self.rest = full.rest


def _best(candidates: list[Partial], k: int) -> list[Partial]:
    return heapq.nlargest(k, (c for c in candidates if c[0] > 0), key=lambda c: c[0])


def _extend(lists: dict[int, list[Partial]], factor: float,
            glue: str, before: bool) -> dict[int, list[Partial]]:
    """Every partial path in ``lists`` times ``factor``, with ``glue`` added at one end."""
    sign = 1 if factor >= 0 else -1
    out: dict[int, list[Partial]] = {1: [], -1: []}
    for s, items in lists.items():
        for mag, path in items:
            out[s * sign].append((mag * abs(factor),
                                  (glue, *path) if before else (*path, glue)))
    return out


def _prefixes(g: PathGraph, k: int) -> dict[str, dict[int, list[Partial]]]:
    """For each node, the k best paths from the embeddings to it (per sign)."""
    pre: dict[str, dict[int, list[Partial]]] = {}
    for t in g.order:
        r = g.rest[t]
        acc: dict[int, list[Partial]] = {1: [], -1: []}
        if r > 0 or not g.coherent:
            acc[1 if r >= 0 else -1].append((abs(r), (t,)))
        for s, share in g.into[t]:
            for sign, items in _extend(pre[s], share, t, before=False).items():
                acc[sign].extend(items)
        pre[t] = {s: _best(items, k) for s, items in acc.items()}
    return pre


def _suffixes(g: PathGraph, k: int) -> dict[str, dict[int, list[Partial]]]:
    """For each node, the k best paths from it to m (per sign)."""
    suf: dict[str, dict[int, list[Partial]]] = {}
    for t in reversed(g.order):
        d = g.direct.get(t, 0.0)
        acc: dict[int, list[Partial]] = {1: [], -1: []}
        acc[1 if d >= 0 else -1].append((abs(d), (t,)))
        for u, share in g.out[t]:
            for sign, items in _extend(suf[u], share, t, before=True).items():
                acc[sign].extend(items)
        suf[t] = {s: _best(items, k) for s, items in acc.items()}
    return suf


def _wanted(towards: Towards | None) -> list[int]:
    return {None: [1, -1], "A": [1], "B": [-1]}[towards]


def _as_paths(g: PathGraph, found: list[tuple[float, tuple[str, ...]]],
              k: int) -> list[CircuitPath]:
    found.sort(key=lambda f: -abs(f[0]))
    return [CircuitPath(nodes=list(p), tokens=[g.nodes[i].token for i in p], score=v)
            for v, p in found[:k]]


def top_paths(result: CircuitResult, *, through: str | None = None, k: int = 5,
              towards: Towards | None = None) -> list[CircuitPath]:
    """The ``k`` strongest paths (by |score|) from the embeddings to m, optionally only
    those through node ``through``. ``towards`` one answer ("why B": ``towards="B"``):
    only coherent paths into it (module docstring)."""
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}", field="k")
    g = PathGraph(result, coherent=towards is not None)
    if through is not None and through not in g.nodes:
        raise InputError(f"node {through!r} is not in this view of the circuit "
                         "(filtered out, or not a kept node)", field="node")
    pre = _prefixes(g, k)
    found: list[tuple[float, tuple[str, ...]]] = []
    if through is None:
        for t in g.order:
            d = g.direct.get(t, 0.0)
            for sign, items in pre[t].items():
                found += [(sign * mag * d, path) for mag, path in items]
    else:
        suf = _suffixes(g, k)
        for s1, heads in pre[through].items():
            for s2, tails in suf[through].items():
                found += [(s1 * s2 * m1 * m2, (*p1, *p2[1:]))
                          for m1, p1 in heads for m2, p2 in tails]
    keep = _wanted(towards)
    found = [(v, p) for v, p in found if v != 0 and (1 if v > 0 else -1) in keep]
    return _as_paths(g, found, k)


__all__ = ["MAX_K", "CircuitPath", "PathGraph", "top_paths"]
