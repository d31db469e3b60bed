"""Expected time and memory of a circuit request, before it runs, and the size caps.

The cost model is the growth benchmark's fit (``benchmarks/bench_growth.py --write-fit``,
stored in ``analysis/cost_fit.json``): per phase, ``log y = c + a log tokens + b log
params``, measured on CPU float32 at a fixed number of kept nodes. Edges scale with the
edge matrix (rows x sources, i.e. nodes squared) relative to that node count; integrated
gradients costs ``ig_steps / 16`` RelP attributions (batches of 16 steps). On a device the
fit was not measured on (CUDA, another thread count) the seconds are scaled by a nominal
factor and the estimate says so (``calibrated`` false): it is an order of magnitude, not
a promise.

Refusals (``check_size``): a request whose edge matrix (max_nodes x max_nodes) is over
``max_edge_pairs`` is refused with 413 before any forward pass; the prompt's token cap is
``max_prompt_tokens`` (checked when the prompt is formatted).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from analysis.attribution.circuit_settings import CircuitSettings
from analysis.attribution.core import METHODS
from analysis.errors import LimitExceeded

FIT_PATH = Path(__file__).with_name("cost_fit.json")
# Nominal speed-up of one CUDA GPU over the benchmark's CPU (unmeasured here).
CUDA_SPEEDUP = 20.0
# Weights held in memory per parameter, by dtype size; the fitted memory is the
# activations autograd saves on top of them.
FLOAT_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}


class Estimate(BaseModel):
    """What one circuit request is expected to cost on the serving device."""

    tokens: int
    nodes: int = Field(description="The request's node cap (max_nodes): the edge rows.")
    edge_pairs: int = Field(description="Edge matrix entries computed: nodes x nodes "
                                        "(0 with edges off).")
    attribution_s: float
    edges_s: float
    faithfulness_s: float
    total_s: float
    memory_mib: float = Field(description="Model weights plus the largest phase's saved "
                                          "activations.")
    device: str
    calibrated: bool = Field(description="False where the fit was measured on another "
                                         "device (the seconds are then scaled nominally).")


@lru_cache(maxsize=4)
def load_fit(path: Path = FIT_PATH) -> dict[str, Any]:
    return json.loads(path.read_text())


def _phase(fit: dict[str, Any], key: str, tokens: int, params: int) -> float:
    p = fit["phases"][key]
    return math.exp(p["c"] + p["a_tokens"] * math.log(max(tokens, 1))
                    + p["b_params"] * math.log(max(params, 1)))


def estimate(model: torch.nn.Module, tokens: int, settings: CircuitSettings,
             max_nodes: int, fit: dict[str, Any] | None = None) -> Estimate:
    """The expected cost of ``settings`` on a ``tokens``-long prompt for ``model``."""
    fit = fit or load_fit()
    params = sum(p.numel() for p in model.parameters())
    first = next(model.parameters())
    device = first.device.type
    nodes = settings.max_nodes or max_nodes
    attr = _phase(fit, "attr_s", tokens, params)
    if "ig_steps" in METHODS[settings.method].settings:  # a pass per batch of 16 steps
        attr *= max(1.0, settings.ig_steps / 16)
    pairs = nodes * nodes if settings.edges else 0
    edges = _phase(fit, "edges_s", tokens, params) * pairs / fit["nodes"] ** 2 if pairs else 0.0
    faith = _phase(fit, "faith_s", tokens, params) if settings.ablation else 0.0
    calibrated = device == fit["device"] and torch.get_num_threads() == fit["threads"]
    scale = 1.0
    if device == "cuda":
        scale = 1.0 / CUDA_SPEEDUP
    elif device == fit["device"]:
        scale = fit["threads"] / max(1, torch.get_num_threads())
    act_mib = max(_phase(fit, "attr_mib", tokens, params),
                  _phase(fit, "edges_mib", tokens, params) * max(1.0, nodes / fit["nodes"]))
    weights_mib = params * FLOAT_BYTES.get(first.dtype, 4) / 2**20
    bytes_scale = FLOAT_BYTES.get(first.dtype, 4) / 4
    times = [attr * scale, edges * scale, faith * scale]
    return Estimate(tokens=tokens, nodes=nodes, edge_pairs=pairs,
                    attribution_s=times[0], edges_s=times[1], faithfulness_s=times[2],
                    total_s=sum(times), memory_mib=weights_mib + act_mib * bytes_scale,
                    device=device, calibrated=calibrated)


def check_size(settings: CircuitSettings, max_nodes: int, max_edge_pairs: int) -> None:
    """Refuse (413) a request whose edge matrix would be over ``max_edge_pairs``."""
    nodes = settings.max_nodes or max_nodes
    if settings.edges and nodes * nodes > max_edge_pairs:
        raise LimitExceeded(
            f"edges among up to {nodes} nodes need {nodes * nodes} pairs, over the limit "
            f"(max_edge_pairs={max_edge_pairs}); lower max_nodes or turn edges off",
            field="max_nodes")


__all__ = ["Estimate", "check_size", "estimate", "load_fit"]
