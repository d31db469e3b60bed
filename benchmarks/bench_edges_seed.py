"""Edge time on the seed prompt, as a ratio to the same process's bare forward+backward.

The seed prompt ("The primary hormone involved in the regulation of blood pressure and
volume is", A=" aldosterone", B=" renin") on the embedded models, pruned at the app's
defaults (tau 0.15, max_nodes 200); one thread. Edges by the row-batched method
(``batched``), the sweep carrying every row to its floor (``sweep``, split off) and the
sweep with the split (``split``, the default): interleaved, median of ``--reps``.

    .venv/bin/python benchmarks/bench_edges_seed.py [--reps 3] [--models smollm2-135m-instruct]
"""

# ruff: noqa: B023  (every lambda is timed at once, inside its own iteration)
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.answers import resolve_contrast  # noqa: E402
from analysis.attribution import attribute, edge_matrix, prune  # noqa: E402
from analysis.attribution.edges import _LayerSweep  # noqa: E402
from analysis.prompts import PromptSpec, format_prompt  # noqa: E402
from benchmarks.bench_attribution import bare_fwd_bwd, timed  # noqa: E402
from benchmarks.bench_growth import embedded  # noqa: E402

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--methods", nargs="+", default=["relp", "grad_x_act"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.models:
        model, tok = embedded(name)
        ids = format_prompt(tok, PromptSpec(prompt=PROMPT), 512).input_ids
        a, b = resolve_contrast(tok, " aldosterone", " renin")
        ta, tb = a.token_id, b.token_id
        ids_t = torch.tensor([ids])
        for method in args.methods:
            attr = attribute(model, None, ids, ta, tb, method=method)
            nodes = prune(attr, tau=0.15, max_nodes=200)
            ref = edge_matrix(model, attr, nodes, strategy="batched")
            new = edge_matrix(model, attr, nodes)
            diff = float((new.raw - ref.raw).abs().max() / ref.raw.abs().max())
            targets = [n for n in new.sources if n.layer > new.sources[0].layer]
            split = _LayerSweep.__new__(_LayerSweep)  # cost model only, no forward
            split.adapter, split.sources, split.targets = _adapter(model), new.sources, targets
            from analysis.attribution.edges import reachable_floor
            split.floor = [*reachable_floor(new.sources, targets), new.sources[0].layer]
            k = split.choose_split()
            runs: dict[str, list[float]] = {"bare": [], "batched": [], "sweep": [], "split": []}
            bare_fwd_bwd(model, ids_t, ta, tb, 1)
            for _ in range(args.reps):
                runs["bare"].append(min(timed(lambda: bare_fwd_bwd(model, ids_t, ta, tb, 1),
                                              "cpu") for _ in range(3)))
                runs["batched"].append(timed(lambda: edge_matrix(
                    model, attr, nodes, strategy="batched"), "cpu"))
                runs["sweep"].append(timed(lambda: edge_matrix(model, attr, nodes, split=None),
                                           "cpu"))
                runs["split"].append(timed(lambda: edge_matrix(model, attr, nodes), "cpu"))
            med = {key: statistics.median(v) for key, v in runs.items()}
            low = sum(1 for n in new.sources if k is not None and n.layer < k)
            load = os.getloadavg()
            print(f"{name} {method}: {len(ids)} tok, {len(nodes)} nodes, split {k} "
                  f"({low} sources below), max|diff|/max|raw| {diff:.1e}; bare {med['bare']:.3f}s; "
                  f"edges x bare: batched {med['batched'] / med['bare']:.2f}, sweep "
                  f"{med['sweep'] / med['bare']:.2f}, split {med['split'] / med['bare']:.2f}"
                  f" | load {load[0]:.2f} {load[1]:.2f}", flush=True)


def _adapter(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    from analysis.attribution.adapters import get_adapter
    return get_adapter(model)


if __name__ == "__main__":
    main()
