"""Direct-effect edges between kept nodes, and from each node to the metric.

``E_st = a_s * d a_t / d a_s`` where the derivative runs only through the residual
stream and attention: every MLP's output is detached in the forward pass, so no path
through an MLP between s and t contributes. Sources must sit in an earlier layer
(``layer_s < layer_t``) and not later in the sequence (``pos_s <= pos_t``). The backward
is the attribution method's: RelP-linearised (frozen patterns, norm scales, gate ratios,
half rule) for ``relp``, ordinary gradients otherwise (``integrated_gradients`` edges use
plain gradients at the clean input).

``normalization="flow"`` rescales each edge to ``E_st / a_t * I_t``: the share of the
target's activation that the source supplies, times the target's influence (logit units).
Edges to the metric carry the node's influence ``I_s`` as ``weight`` (as the graph
viewers expect) and its direct effect on ``m`` as ``raw``.

Implementation (why it is fast), ``strategy="sweep"`` (the default):

* one forward pass on the prompt (batch 1), cut at every decoder layer's input, with the
  MLP blocks outside autograd (their outputs are detached; targets' neurons are
  recomputed from the MLP input), then one sweep down the layers: every open row's
  gradient is carried from layer to layer and all rows open at a layer go through that
  layer's backward together (``autograd.grad(..., is_grads_batched=True)``, vmap over
  the layer's backward graph, ``batch_size`` rows per call at most). A row joins at its
  target's layer and leaves below the lowest source it can reach (``reachable_floor``);
  a row that can reach no kept source is never computed. Each row thus costs its own
  depth, not the depth of the deepest row batched with it;
* the leaves are the MLP *outputs* (``d_model`` wide), not the neurons: the gradient at
  a source neuron is recovered as ``g_out · W_down[:, n]`` for the kept sources only, so
  the backward never runs the ``d_model x n_neurons`` down-projection transpose, nor any
  gate/up projection (those branches are cut);
* the split (``split="auto"``): when most rows sit high and a few sources low, rows are
  carried only down to a split layer; each source below it pushes its effect forward to
  that layer instead (a Jacobian-vector product per layer, taken as the derivative of
  the layer's VJP in its seed, batched over those sources), and the carried rows' edges
  from them are dot products there. Exact (the chain rule through the cut); the cost
  below the split becomes (low sources) x depth instead of (rows) x depth;
* attention runs as plain matmuls during this pass so every backward op has a batching
  rule (SDPA's fused backward would fall back to a per-row loop under vmap), and the
  gate nonlinearity is expressed as a multiplication by its local slope for the same
  reason.

``strategy="batched"`` is the previous method (one backward from the top for each batch
of layer-sorted rows, through the whole graph down to the lowest leaf); ``"loop"`` runs it
with one backward per row. Both stay as the benchmark's baselines and the tests'
cross-checks: all three give the same matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from analysis.attribution.adapters import ArchAdapter, get_adapter
from analysis.attribution.core import Attribution, metric_from_logits, metric_logits
from analysis.attribution.hooks import instrument, matmul_attention
from analysis.attribution.linearize import upcast
from analysis.attribution.results import METRIC_NODE_ID, Edge, Node
from analysis.errors import InputError

Normalization = Literal["none", "flow"]
Strategy = Literal["sweep", "batched", "loop"]
STRATEGIES: tuple[str, ...] = ("sweep", "batched", "loop")


@dataclass
class EdgeMatrix:
    """Dense edge weights: ``raw[t, s]`` for targets x sources (+ the metric row last)."""

    sources: list[Node]
    targets: list[Node]
    raw: torch.Tensor  # [len(targets) + 1, len(sources)]; last row = metric


def compute_edges(
    model: torch.nn.Module,
    attr: Attribution,
    nodes: Sequence[Node],
    *,
    normalization: Normalization | str = "none",
    threshold: float = 0.0,
    batch_size: int = 32,
    strategy: Strategy | str = "sweep",
    include_metric: bool = True,
) -> list[Edge]:
    """Edges among ``nodes`` (and to the metric), ``|weight| >= threshold``, sorted by |weight|."""
    if normalization not in ("none", "flow"):
        raise InputError("edge normalization must be 'none' or 'flow'", field="edge_normalization")
    if not isinstance(threshold, int | float) or threshold < 0:
        raise InputError("edge threshold must be >= 0", field="edge_threshold")
    matrix = edge_matrix(model, attr, nodes, batch_size=batch_size, strategy=strategy)
    return matrix_to_edges(
        matrix, normalization=normalization, threshold=threshold, include_metric=include_metric
    )


def matrix_to_edges(
    matrix: EdgeMatrix,
    *,
    normalization: str = "none",
    threshold: float = 0.0,
    include_metric: bool = True,
) -> list[Edge]:
    edges: list[Edge] = []
    raw = matrix.raw
    valid = _valid_mask(matrix.sources, matrix.targets)
    for t, target in enumerate(matrix.targets):
        scale = 1.0
        if normalization == "flow":
            scale = target.influence / target.activation if abs(target.activation) > 1e-12 else 0.0
        row = raw[t]
        for s in torch.nonzero(valid[t] & (row != 0)).flatten().tolist():
            value = float(row[s])
            weight = value * scale
            if abs(weight) >= threshold:
                edges.append(
                    Edge(
                        source=matrix.sources[s].node_id,
                        target=target.node_id,
                        weight=weight,
                        raw=value,
                    )
                )
    if include_metric:
        direct = raw[len(matrix.targets)]
        for s, source in enumerate(matrix.sources):
            if abs(source.influence) >= threshold:
                edges.append(
                    Edge(
                        source=source.node_id,
                        target=METRIC_NODE_ID,
                        weight=source.influence,
                        raw=float(direct[s]),
                    )
                )
    edges.sort(key=lambda e: -abs(e.weight))
    return edges


def _valid_mask(sources: Sequence[Node], targets: Sequence[Node]) -> torch.Tensor:
    sl = torch.tensor([n.layer for n in sources])
    sp = torch.tensor([n.position for n in sources])
    tl = torch.tensor([n.layer for n in targets])
    tp = torch.tensor([n.position for n in targets])
    return (sl[None, :] < tl[:, None]) & (sp[None, :] <= tp[:, None])


def edge_matrix(
    model: torch.nn.Module,
    attr: Attribution,
    nodes: Sequence[Node],
    *,
    batch_size: int = 32,
    strategy: Strategy | str = "sweep",
    split: int | Literal["auto"] | None = "auto",
) -> EdgeMatrix:
    """Raw direct effects between ``nodes`` and to the metric (see module docstring)."""
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}", field="strategy")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError("batch_size must be a positive integer", field="batch_size")
    adapter = get_adapter(model)
    _check_nodes(attr, nodes)
    sources = sorted(nodes, key=lambda n: (n.layer, n.position, n.neuron))
    if not sources:
        return EdgeMatrix([], [], torch.zeros(1, 0))
    min_layer = sources[0].layer
    # A node can only receive edges from an earlier layer's nodes.
    targets = [n for n in sources if n.layer > min_layer]
    if strategy == "sweep":
        raw = _LayerSweep(adapter, attr, sources, targets).run(batch_size, split)
        return EdgeMatrix(sources=sources, targets=targets, raw=raw)
    graph = _EdgeGraph(adapter, attr, sources, targets)
    rows = len(targets) + 1  # + metric
    raw = torch.zeros(rows, len(sources))
    if strategy == "batched":
        eye = torch.eye(rows, device=graph.device, dtype=graph.dtype)
        for start in range(0, rows, batch_size):
            idx = list(range(start, min(rows, start + batch_size)))
            raw[idx] = graph.vjp(eye[idx], idx)
    else:
        for r in range(rows):
            seed = torch.zeros(rows, device=graph.device, dtype=graph.dtype)
            seed[r] = 1.0
            raw[[r]] = graph.vjp(seed, [r], batched=False)
    return EdgeMatrix(sources=sources, targets=targets, raw=raw)


def _check_nodes(attr: Attribution, nodes: Sequence[Node]) -> None:
    seen: set[tuple[int, int, int]] = set()
    for node in nodes:
        if not 0 <= node.layer < attr.n_layers:
            raise InputError(f"node layer {node.layer} is out of range", field="layer")
        if not 0 <= node.position < attr.n_positions:
            raise InputError(f"node position {node.position} is out of range", field="positions")
        if not 0 <= node.neuron < attr.n_neurons:
            raise InputError(f"node neuron {node.neuron} is out of range", field="neuron")
        if node.key in seen:
            raise InputError(f"node {node.node_id} is listed twice", field="nodes")
        seen.add(node.key)


def _instrumented_metric(adapter: ArchAdapter, attr: Attribution, on_mlp_input: Any,
                         on_output: Any) -> torch.Tensor:
    """m from one forward with the edge passes' MLP hooks, under the attribution's own
    backward rule (RelP freezes attention patterns and linearizes; grad x act does not).
    Call it under ``torch.enable_grad()``."""
    relp = attr.method == "relp"
    ids = torch.tensor([attr.input_ids], device=adapter.input_device)
    emb = adapter.embed(ids).detach()
    with (
        matmul_attention(adapter.model, frozen=relp),
        instrument(adapter, on_mlp_input=on_mlp_input, on_output=on_output,
                   linearize="relp" if relp else "local", freeze_qk=relp),
    ):
        hidden = adapter.hidden(emb)
        z = metric_logits(adapter, hidden[:, -1], attr.target_a, attr.target_b,
                          linearize=relp)
    return metric_from_logits(z)


class _EdgeGraph:
    """One instrumented forward pass whose graph is reused by every VJP batch."""

    def __init__(
        self,
        adapter: ArchAdapter,
        attr: Attribution,
        sources: list[Node],
        targets: list[Node],
    ) -> None:
        self.adapter = adapter
        relp = attr.method == "relp"
        src_layers = sorted({n.layer for n in sources})
        tgt_layers = sorted({n.layer for n in targets})
        self.max_target_layer = tgt_layers[-1] if tgt_layers else -1
        # Leaves: MLP outputs of layers holding sources (the metric row needs them all).
        self.leaf_layers = src_layers
        tgt_index: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer in tgt_layers:
            members = [n for n in targets if n.layer == layer]
            tgt_index[layer] = (
                torch.tensor([n.position for n in members]),
                torch.tensor([n.neuron for n in members]),
            )
        self.row_layer = [n.layer for n in targets] + [adapter.n_layers]  # metric: deepest
        gathered: dict[int, torch.Tensor] = {}
        leaves: dict[int, torch.Tensor] = {}
        leaf_set = set(src_layers)

        linearize = "relp" if relp else "local"

        def on_mlp_input(layer: int, x: torch.Tensor) -> None:
            # Recompute just the target neurons from the MLP input: their backward then
            # costs a few dot products instead of the full gate/up projections.
            if layer in tgt_index:
                pos, neu = tgt_index[layer]
                # Row selection as a one-hot matmul: its backward is a matmul, which vmap
                # batches (index_select's backward would fall back to a per-row loop).
                pick = torch.zeros(len(pos), x.shape[1], device=x.device, dtype=x.dtype)
                pick[torch.arange(len(pos)), pos.to(x.device)] = 1.0
                gathered[layer] = adapter.neuron_values(layer, pick @ x[0], neu, linearize)

        def on_output(layer: int, y: torch.Tensor) -> torch.Tensor:
            # Stop every path through this MLP; sources' layers become differentiable
            # leaves so the residual/attention paths out of them can be measured.
            y = y.detach()
            if layer in leaf_set:
                y.requires_grad_(True)
                leaves[layer] = y
            return y

        with torch.enable_grad():
            m = _instrumented_metric(adapter, attr, on_mlp_input, on_output)
        # Output rows: targets layer by layer (same order as ``targets``), then m. Kept as
        # separate parts so a batch only backpropagates from the parts it seeds.
        dtype = upcast(m).dtype
        tensors = [gathered[layer] for layer in tgt_layers] + [m]
        self.parts: list[tuple[int, int, torch.Tensor]] = []
        start = 0
        for t in tensors:
            self.parts.append((start, start + t.shape[0], t.to(dtype)))
            start += t.shape[0]
        self.n_rows = start
        self.device, self.dtype = m.device, dtype
        self.leaves = leaves
        # Per source layer: positions, neurons, activations and down-projection columns.
        self.src: dict[int, tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for layer in src_layers:
            cols = [i for i, n in enumerate(sources) if n.layer == layer]
            pos = torch.tensor([sources[i].position for i in cols])
            neu = torch.tensor([sources[i].neuron for i in cols])
            act = attr.activation[layer, pos, neu]
            w = adapter.down_matrix(layer)
            self.src[layer] = (cols, pos, act, upcast(w[:, neu.to(w.device)].T))
        self.n_sources = len(sources)

    def vjp(self, seeds: torch.Tensor, rows: list[int], batched: bool = True) -> torch.Tensor:
        """Raw edge rows ``[len(rows), n_sources]`` for the given seed rows."""
        deepest = max(self.row_layer[r] for r in rows)
        layers = [layer for layer in self.leaf_layers if layer < deepest]
        result = torch.zeros(len(rows), self.n_sources)
        if not layers:
            return result
        lo, hi = min(rows), max(rows) + 1
        outputs, grad_outputs = [], []
        for start, stop, tensor in self.parts:
            if start < hi and stop > lo:
                outputs.append(tensor)
                grad_outputs.append(seeds[..., start:stop])
        grads = torch.autograd.grad(
            outputs,
            [self.leaves[layer] for layer in layers],
            grad_outputs=grad_outputs,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )
        for layer, g in zip(layers, grads, strict=True):
            if g is None:
                continue
            g = g.reshape(len(rows), *g.shape[-2:])  # [rows, seq, d_model]
            cols, pos, act, w = self.src[layer]
            g_src = upcast(g[:, pos.to(g.device), :])  # [rows, S, d_model]
            value = (g_src * w.to(g.device, g_src.dtype)).sum(-1).cpu().float() * act
            result[:, cols] = value
        return result


# Working memory one VJP row may take in a sweep chunk (its gradient and the attention
# backward's score-sized buffers); chunks shrink so long prompts stay within it.
SWEEP_CHUNK_BYTES = 512 * 2**20
# One layer's forward-mode step for one source (a VJP's derivative in its seed), in
# units of one row's layer backward: the split is taken only where it saves more.
FORWARD_STEP_COST = 3.0


def reachable_floor(sources: Sequence[Node], targets: Sequence[Node]) -> list[int | None]:
    """Per target, the lowest layer holding a source it can receive an edge from
    (``layer_s < layer_t``, ``pos_s <= pos_t``), or None when it has none."""
    floors: list[int | None] = []
    for t in targets:
        layers = [s.layer for s in sources if s.layer < t.layer and s.position <= t.position]
        floors.append(min(layers) if layers else None)
    return floors


class _LayerSweep:
    """Edges by one sweep down the layers instead of one backward per batch of rows.

    The instrumented forward is cut at every decoder layer's input (a detached leaf), so
    the backward can be run one layer at a time. The sweep carries, for every row still
    open, the gradient of its target with respect to the current layer's residual output
    ``G [rows, 1, seq, d_model]``, starting with the metric row at the top:

    * at layer ``l`` the rows of targets in ``l`` join (seeded at their recomputed
      neurons), the open rows' gradients reach layer ``l``'s MLP-output leaf (read at
      its sources) and its residual input (carried down);
    * a row leaves as soon as no source it can reach lies below (its ``reachable_floor``),
      and a row with no reachable source never starts.

    Each row thus costs exactly its target's depth above its lowest reachable source,
    where the row batches pay the deepest row of their batch, and every VJP works on all
    rows open at that layer at once. The MLP blocks run outside autograd (their outputs
    are detached anyway; the targets' neurons are recomputed from the MLP input)."""

    def __init__(
        self,
        adapter: ArchAdapter,
        attr: Attribution,
        sources: list[Node],
        targets: list[Node],
    ) -> None:
        self.adapter = adapter
        relp = attr.method == "relp"
        linearize = "relp" if relp else "local"
        self.sources, self.targets = sources, targets
        self.floor = [*reachable_floor(sources, targets), sources[0].layer]  # + metric
        self.metric_row = len(targets)
        tgt_index: dict[int, tuple[list[int], torch.Tensor, torch.Tensor]] = {}
        for layer in sorted({n.layer for n in targets}):
            rows = [i for i, n in enumerate(targets)
                    if n.layer == layer and self.floor[i] is not None]
            if rows:
                tgt_index[layer] = (
                    rows,
                    torch.tensor([targets[i].position for i in rows]),
                    torch.tensor([targets[i].neuron for i in rows]),
                )
        self.tgt_rows = {layer: rows for layer, (rows, _, _) in tgt_index.items()}
        src_layers = {n.layer for n in sources}
        self.gathered: dict[int, torch.Tensor] = {}
        self.leaves: dict[int, torch.Tensor] = {}
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        top: list[torch.Tensor] = []

        def on_mlp_input(layer: int, x: torch.Tensor) -> torch.Tensor:
            if layer in tgt_index:
                _, pos, neu = tgt_index[layer]
                pick = torch.zeros(len(pos), x.shape[1], device=x.device, dtype=x.dtype)
                pick[torch.arange(len(pos)), pos.to(x.device)] = 1.0
                self.gathered[layer] = upcast(
                    self.adapter.neuron_values(layer, pick @ x[0], neu, linearize))
            return x.detach()  # the MLP itself runs outside autograd

        def on_output(layer: int, y: torch.Tensor) -> torch.Tensor:
            y = y.detach()
            if layer in src_layers:
                y.requires_grad_(True)
                self.leaves[layer] = y
            return y

        def cut_input(layer: int) -> Any:
            def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple:
                h = args[0] if args else kwargs["hidden_states"]
                leaf = h.detach().requires_grad_(True)
                self.inputs[layer] = leaf
                if args:
                    return (leaf, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": leaf}
            return hook

        def keep_output(layer: int) -> Any:
            def hook(module: torch.nn.Module, args: tuple, out: Any) -> None:
                self.outputs[layer] = out[0] if isinstance(out, tuple) else out
            return hook

        def cut_top(module: torch.nn.Module, args: tuple) -> tuple:
            leaf = args[0].detach().requires_grad_(True)
            top.append(leaf)
            return (leaf, *args[1:])

        handles = []
        for layer, block in enumerate(adapter.layers()):
            handles.append(block.register_forward_pre_hook(cut_input(layer), with_kwargs=True))
            handles.append(block.register_forward_hook(keep_output(layer)))
        handles.append(adapter.final_norm().register_forward_pre_hook(cut_top))
        try:
            with torch.enable_grad():
                m = _instrumented_metric(adapter, attr, on_mlp_input, on_output)
                (self.top_grad,) = torch.autograd.grad(m, top[0])
        finally:
            for handle in handles:
                handle.remove()
        # Per source layer: columns, positions, activations and down-projection columns.
        self.src: dict[int, tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for layer in src_layers:
            cols = [i for i, n in enumerate(sources) if n.layer == layer]
            pos = torch.tensor([sources[i].position for i in cols])
            neu = torch.tensor([sources[i].neuron for i in cols])
            act = attr.activation[layer, pos, neu]
            w = adapter.down_matrix(layer)
            self.src[layer] = (cols, pos, act, upcast(w[:, neu.to(w.device)].T))

    def choose_split(self) -> int | None:
        """The layer at which carrying rows down stops paying (see ``split_cost``).

        Below a split ``L`` every row that entered above it would otherwise cost
        ``L - floor`` more layer backwards; the sources below ``L`` instead push their
        effect forward to ``L`` (a forward-mode step costs about ``FORWARD_STEP_COST``
        backward rows). None when no split saves anything."""
        n_layers = self.adapter.n_layers
        row_layers = [n.layer for n in self.targets] + [n_layers]
        best, best_gain = None, 0.0
        for split in range(1, n_layers):
            saved = sum(split - f for f, tl in zip(self.floor, row_layers, strict=True)
                        if f is not None and tl >= split and f < split)
            cost = FORWARD_STEP_COST * sum(split - s.layer for s in self.sources
                                           if s.layer < split)
            if saved - cost > best_gain:
                best, best_gain = split, saved - cost
        return best

    def run(self, batch_size: int, split: int | Literal["auto"] | None = "auto") -> torch.Tensor:
        """The raw edge matrix ``[len(targets) + 1, len(sources)]`` (metric row last).

        ``split``: rows that entered at or above this layer are carried only down to its
        input; their edges from the sources below it are read as dot products with those
        sources' forward-propagated effects (``_low_source_tangents``). ``"auto"`` picks
        it by ``choose_split``; None carries every row to its floor."""
        if split == "auto":
            split = self.choose_split()
        raw = torch.zeros(len(self.targets) + 1, len(self.sources))
        seq, d_model = self.top_grad.shape[-2:]
        heads = int(getattr(self.adapter.config, "num_attention_heads", 1) or 1)
        per_row = 4 * seq * (4 * d_model + 3 * heads * seq)
        chunk = max(1, min(batch_size, SWEEP_CHUNK_BYTES // per_row))
        open_rows = [self.metric_row]
        grad = self.top_grad.detach().unsqueeze(0)  # [rows, 1, seq, d_model]
        for layer in range(self.adapter.n_layers - 1, -1, -1):
            new_rows = self.tgt_rows.get(layer, [])
            if not open_rows and not new_rows:
                continue
            rows = open_rows + new_rows
            wants_mlp = layer in self.leaves and bool(open_rows)
            wants_input = any(self.floor[r] < layer for r in rows)  # type: ignore[operator]
            if not wants_mlp and not wants_input:
                open_rows, grad = [], grad[:0]
                continue
            leaves = ([self.leaves[layer]] if wants_mlp else []) + (
                [self.inputs[layer]] if wants_input else [])
            out = self.outputs[layer]
            carried = []
            # Balanced chunks: 40 rows at 32 per call run as 20 + 20, not 32 + 8.
            size = -(-len(rows) // -(-len(rows) // chunk))
            for start in range(0, len(rows), size):
                stop = min(len(rows), start + size)
                outputs, seeds = [], []
                n_open = max(0, min(stop, len(open_rows)) - start)
                if n_open:
                    g = grad[start:start + n_open].to(out.dtype)
                    if stop - start > n_open:
                        pad = torch.zeros(stop - start - n_open, *g.shape[1:],
                                          dtype=g.dtype, device=g.device)
                        g = torch.cat([g, pad])
                    outputs.append(out)
                    seeds.append(g)
                if stop > len(open_rows):
                    gathered = self.gathered[layer]
                    seed = torch.zeros(stop - start, gathered.shape[0],
                                       dtype=gathered.dtype, device=gathered.device)
                    first = max(start, len(open_rows))
                    for k in range(first, stop):
                        seed[k - start, k - len(open_rows)] = 1.0
                    outputs.append(gathered)
                    seeds.append(seed)
                grads = torch.autograd.grad(
                    outputs, leaves, grad_outputs=seeds, retain_graph=True,
                    allow_unused=True, is_grads_batched=True,
                )
                shape = (stop - start, *self.inputs[layer].shape)
                if wants_mlp:
                    self._read_sources(raw, layer, rows[start:stop], grads[0])
                if wants_input:
                    g_in = grads[-1]
                    carried.append(g_in.detach() if g_in is not None else torch.zeros(
                        shape, dtype=out.dtype, device=out.device))
            if wants_input:
                keep = [i for i, r in enumerate(rows) if self.floor[r] < layer]  # type: ignore[operator]
                full = torch.cat(carried)
                grad = full[keep] if len(keep) < len(rows) else full
                open_rows = [rows[i] for i in keep]
                if layer == split and open_rows:
                    self._resolve_below(raw, open_rows, grad, layer, chunk)
                    open_rows, grad = [], grad[:0]
            else:
                open_rows, grad = [], grad[:0]
        return raw

    def _resolve_below(
        self, raw: torch.Tensor, rows: list[int], grad: torch.Tensor, split: int, chunk: int
    ) -> None:
        """Edges of the carried ``rows`` (gradients ``grad`` at layer ``split``'s input)
        from every source below ``split``: ``a_s * <G_r, J v_s>``, exact by the chain rule
        since every path from such a source to these targets crosses that input."""
        cols, tangents = self._low_source_tangents(split, chunk)
        if not cols:
            return
        g = upcast(grad.reshape(len(rows), -1))
        u = upcast(tangents.reshape(len(cols), -1)).to(g.device, g.dtype)
        act_of = {c: a for cs, _, act, _ in self.src.values()
                  for c, a in zip(cs, act.tolist(), strict=True)}
        acts = torch.tensor([act_of[c] for c in cols])
        value = (g @ u.T).cpu().float() * acts
        raw[torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = value

    def _low_source_tangents(self, split: int, chunk: int) -> tuple[list[int], torch.Tensor]:
        """Per source below ``split`` (columns, in order), the forward-mode effect of a
        unit of its neuron (``W_down[:, n]`` at its position, in its layer's MLP-output
        leaf) on layer ``split``'s input, ``[k, 1, seq, d_model]``.

        Each layer's step is a Jacobian-vector product of the same linearised graph the
        sweep backpropagates through, taken as the derivative of its VJP with respect to
        the seed (the VJP is linear in the seed), batched over the sources."""
        low_layers = sorted(layer for layer in self.src if layer < split)
        cols: list[int] = []
        u: torch.Tensor | None = None
        for layer in range(low_layers[0] if low_layers else split, split):
            out = self.outputs[layer]
            new_cols: list[int] = []
            v_leaf: torch.Tensor | None = None
            if layer in self.src and layer < split:
                c, pos, _, w = self.src[layer]
                leaf = self.leaves[layer]
                new_cols = list(c)
                v_leaf = torch.zeros(len(c), *leaf.shape, dtype=leaf.dtype, device=leaf.device)
                for k, p in enumerate(pos.tolist()):
                    v_leaf[k, 0, p] = w[k].to(leaf.device, leaf.dtype)
            n_old = len(cols)
            n = n_old + len(new_cols)
            inputs: list[torch.Tensor] = []
            tangents: list[torch.Tensor] = []
            if u is not None:
                inputs.append(self.inputs[layer])
                pad = torch.zeros(n - n_old, *u.shape[1:], dtype=u.dtype, device=u.device)
                tangents.append(torch.cat([u.to(out.dtype), pad]))
            if v_leaf is not None:
                inputs.append(self.leaves[layer])
                pad = torch.zeros(n_old, *v_leaf.shape[1:], dtype=v_leaf.dtype,
                                  device=v_leaf.device)
                tangents.append(torch.cat([pad, v_leaf]))
            seed = torch.zeros_like(out, requires_grad=True)
            with torch.enable_grad():
                vjps = torch.autograd.grad(out, inputs, grad_outputs=seed, retain_graph=True,
                                           create_graph=True, allow_unused=True)
            used = [(v, t) for v, t in zip(vjps, tangents, strict=True)
                    if v is not None and v.requires_grad]
            parts = []
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                if used:
                    (jv,) = torch.autograd.grad(
                        [v for v, _ in used], [seed],
                        grad_outputs=[t[start:stop] for _, t in used],
                        retain_graph=True, allow_unused=True, is_grads_batched=True)
                else:
                    jv = None
                if jv is None:  # no path: the effect stops here
                    jv = torch.zeros(stop - start, *out.shape, dtype=out.dtype,
                                     device=out.device)
                parts.append(jv.detach())
            u = torch.cat(parts)
            cols = cols + new_cols
        if u is None:
            return [], torch.zeros(0)
        return cols, u

    def _read_sources(
        self, raw: torch.Tensor, layer: int, rows: list[int], g: torch.Tensor | None
    ) -> None:
        if g is None:
            return
        g = g.reshape(len(rows), *g.shape[-2:])  # [rows, seq, d_model]
        cols, pos, act, w = self.src[layer]
        g_src = upcast(g[:, pos.to(g.device), :])
        value = (g_src * w.to(g.device, g_src.dtype)).sum(-1).cpu().float() * act
        raw[torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = value
