"""Attribution cost against its floor, in one process (ratios, never assertions).

Default (CPU, the embedded Gemma-3-270M, the seed prompt):

* floor: the bare model's forward + backward of m w.r.t. the input embeddings
  (``logits_to_keep=1``: the strongest bare baseline; a full-vocabulary logits pass is
  shown too), median of ``--reps`` runs interleaved with the methods;
* ``grad_x_act`` and ``relp`` attribution (``attribute``), same statistics, ratios;
* edges among the top ``--nodes`` nodes: batched VJPs vs one backward per target
  on the same graph (``strategy="loop"``) vs a naive loop (leaves at the neurons,
  the model's own attention and MLPs, one backward per target);
* memory of each phase: CUDA ``max_memory_allocated`` growth; on CPU the bytes autograd
  saves for backward (process RSS is useless there: the allocator reuses freed memory).

``--device cuda --synthetic-llama8b`` builds a random-weight model with Llama-3.1-8B's
shapes in bf16 (no download) and reports attribution latency and a ``--nodes`` (500)
node graph against the formula floor ceil(rows / batch) x one bare backward at that
batch size.

    .venv/bin/python benchmarks/bench_attribution.py
    .venv/bin/python benchmarks/bench_attribution.py --device cuda --synthetic-llama8b
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.attribution import attribute, edge_matrix, prune  # noqa: E402
from analysis.attribution.adapters import get_adapter  # noqa: E402

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


# ---------------------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class PeakMemory:
    """Memory a block needs beyond the resident model, in MiB.

    CUDA: growth of ``max_memory_allocated``. CPU: the allocator reuses freed memory, so
    process RSS barely moves for small prompts; instead this sums the distinct tensor
    storages autograd saves for backward, weights excluded (the activation memory of a
    backward pass)."""

    weights: frozenset[int] = frozenset()

    def __init__(self, device: str) -> None:
        self.device = device
        self.mib = float("nan")
        self._seen: dict[int, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.weights:
            self._seen[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
            self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.start) / 2**20
        else:
            self._hooks.__exit__(None, None, None)
            self.mib = sum(self._seen.values()) / 2**20


def timed(fn: Callable[[], Any], device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_times(fns: dict[str, Callable[[], Any]], reps: int, device: str) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():  # interleaved: drift hits every entry alike
            samples[name].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in samples.items()}


def peak_of(fn: Callable[[], Any], device: str) -> float:
    with PeakMemory(device) as mem:
        fn()
    return mem.mib


# ---------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------


def bare_fwd_bwd(model: Any, ids: torch.Tensor, a: int, b: int, keep: int) -> None:
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs_embeds=emb, logits_to_keep=keep, use_cache=False).logits
        m = logits[0, -1, a] - logits[0, -1, b]
        torch.autograd.grad(m, emb)


def naive_edge_loop(model: Any, attr: Any, nodes: list[Any]) -> torch.Tensor:
    """The textbook version: neurons as leaves (MLP outputs recomputed from them), the
    model's own attention, one autograd.grad per target."""
    adapter = get_adapter(model)
    sources = sorted(nodes, key=lambda n: (n.layer, n.position, n.neuron))
    targets = [n for n in sources if n.layer > sources[0].layer]
    acts: dict[int, torch.Tensor] = {}
    leaves: dict[int, torch.Tensor] = {}
    handles = []
    for layer in range(adapter.n_layers):

        def pre(mod: Any, args: tuple, layer: int = layer) -> tuple:
            acts[layer] = args[0]
            leaf = args[0].detach().requires_grad_(True)
            leaves[layer] = leaf
            return (leaf,)

        handles.append(adapter.mlp(layer).down.register_forward_pre_hook(pre))
    try:
        ids = torch.tensor([attr.input_ids], device=adapter.input_device)
        with torch.enable_grad():
            adapter.hidden(adapter.embed(ids))
    finally:
        for h in handles:
            h.remove()
    layers = sorted({n.layer for n in sources})
    per_layer = {}
    for layer in layers:
        cols = [i for i, n in enumerate(sources) if n.layer == layer]
        per_layer[layer] = (
            cols,
            torch.tensor([sources[i].position for i in cols], device=adapter.input_device),
            torch.tensor([sources[i].neuron for i in cols], device=adapter.input_device),
            torch.tensor([sources[i].activation for i in cols]),
        )
    out = torch.zeros(len(targets), len(sources))
    for t, tgt in enumerate(targets):
        below = [lay for lay in layers if lay < tgt.layer]
        grads = torch.autograd.grad(
            acts[tgt.layer][0, tgt.position, tgt.neuron],
            [leaves[lay] for lay in below],
            retain_graph=True,
        )
        for layer, g in zip(below, grads, strict=True):
            cols, pos, neu, act = per_layer[layer]
            out[t, cols] = g[0, pos, neu].float().cpu() * act
    return out


