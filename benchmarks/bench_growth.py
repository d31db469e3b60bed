"""How a circuit's cost grows with the prompt and the model (ratios, never assertions).

For each model (the two embedded models, then random-weight Llama-shaped models of
~0.5B and ~1B parameters built from a config, no download) and each prompt length, in
one process: the bare forward+backward of m (``logits_to_keep=1``) as the unit, then
RelP attribution, edges among the top ``--nodes`` nodes (the layer sweep, and the
previous row-batched method where ``--compare-edges``), the faithfulness forward, and
the memory each phase's backward saves (the bytes autograd keeps, weights excluded;
process RSS is useless on CPU). Prints a table of seconds and ratios, then the growth
exponents ``t ~ seq^a`` per model and ``t ~ params^b`` at the shortest prompt, by least
squares in log-log. ``--write-fit PATH`` stores the fitted cost model that
``analysis/estimate.py`` reads.

    .venv/bin/python benchmarks/bench_growth.py --quick      # well under 10 min, 2 cores
    .venv/bin/python benchmarks/bench_growth.py              # 16..1024 tokens, 4 models
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.attribution import attribute, edge_matrix, faithfulness, prune  # noqa: E402
from benchmarks.bench_attribution import PeakMemory, bare_fwd_bwd, timed  # noqa: E402

TEXT = (
    "Aldosterone is the principal mineralocorticoid hormone in humans. It acts on the "
    "kidney to retain sodium and water, and so it raises blood volume and pressure. "
)
PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"

RANDOM_LLAMAS: dict[str, dict[str, Any]] = {
    # Qwen2.5-0.5B-like and Llama-3.2-1B-like shapes (random weights, float32 on CPU).
    "llama-0.5b (random)": dict(hidden_size=896, intermediate_size=4864,
                                num_hidden_layers=24, num_attention_heads=14,
                                num_key_value_heads=2, vocab_size=32000),
    "llama-1b (random)": dict(hidden_size=2048, intermediate_size=8192,
                              num_hidden_layers=16, num_attention_heads=32,
                              num_key_value_heads=8, vocab_size=32000),
}


def random_llama(shape: dict[str, Any]) -> tuple[Any, None]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=True)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    model.model.rotary_emb = type(model.model.rotary_emb)(config)
    return model.eval().requires_grad_(False), None


def embedded(name: str) -> tuple[Any, Any]:
    from analysis.models import embedded_spec, load_model

    loaded = load_model(embedded_spec(name).model_copy(update={"device": "cpu"}),
                        ROOT / "models_cache")
    return loaded.model, loaded.tokenizer


def prompt_ids(tokenizer: Any, vocab: int, length: int) -> list[int]:
    """``length`` tokens ending with the seed question (random ids without a tokenizer)."""
    if tokenizer is None:
        gen = torch.Generator().manual_seed(length)
        return torch.randint(10, vocab, (length,), generator=gen).tolist()
    tail = tokenizer(PROMPT)["input_ids"]
    body = tokenizer(TEXT * (1 + length // 20), add_special_tokens=False)["input_ids"]
    head = tail[:1] if tail and tail[0] == tokenizer.bos_token_id else []
    tail = tail[len(head):]
    return (head + body)[: max(len(head), length - len(tail))] + tail


def fit(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den if den else 0.0


def measure(model: Any, ids: list[int], nodes_wanted: int, compare: bool,
            reps: int) -> dict[str, float]:
    a, b = 5, 17
    ids_t = torch.tensor([ids])

    def bare() -> None:
        bare_fwd_bwd(model, ids_t, a, b, 1)

    def attr_fn() -> Any:
        return attribute(model, None, ids, a, b, method="relp")

    bare()
    t_bare = min(timed(bare, "cpu") for _ in range(reps))
    attr = attr_fn()
    t_attr = min(timed(attr_fn, "cpu") for _ in range(reps))
    nodes = prune(attr, tau=1e-6, per_layer_top_k=100_000, max_nodes=nodes_wanted)
    t_edges = timed(lambda: edge_matrix(model, attr, nodes), "cpu")
    t_faith = timed(lambda: faithfulness(model, attr, nodes), "cpu")
    row = {"tokens": len(ids), "nodes": len(nodes), "bare_s": t_bare, "attr_s": t_attr,
           "edges_s": t_edges, "faith_s": t_faith}
    if compare:
        row["edges_old_s"] = timed(
            lambda: edge_matrix(model, attr, nodes, strategy="batched"), "cpu")
    for key, fn in (("bare", bare), ("attr", attr_fn),
                    ("edges", lambda: edge_matrix(model, attr, nodes))):
        with PeakMemory("cpu") as mem:
            fn()
        row[f"{key}_mib"] = mem.mib
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="16/64/256 tokens on the embedded models, 16/64 on the random "
                             "ones, 64 nodes, one rep")
    parser.add_argument("--lengths", type=int, nargs="*", default=None)
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--compare-edges", action="store_true",
                        help="also time the previous row-batched edges")
    parser.add_argument("--write-fit", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 is steadier on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = args.lengths or ([16, 64, 256] if args.quick else [16, 64, 256, 1024])
    big_lengths = [n for n in lengths if n <= 64] if args.quick else lengths
    n_nodes = args.nodes or (64 if args.quick else 170)
    reps = 1 if args.quick else 3
    names = args.models or ["smollm2-135m-instruct", "gemma-3-270m", *RANDOM_LLAMAS]
    load = os.getloadavg()
    print(f"threads {torch.get_num_threads()} | load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} | nodes {n_nodes} | relp | cpu float32")
    print(f"{'model':<24}{'params':>8}{'tok':>6}{'bare s':>9}{'attr x':>8}{'edges x':>9}"
          f"{'old x':>7}{'faith x':>8}{'bare MiB':>10}{'attr MiB':>10}{'edge MiB':>10}")
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for name in names:
        loader: Callable[[], tuple[Any, Any]] = (
            (lambda n=name: random_llama(RANDOM_LLAMAS[n])) if name in RANDOM_LLAMAS
            else (lambda n=name: embedded(n)))
        model, tok = loader()
        PeakMemory.weights = frozenset(p.untyped_storage().data_ptr()
                                       for p in model.parameters())
        params = sum(p.numel() for p in model.parameters())
        vocab = model.get_input_embeddings().weight.shape[0]
        rows = []
        for length in (big_lengths if name in RANDOM_LLAMAS else lengths):
            r = measure(model, prompt_ids(tok, vocab, length), n_nodes, args.compare_edges,
                        reps)
            rows.append(r)
            old = f"{r['edges_old_s'] / r['bare_s']:7.2f}" if "edges_old_s" in r else "      -"
            print(f"{name:<24}{params / 1e6:7.0f}M{r['tokens']:6d}{r['bare_s']:9.3f}"
                  f"{r['attr_s'] / r['bare_s']:8.2f}{r['edges_s'] / r['bare_s']:9.2f}{old}"
                  f"{r['faith_s'] / r['bare_s']:8.2f}{r['bare_mib']:10.1f}"
                  f"{r['attr_mib']:10.1f}{r['edges_mib']:10.1f}", flush=True)
        results[name] = {"params": params, "d_model": model.config.hidden_size,
                         "layers": model.config.num_hidden_layers, "rows": rows}
        del model
    print(f"\ngrowth exponents t ~ tokens^a (per model; memory likewise), "
          f"{time.perf_counter() - started:.0f} s in all")
    exps: dict[str, dict[str, float]] = {}
    for name, res in results.items():
        toks = [r["tokens"] for r in res["rows"]]
        if len(toks) < 2:
            continue
        exps[name] = {k: fit(toks, [r[k] for r in res["rows"]])
                      for k in ("bare_s", "attr_s", "edges_s", "faith_s", "bare_mib",
                                "attr_mib", "edges_mib")}
        print(f"  {name:<24}" + "  ".join(f"{k} {v:4.2f}" for k, v in exps[name].items()))
    shortest = min(lengths)
    pts = [(res["params"], r) for res in results.values() for r in res["rows"]
           if r["tokens"] <= shortest + 2]
    if len(pts) >= 2:
        print(f"t ~ params^b at ~{shortest} tokens: " + "  ".join(
            f"{k} {fit([p for p, _ in pts], [r[k] for _, r in pts]):4.2f}"
            for k in ("bare_s", "attr_s", "edges_s", "faith_s")))
    if args.write_fit:
        write_fit(args.write_fit, results, n_nodes)
        print(f"fit written to {args.write_fit}")


def write_fit(path: Path, results: dict[str, dict[str, Any]], n_nodes: int) -> None:
    """Per phase, ``log y = c + a log tokens + b log params`` over every measured row
    (edges scale with the kept-node count, rows x sources, relative to ``n_nodes``)."""
    samples = [(res["params"], r) for res in results.values() for r in res["rows"]]
    phases: dict[str, dict[str, float]] = {}
    for key in ("bare_s", "attr_s", "edges_s", "faith_s", "attr_mib", "edges_mib"):
        phases[key] = _plane([p for p, _ in samples], [r["tokens"] for _, r in samples],
                             [r[key] for _, r in samples])
    payload = {"device": "cpu", "threads": torch.get_num_threads(), "nodes": n_nodes,
               "measured": time.strftime("%Y-%m-%d"), "phases": phases}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def _plane(params: list[float], tokens: list[float], ys: list[float]) -> dict[str, float]:
    x = torch.tensor([[1.0, math.log(t), math.log(p)] for p, t in
                      zip(params, tokens, strict=True)], dtype=torch.float64)
    y = torch.tensor([math.log(max(v, 1e-6)) for v in ys], dtype=torch.float64)
    coef = torch.linalg.lstsq(x, y[:, None]).solution[:, 0].tolist()
    return {"c": coef[0], "a_tokens": coef[1], "b_params": coef[2]}


if __name__ == "__main__":
    main()
