"""The whole analyze against a bare forward+backward, for both embedded models in one run.

For each embedded model (SmolLM2-135M-Instruct, the default, and Gemma-3-270M) and the
seed prompt, contrasting the answers' first tokens:

* floor: the bare model's forward + backward of m w.r.t. the input embeddings
  (``logits_to_keep=1``), median of ``--reps`` runs interleaved with the others;
* attribution alone (``attribute``, RelP) and the whole ``run_circuit`` (attribution,
  pruning, edges among the kept nodes, faithfulness ablations) at tau 0.15 and at a node
  budget of ``--nodes`` (200: the target's "up to 200 nodes");
* the breakdown of the whole analyze from its own ``Timing`` (median per phase), and each
  phase as a ratio of the floor;
* nnsight's overhead: an intervention (``intervene``: one nnsight trace, 2 rows) and the
  6-row faithfulness forward, each against the bare forward of the same rows with no
  access layer at all.

Ratios are printed, never asserted: the suite has no timed assertions.

    .venv/bin/python benchmarks/bench_analyze.py
    .venv/bin/python benchmarks/bench_analyze.py --models smollm2-135m-instruct --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_attribution import bare_fwd_bwd, load_embedded, median_times  # noqa: E402

from analysis.attribution import (  # noqa: E402
    CircuitSettings,
    NeuronEdit,
    attribute,
    intervene,
    run_circuit,
)
from analysis.attribution.adapters import get_adapter  # noqa: E402
from analysis.embedded import EMBEDDED  # noqa: E402
from analysis.nnsight_traces import patched_last  # noqa: E402

PHASES = ("attribution_s", "prune_s", "edges_s", "faithfulness_s", "total_s")


def bench_model(name: str, device: str, reps: int, nodes: int) -> None:
    model, ids, a, b = load_embedded(device, name)
    tensor = torch.tensor([ids], device=device)
    settings = {"tau 0.15": {"tau": 0.15, "max_nodes": 200},
                f"{nodes} nodes": {"tau": 1e-6, "max_nodes": nodes}}
    runs: dict[str, list[Any]] = {k: [] for k in settings}

    def circuit(label: str) -> Any:
        result = run_circuit(model, None, ids, a, b,
                             CircuitSettings(method="relp", **settings[label]))
        runs[label].append(result)
        return result

    fns = {
        "fwd+bwd": lambda: bare_fwd_bwd(model, tensor, a, b, 1),
        "attribution": lambda: attribute(model, None, ids, a, b, method="relp"),
        **{f"analyze {k}": (lambda k=k: circuit(k)) for k in settings},
    }
    times = median_times(fns, reps, device)
    floor = times["fwd+bwd"]
    print(f"\n== {name} ({device}, {len(ids)} tokens, {model.config.num_hidden_layers} "
          f"layers x {model.config.intermediate_size} neurons) ==")
    print(f"{'':28}{'median s':>10}{'x fwd+bwd':>11}")
    for key, seconds in times.items():
        print(f"{key:28}{seconds:10.3f}{seconds / floor:11.2f}")
    for label, results in runs.items():
        last = results[-1]
        print(f"-- analyze {label}: {len(last.nodes)} nodes, {len(last.edges)} edges; "
              "phases (median s, x fwd+bwd):")
        for phase in PHASES:
            value = statistics.median(getattr(r.timing, phase) for r in results)
            print(f"   {phase[:-2]:24}{value:10.3f}{value / floor:11.2f}")


def bench_access(name: str, device: str, reps: int) -> None:
    model, ids, a, b = load_embedded(device, name)
    adapter = get_adapter(model)
    tensor = torch.tensor([ids], device=device)

    def bare(rows: int) -> Any:
        with torch.no_grad():
            return adapter.hidden(adapter.embed(tensor).expand(rows, -1, -1))[:, -1]

    edits = [NeuronEdit(layer=adapter.n_layers // 2, neuron=7)]
    fns = {
        "bare forward, 2 rows": lambda: bare(2),
        "intervene (nnsight)": lambda: intervene(model, None, ids, edits, a, b),
        "bare forward, 6 rows": lambda: bare(6),
        "6-row patched (nnsight)": lambda: patched_last(
            adapter, ids, 6, lambda layer, h: torch.where(h > 1e9, 0.0, h)),
    }
    times = median_times(fns, reps, device)
    print(f"-- nnsight access on {name}: median s, x the bare forward of the same rows")
    for key, bare_key in (("intervene (nnsight)", "bare forward, 2 rows"),
                          ("6-row patched (nnsight)", "bare forward, 6 rows")):
        print(f"   {key:26}{times[key]:10.4f}{times[key] / times[bare_key]:11.2f}"
              f"   (bare {times[bare_key]:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(EMBEDDED))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        bench_model(name, args.device, args.reps, args.nodes)
        bench_access(name, args.device, args.reps)


if __name__ == "__main__":
    main()