# ---------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------


def load_embedded(device: str, name: str = "gemma-3-270m") -> tuple[Any, list[int], int, int]:
    """An embedded model and the seed prompt's ids and answers' first tokens."""
    from analysis.models import embedded_spec, load_model

    spec = embedded_spec(name).model_copy(update={"device": device})
    loaded = load_model(spec, ROOT / "models_cache")
    tok = loaded.tokenizer
    ids = tok(PROMPT)["input_ids"]
    a = tok.encode(" aldosterone", add_special_tokens=False)[0]
    b = tok.encode(" renin", add_special_tokens=False)[0]
    return loaded.model, ids, a, b


LLAMA_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
}


def synthetic_llama8b(device: str, seq: int, **overrides: Any) -> tuple[Any, list[int], int, int]:
    """Random weights with Llama-3.1-8B's shapes (``overrides`` shrink it for smoke tests)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**LLAMA_8B, **overrides})
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    # Materialise straight on the device in bf16 (no 32 GB float32 detour).
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    # Non-persistent buffers (RoPE frequencies) came back uninitialised from meta.
    rotary = type(model.model.rotary_emb)(config)
    model.model.rotary_emb = rotary.to(device)
    model.eval().requires_grad_(False)
    ids = torch.randint(0, config.vocab_size, (seq,), generator=torch.Generator().manual_seed(0))
    return model, ids.tolist(), 1000, 2000


def backward_only(model: Any, ids: list[int], a: int, b: int, rows: int, device: str) -> float:
    """Time of one bare backward pass at batch ``rows`` (the VJP unit of the floor)."""
    t = torch.tensor([ids], device=device).expand(rows, -1)
    emb = model.get_input_embeddings()(t).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs_embeds=emb, logits_to_keep=1, use_cache=False).logits
        m = (logits[:, -1, a] - logits[:, -1, b]).sum()
        return timed(lambda: torch.autograd.grad(m, emb), device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--synthetic-llama8b", action="store_true")
    parser.add_argument("--seq", type=int, default=30, help="prompt length (synthetic)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--nodes", type=int, default=None, help="100 (CPU) / 500 (8B)")
    parser.add_argument("--batch", type=int, default=None, help="VJP rows per batch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if args.synthetic_llama8b:
        model, ids, a, b = synthetic_llama8b(device, args.seq)
        n_nodes, batch = args.nodes or 500, args.batch or 64
    else:
        model, ids, a, b = load_embedded(device)
        n_nodes, batch = args.nodes or 100, args.batch or 64
    ids_t = torch.tensor([ids], device=device)
    PeakMemory.weights = frozenset(p.untyped_storage().data_ptr() for p in model.parameters())
    name = "synthetic Llama-3.1-8B shapes (bf16)" if args.synthetic_llama8b else "gemma-3-270m"
    print(
        f"model: {name} | device: {device} | threads: {torch.get_num_threads()} "
        f"| tokens: {len(ids)} | reps: {args.reps}"
    )

    fns = {
        "bare fwd+bwd (logits_to_keep=1)": lambda: bare_fwd_bwd(model, ids_t, a, b, 1),
        "grad_x_act": lambda: attribute(model, None, ids, a, b, method="grad_x_act"),
        "relp": lambda: attribute(model, None, ids, a, b, method="relp"),
    }
    if not args.synthetic_llama8b:
        fns["bare fwd+bwd (full logits)"] = lambda: bare_fwd_bwd(model, ids_t, a, b, 0)
    times = median_times(fns, args.reps, device)
    floor = times["bare fwd+bwd (logits_to_keep=1)"]
    print("\nattribution (median seconds, ratio to bare fwd+bwd with logits_to_keep=1)")
    for key, value in times.items():
        mem = peak_of(fns[key], device)
        print(f"  {key:<34} {value * 1e3:9.1f} ms   x{value / floor:5.2f}   mem {mem:7.1f} MiB")

    ig = lambda: attribute(model, None, ids, a, b, method="integrated_gradients")  # noqa: E731
    ig()
    t_ig = timed(ig, device)
    print(
        f"  {'integrated_gradients (32 steps)':<34} {t_ig * 1e3:9.1f} ms   "
        f"x{t_ig / floor:5.2f}   mem {peak_of(ig, device):7.1f} MiB"
    )

    for method in ("relp", "grad_x_act"):
        rows, t_batched = bench_edges(
            model, ids, a, b, method, n_nodes, batch, device, naive=not args.skip_naive
        )
        t_unit = backward_only(model, ids, a, b, batch, device)
        floor_edges = math.ceil(rows / batch) * t_unit
        print(
            f"  formula floor ceil({rows}/{batch}) x bare backward at batch {batch} "
            f"({t_unit * 1e3:.1f} ms) = {floor_edges:.3f} s; batched / floor = "
            f"{t_batched / floor_edges:.2f}"
        )


def bench_edges(
    model: Any,
    ids: list[int],
    a: int,
    b: int,
    method: str,
    n_nodes: int,
    batch: int,
    device: str,
    naive: bool,
) -> tuple[int, float]:
    attr = attribute(model, None, ids, a, b, method=method)
    nodes = prune(attr, tau=1e-6, per_layer_top_k=10_000, max_nodes=n_nodes)
    n_targets = sum(1 for n in nodes if n.layer > min(x.layer for x in nodes))
    print(
        f"\nedges among the top {len(nodes)} {method} nodes ({n_targets} targets + "
        f"metric row, batch {batch})"
    )

    def batched() -> Any:
        return edge_matrix(model, attr, nodes, batch_size=batch)

    def loop() -> Any:
        return edge_matrix(model, attr, nodes, strategy="loop")

    result = batched()
    t_batched = min(timed(batched, device) for _ in range(3))
    print(
        f"  layer sweep of batched VJPs         {t_batched:8.3f} s   "
        f"mem {peak_of(batched, device):7.1f} MiB"
    )
    def rows() -> Any:
        return edge_matrix(model, attr, nodes, strategy="batched", batch_size=batch)

    t_rows = timed(rows, device)
    print(
        f"  previous row batches (no sweep)     {t_rows:8.3f} s   "
        f"mem {peak_of(rows, device):7.1f} MiB   x{t_rows / t_batched:5.1f} slower"
    )
    t_loop = timed(loop, device)
    diff = float((loop().raw - result.raw).abs().max())
    print(
        f"  same graph, one backward per target {t_loop:8.3f} s   "
        f"mem {peak_of(loop, device):7.1f} MiB   x{t_loop / t_batched:5.1f} slower  "
        f"(max |diff| {diff:.1e})"
    )
    if naive and method == "grad_x_act":
        t_naive = timed(lambda: naive_edge_loop(model, attr, nodes), device)
        m_naive = peak_of(lambda: naive_edge_loop(model, attr, nodes), device)
        ref = naive_edge_loop(model, attr, nodes)
        diff = float((ref - result.raw[: len(result.targets)]).abs().max())
        print(
            f"  naive loop (neuron leaves)          {t_naive:8.3f} s   "
            f"mem {m_naive:7.1f} MiB   x{t_naive / t_batched:5.1f} slower  "
            f"(max |diff| {diff:.1e})"
        )
    return n_targets + 1, t_batched


if __name__ == "__main__":
    main()
