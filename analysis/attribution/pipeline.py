"""``run_circuit``: attribution -> pruning -> edges -> faithfulness, timed, as one result."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from analysis.attribution.adapters import get_adapter
from analysis.attribution.core import Attribution, attribute, check_method, decode_tokens
from analysis.attribution.edges import compute_edges
from analysis.attribution.patching import faithfulness as measure_faithfulness
from analysis.attribution.prune import check_prune_params, neuron_totals, prune
from analysis.attribution.results import (
    CircuitResult,
    Timing,
    TokenInfo,
    cache_key,
    make_params,
)
from analysis.errors import InputError


def run_circuit(
    model: torch.nn.Module,
    tokenizer: object | None,
    input_ids: Sequence[int] | torch.Tensor,
    target_a: int,
    target_b: int | None = None,
    *,
    method: str = "relp",
    ig_steps: int = 32,
    ig_baseline: str = "auto",
    tau: float = 0.15,
    per_layer_top_k: int = 300,
    mode: str = "tau",
    mass: float = 0.8,
    max_nodes: int | None = 200,
    edges: bool = True,
    edge_normalization: str = "none",
    edge_threshold: float = 0.0,
    edge_batch_size: int = 32,
    ablation: str | None = "zero",
    model_name: str | None = None,
    model_revision: str | None = None,
    prompt: str | None = None,
    labels: dict[str, str] | None = None,
    on_attribution: Callable[[Attribution], None] | None = None,
) -> CircuitResult:
    """Everything for one prompt. ``labels`` maps ``L{layer}/N{neuron}`` to user labels;
    ``on_attribution`` sees the dense attribution (a comparison keeps every neuron's
    total, not only the kept ones).

    Parameters are validated before any model work, so a bad request fails fast.
    """
    started = time.perf_counter()
    check_method(method)
    check_prune_params(tau, per_layer_top_k, mode, mass, max_nodes)
    if edge_normalization not in ("none", "flow"):
        raise InputError("edge normalization must be 'none' or 'flow'", field="edge_normalization")
    if ablation not in (None, "zero", "mean"):
        raise InputError("ablation must be 'zero', 'mean' or none", field="ablation")
    if not isinstance(edge_threshold, int | float) or edge_threshold < 0:
        raise InputError("edge threshold must be >= 0", field="edge_threshold")
    get_adapter(model)  # unsupported architectures fail before the forward pass

    attr = attribute(
        model,
        tokenizer,
        input_ids,
        target_a,
        target_b,
        method=method,
        ig_steps=ig_steps,
        ig_baseline=ig_baseline,
    )
    timing = Timing(attribution_s=attr.seconds)
    if on_attribution is not None:
        on_attribution(attr)

    t0 = time.perf_counter()
    nodes = prune(
        attr, tau=tau, per_layer_top_k=per_layer_top_k, mode=mode, mass=mass, max_nodes=max_nodes
    )
    if labels:
        for node in nodes:
            node.label = labels.get(node.name)
    timing.prune_s = time.perf_counter() - t0

    edge_list = []
    if edges and nodes:
        t0 = time.perf_counter()
        edge_list = compute_edges(
            model,
            attr,
            nodes,
            normalization=edge_normalization,
            threshold=edge_threshold,
            batch_size=edge_batch_size,
        )
        direct = {e.source: e.raw for e in edge_list if e.target == "metric"}
        for node in nodes:
            node.direct_effect = direct.get(node.node_id)
        timing.edges_s = time.perf_counter() - t0

    faith = None
    if ablation is not None:
        t0 = time.perf_counter()
        faith = measure_faithfulness(model, attr, nodes, mode=ablation)
        timing.faithfulness_s = time.perf_counter() - t0

    params = make_params(
        method=method,
        ig_steps=ig_steps,
        ig_baseline=ig_baseline,
        tau=tau,
        per_layer_top_k=per_layer_top_k,
        mode=mode,
        mass=mass,
        max_nodes=max_nodes,
        edges=edges,
        edge_normalization=edge_normalization,
        edge_threshold=edge_threshold,
        ablation=ablation,
    )
    texts = attr.tokens or [None] * len(attr.input_ids)
    answers = [attr.target_a] + ([attr.target_b] if attr.target_b is not None else [])
    answer_texts = decode_tokens(tokenizer, answers)
    name = model_name  # never the config's path: operator paths stay private
    result = CircuitResult(
        model_name=name,
        model_revision=model_revision,
        prompt=prompt,
        input_ids=attr.input_ids,
        tokens=[
            TokenInfo(position=i, id=t, text=x)
            for i, (t, x) in enumerate(zip(attr.input_ids, texts, strict=True))
        ],
        target_a=attr.target_a,
        target_b=attr.target_b,
        target_a_text=answer_texts[0] if answer_texts else None,
        target_b_text=answer_texts[1] if answer_texts and len(answers) == 2 else None,
        m=attr.m,
        logit_a=attr.logit_a,
        logit_b=attr.logit_b,
        prob_a=attr.prob_a,
        prob_b=attr.prob_b,
        params=params,
        completeness=attr.completeness,
        nodes=nodes,
        neurons=neuron_totals(attr, nodes),
        edges=edge_list,
        faithfulness=faith,
        timing=timing,
        cache_key=cache_key(
            name or "", model_revision, attr.input_ids, attr.target_a, attr.target_b, params
        ),
    )
    result._attribution = attr
    timing.total_s = time.perf_counter() - started
    return result
