"""Plain-text readout of a circuit, in the lab notes' vocabulary.

m = logit(" aldosterone") - logit(" renin") = -1.16
Circuit: 51 nodes (tau 0.15: |influence| >= 0.174), influence sum -3.36 (net toward " renin")
Toward " renin" (B): 30 nodes, influence -6.80
  L16/N1998 influence=-0.80  pos 13 " is"
"""

from __future__ import annotations

import json

from analysis.attribution.results import METRIC_NODE_ID, CircuitResult, Node
from analysis.neuron_ref import neuron_name


def show_token(text: str | None, token_id: int | None = None) -> str:
    if text is None:
        return f"#{token_id}" if token_id is not None else "?"
    return json.dumps(text, ensure_ascii=False)


def node_line(node: Node) -> str:
    where = f"pos {node.position} {show_token(node.token, node.token_id)}"
    line = f"  {node.name:<12} influence={node.influence:+.2f}  {where}  act={node.activation:+.2f}"
    if node.label:
        line += f"  [{node.label}]"
    return line


def render_summary(result: CircuitResult, max_nodes: int = 20) -> str:
    a = show_token(result.target_a_text, result.target_a)
    b = show_token(result.target_b_text, result.target_b) if result.target_b is not None else None
    p = result.params
    lines = [
        f"Model {result.model_name or '?'} | method {p.method} | {len(result.input_ids)} tokens",
    ]
    if b is None:
        lines.append(f"m = logit({a}) = {result.m:+.2f}")
        name_a, name_b = f"promoting {a}", f"suppressing {a}"
    else:
        lines.append(f"m = logit({a}) - logit({b}) = {result.m:+.2f}")
        name_a, name_b = f"Toward {a} (A)", f"Toward {b} (B)"
    if result.prob_a is not None:
        probs = f"p({a}) = {result.prob_a:.3f}"
        if b is not None and result.prob_b is not None:
            probs += f", p({b}) = {result.prob_b:.3f}"
        lines.append(probs)
    c = result.completeness
    comp = f"Completeness: all influences sum to {c.influence_sum:+.2f}"
    if c.baseline is not None:
        comp += f" vs m - m0 = {c.target:+.2f} (m0 = {c.baseline:+.2f}, {c.baseline_kind} baseline)"
    elif c.ratio is not None:
        comp += f" ({c.ratio:.2f} of m)"
    if c.embedding_sum is not None:
        comp += f"; input-embedding relevance {c.embedding_sum:+.2f}"
    lines.append(comp)

    if p.mode == "tau":
        rule = f"tau {p.tau:g}: |influence| >= {p.tau * abs(result.m):.3f}"
    else:
        rule = f"cumulative mass {p.mass:g}"
    total = result.influence_sum
    net = a if total > 0 else (b if b is not None else f"against {a}")
    lines.append(
        f"Circuit: {len(result.nodes)} nodes ({rule}; per-layer top {p.per_layer_top_k}), "
        f"kept nodes' influence sum {total:+.2f} (net toward {net})"
    )
    dropped = [n for n in result.always_on if n.dropped]
    if dropped:
        source = f" (with {result.always_on_source})" if result.always_on_source else ""
        lines.append(f"Always-on: {len(dropped)} neuron{'s' if len(dropped) != 1 else ''} "
                     f"left out of the kept nodes{source}: "
                     + ", ".join(neuron_name(n.layer, n.neuron) for n in dropped[:8])
                     + (" ..." if len(dropped) > 8 else ""))
    for title, group in (
        (name_b, [n for n in result.nodes if n.influence <= 0]),
        (name_a, [n for n in result.nodes if n.influence > 0]),
    ):
        if not group:
            continue
        group = sorted(group, key=lambda n: -abs(n.influence))
        subtotal = sum(n.influence for n in group)
        lines.append(f"{title}: {len(group)} nodes, influence {subtotal:+.2f}")
        lines += [node_line(n) for n in group[:max_nodes]]
        if len(group) > max_nodes:
            lines.append(f"  ... {len(group) - max_nodes} more")

    f = result.faithfulness
    if f is not None:
        lines.append(f"Faithfulness ({f.mode} ablation): m clean {f.m_clean:+.2f}")
        lines.append(f"  without the circuit        m = {f.m_without_circuit:+.2f}")
        lines.append(f"  without nodes toward A     m = {f.m_without_towards_a:+.2f}")
        lines.append(f"  without nodes toward B     m = {f.m_without_towards_b:+.2f}")
        rec = f" (recovers {f.recovered:.0%})" if f.recovered is not None else ""
        lines.append(f"  circuit only               m = {f.m_circuit_only:+.2f}{rec}")
        lines.append(f"  all MLP neurons ablated    m = {f.m_all_ablated:+.2f}")
    if result.edges:
        n_metric = sum(1 for e in result.edges if e.target == METRIC_NODE_ID)
        lines.append(
            f"Edges: {len(result.edges) - n_metric} between nodes "
            f"({p.edge_normalization}), {n_metric} to the metric"
        )
    t = result.timing
    lines.append(
        f"Time: {t.total_s:.2f}s (attribution {t.attribution_s:.2f}s, edges {t.edges_s:.2f}s, "
        f"faithfulness {t.faithfulness_s:.2f}s)"
    )
    return "\n".join(lines)
