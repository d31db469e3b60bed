"""``run_circuit``: attribution -> pruning -> edges -> faithfulness, timed, as one result."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch

from analysis.attribution.adapters import get_adapter
from analysis.attribution.always_on import (
    KnownAlwaysOn,
    detect_always_on,
    masked_influence,
)
from analysis.attribution.circuit_settings import CircuitSettings
from analysis.attribution.core import Attribution, attribute, decode_tokens
from analysis.attribution.edges import compute_edges
from analysis.attribution.patching import faithfulness as measure_faithfulness
from analysis.attribution.prune import neuron_totals, prune
from analysis.attribution.results import METRIC_NODE_ID, CircuitResult, Timing, TokenInfo, cache_key


def run_circuit(
    model: torch.nn.Module,
    tokenizer: object | None,
    input_ids: Sequence[int] | torch.Tensor,
    target_a: int,
    target_b: int | None = None,
    settings: CircuitSettings | None = None,
    *,
    model_name: str | None = None,
    model_revision: str | None = None,
    prompt: str | None = None,
    labels: dict[str, str] | None = None,
    on_attribution: Callable[[Attribution], None] | None = None,
    known_always_on: KnownAlwaysOn | None = None,
) -> CircuitResult:
    """Everything for one prompt, under one validated ``CircuitSettings`` (default: the
    defaults). ``labels`` maps ``L{layer}/N{neuron}`` to user labels; ``on_attribution``
    sees the dense attribution (a comparison keeps every neuron's total, not only the
    kept ones)."""
    started = time.perf_counter()
    s = settings or CircuitSettings()
    get_adapter(model)  # unsupported architectures fail before the forward pass

    attr = attribute(
        model,
        tokenizer,
        input_ids,
        target_a,
        target_b,
        method=s.method,
        ig_steps=s.ig_steps,
        ig_baseline=s.ig_baseline,
    )
    timing = Timing(attribution_s=attr.seconds)
    if on_attribution is not None:
        on_attribution(attr)

    t0 = time.perf_counter()
    always_on = detect_always_on(attr.activation, attr.influence, dropped=s.drop_always_on,
                                 known=known_always_on)
    pruned = (dataclasses.replace(attr, influence=masked_influence(attr.influence, always_on))
              if s.drop_always_on and always_on else attr)
    nodes = prune(pruned, tau=s.tau, per_layer_top_k=s.per_layer_top_k, mode=s.mode,
                  mass=s.mass, max_nodes=s.max_nodes, min_influence=s.min_influence)
    flagged = {(f.layer, f.neuron) for f in always_on}
    for node in nodes:
        node.always_on = (node.layer, node.neuron) in flagged
        if labels:
            node.label = labels.get(node.name)
    timing.prune_s = time.perf_counter() - t0

    edge_list = []
    if s.edges and nodes:
        t0 = time.perf_counter()
        edge_list = compute_edges(model, attr, nodes, normalization=s.edge_normalization,
                                  threshold=s.edge_threshold)
        direct = {e.source: e.raw for e in edge_list if e.target == METRIC_NODE_ID}
        for node in nodes:
            node.direct_effect = direct.get(node.node_id)
        timing.edges_s = time.perf_counter() - t0

    faith = None
    if s.ablation is not None:
        t0 = time.perf_counter()
        faith = measure_faithfulness(model, attr, nodes, mode=s.ablation)
        timing.faithfulness_s = time.perf_counter() - t0

    params = s.normalized()
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
        always_on=always_on,
        faithfulness=faith,
        timing=timing,
        cache_key=cache_key(
            name or "", model_revision, attr.input_ids, attr.target_a, attr.target_b, params,
            always_on_source=known_always_on.source if known_always_on else None,
        ),
        always_on_source=known_always_on.source if known_always_on else None,
    )
    result._attribution = attr
    timing.total_s = time.perf_counter() - started
    return result
