"""Direct-effect edges: batched VJPs vs a per-target loop, finite differences and a
hand-written RelP model."""

from __future__ import annotations

import pytest
import torch

from analysis.attribution import (
    Node,
    attribute,
    compute_edges,
    edge_matrix,
    prune,
)
from analysis.attribution.edges import reachable_floor
from analysis.attribution.prune import make_node
from analysis.errors import InputError
from tests.unit.tiny_models import ARCHS, build, down_module, manual_llama, random_ids

A, B = 5, 17


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["grad_x_act", "relp"])
def test_batched_equals_one_backward_per_target(arch: str, method: str) -> None:
    model = build(arch, layers=3)
    attr = attribute(model, None, random_ids(7), A, B, method=method)
    nodes = prune(attr, tau=0.001, per_layer_top_k=15)
    batched = edge_matrix(model, attr, nodes, strategy="batched", batch_size=7)
    loop = edge_matrix(model, attr, nodes, strategy="loop")
    assert len(batched.targets) > 10
    torch.testing.assert_close(batched.raw, loop.raw, rtol=1e-5, atol=1e-6)
    assert batched.raw.abs().max() > 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["grad_x_act", "relp"])
def test_layer_sweep_equals_previous_method(arch: str, method: str) -> None:
    """The sweep (rows join at their layer, leave below their lowest reachable source,
    MLPs outside autograd) gives the previous row-batched method's matrix, with chunks
    that straddle carried and newly joining rows."""
    model = build(arch, layers=4)
    attr = attribute(model, None, random_ids(9), A, B, method=method)
    nodes = prune(attr, tau=0.001, per_layer_top_k=15)
    old = edge_matrix(model, attr, nodes, strategy="batched", batch_size=7)
    for size in (3, 64):
        new = edge_matrix(model, attr, nodes, strategy="sweep", batch_size=size)
        assert [n.key for n in new.targets] == [n.key for n in old.targets]
        torch.testing.assert_close(new.raw, old.raw, rtol=1e-5, atol=1e-6)
    assert old.raw.abs().max() > 0


def test_sweep_skips_rows_that_reach_no_source() -> None:
    """A target whose every earlier-layer source sits at a later position has no edges:
    the sweep never starts its row (reachable_floor None) and leaves it zero."""
    model = build("llama", layers=3)
    attr = attribute(model, None, random_ids(6), A, B, method="relp")
    picks = [(0, 4, 3), (1, 2, 5), (2, 5, 7), (2, 1, 9)]
    nodes = [make_node(attr, *p) for p in picks]

    matrix = edge_matrix(model, attr, nodes)
    floors = dict(zip([n.key for n in matrix.targets],
                      reachable_floor(matrix.sources, matrix.targets), strict=True))
    assert floors == {(1, 2, 5): None, (2, 1, 9): None, (2, 5, 7): 0}
    old = edge_matrix(model, attr, nodes, strategy="loop")
    torch.testing.assert_close(matrix.raw, old.raw, rtol=1e-5, atol=1e-6)
    row = {n.key: i for i, n in enumerate(matrix.targets)}
    assert matrix.raw[row[(2, 1, 9)]].abs().max() == 0
    assert matrix.raw[row[(2, 5, 7)]].abs().max() > 0


def _finite_difference_edges(
    model: torch.nn.Module,
    ids: list[int],
    source: tuple[int, int, int],
    target: tuple[int, int, int] | None,
    eps: float = 1e-2,
) -> float:
    """d a_t / d a_s (or d m / d a_s when target is None) by central differences, with every
    MLP activation between them held at its clean value (plain HF forward + hooks)."""
    n_layers = model.config.num_hidden_layers
    clean: dict[int, torch.Tensor] = {}
    hooks = [
        down_module(model, i).register_forward_pre_hook(
            lambda mod, a, i=i: clean.__setitem__(i, a[0].detach().clone())
        )
        for i in range(n_layers)
    ]
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    ls, ps, ns = source
    last = target[0] if target is not None else n_layers

    def run(delta: float) -> float:
        seen: dict[int, torch.Tensor] = {}

        def pre(mod: torch.nn.Module, args: tuple, layer: int) -> tuple:
            seen[layer] = args[0]
            if layer == ls:
                h = clean[layer].clone()
                h[0, ps, ns] += delta
                return (h,)
            if ls < layer < last:
                return (clean[layer],)  # stop every path through an intermediate MLP
            return args

        hs = [
            down_module(model, i).register_forward_pre_hook(lambda mod, a, i=i: pre(mod, a, i))
            for i in range(n_layers)
        ]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        for h in hs:
            h.remove()
        if target is None:
            return float(logits[A] - logits[B])
        lt, pt, nt = target
        return float(seen[lt][0, pt, nt])

    # Fourth-order central difference: HF norms compute in float32 even in a float64
    # model, so a small step would drown in rounding noise; a larger one needs the
    # higher-order stencil to keep truncation error negligible.
    return (run(-2 * eps) - 8 * run(-eps) + 8 * run(eps) - run(2 * eps)) / (12 * eps)


# GPT-2's LayerNorm really computes in float64; Llama's and Gemma's RMSNorm compute in
# float32 even in a float64 model, which limits finite differences to ~1e-3 relative.
# The loose tolerance still catches definition errors (a path through the intermediate
# MLP, a wrong sign or position), which are O(1); the exact check is the hand-written
# model below.
@pytest.mark.parametrize(
    ("arch", "rel", "abs_"), [("gpt2", 1e-5, 1e-8), ("llama", 2e-2, 1e-4), ("gemma3", 2e-2, 1e-4)]
)
def test_grad_edges_match_finite_differences(arch: str, rel: float, abs_: float) -> None:
    model = build(arch, dtype=torch.float64, layers=3)
    ids = random_ids(6)
    attr = attribute(model, None, ids, A, B, method="grad_x_act")
    # Sources in layer 0, targets in layer 2: layer 1's MLP must not carry the effect.
    picks = [(0, 1, 3), (0, 4, 10), (0, 5, 7), (2, 5, 11), (2, 4, 2), (1, 5, 0)]
    nodes = [make_node(attr, *p) for p in picks]
    matrix = edge_matrix(model, attr, nodes, batch_size=3)
    col = {n.key: i for i, n in enumerate(matrix.sources)}
    row = {n.key: i for i, n in enumerate(matrix.targets)}
    checked = 0
    for s in picks:
        a_s = float(attr.activation[s])
        for t in picks:
            if t[0] <= s[0] or t[1] < s[1]:
                continue
            fd = a_s * _finite_difference_edges(model, ids, s, t)
            got = float(matrix.raw[row[t], col[s]])
            assert got == pytest.approx(fd, rel=rel, abs=abs_), (s, t)
            checked += 1
        # direct effect on the metric
        fd = a_s * _finite_difference_edges(model, ids, s, None)
        assert float(matrix.raw[-1, col[s]]) == pytest.approx(fd, rel=rel, abs=abs_)
    assert checked >= 4


@pytest.mark.parametrize("relp", [True, False])
def test_edges_match_hand_written_llama(relp: bool) -> None:
    model = build("llama", layers=3)
    ids = random_ids(7)
    method = "relp" if relp else "grad_x_act"
    attr = attribute(model, None, ids, A, B, method=method)
    nodes = prune(attr, tau=0.001, per_layer_top_k=12)
    matrix = edge_matrix(model, attr, nodes)

    logits, _, acts, leaves = manual_llama(model, ids, relp=relp, stop_mlp=True)
    m = logits[A] - logits[B]
    for t_idx, target in enumerate(matrix.targets):
        (grads) = torch.autograd.grad(
            acts[target.layer][0, target.position, target.neuron],
            leaves[: target.layer],
            retain_graph=True,
        )
        for s_idx, source in enumerate(matrix.sources):
            if source.layer >= target.layer or source.position > target.position:
                continue
            ref = source.activation * float(grads[source.layer][0, source.position, source.neuron])
            assert float(matrix.raw[t_idx, s_idx]) == pytest.approx(ref, rel=1e-4, abs=1e-6)
    grads = torch.autograd.grad(m, leaves, retain_graph=True)
    for s_idx, source in enumerate(matrix.sources):
        ref = source.activation * float(grads[source.layer][0, source.position, source.neuron])
        assert float(matrix.raw[-1, s_idx]) == pytest.approx(ref, rel=1e-4, abs=1e-6)


def test_edge_list_respects_causality_and_normalisation() -> None:
    model = build("qwen3", layers=3)
    attr = attribute(model, None, random_ids(8), A, B, method="relp")
    nodes = prune(attr, tau=0.001, per_layer_top_k=10)
    by_id = {n.node_id: n for n in nodes}
    raw = compute_edges(model, attr, nodes)
    flow = compute_edges(model, attr, nodes, normalization="flow")
    neuron_edges = [e for e in raw if e.target != "metric"]
    assert neuron_edges
    for e in neuron_edges:
        s, t = by_id[e.source], by_id[e.target]
        assert s.layer < t.layer and s.position <= t.position
        assert e.weight == e.raw
    metric_edges = [e for e in raw if e.target == "metric"]
    assert len(metric_edges) == len(nodes)
    for e in metric_edges:
        assert e.weight == pytest.approx(by_id[e.source].influence)
    flow_by_pair = {(e.source, e.target): e for e in flow}
    for e in neuron_edges:
        t = by_id[e.target]
        f = flow_by_pair[(e.source, e.target)]
        assert f.weight == pytest.approx(e.raw / t.activation * t.influence, rel=1e-5)
    cut = 0.5 * max(abs(e.weight) for e in neuron_edges)
    strong = compute_edges(model, attr, nodes, threshold=cut, include_metric=False)
    assert strong and all(abs(e.weight) >= cut for e in strong)
    assert len(strong) < len(neuron_edges)
    weights = [abs(e.weight) for e in raw]
    assert weights == sorted(weights, reverse=True)


def test_edges_reject_bad_requests() -> None:
    model = build("llama")
    attr = attribute(model, None, random_ids(5), A, B)
    node = make_node(attr, 1, 2, 3)
    with pytest.raises(InputError) as err:
        edge_matrix(model, attr, [node, node])
    assert err.value.field == "nodes"
    bad = Node(layer=9, position=0, neuron=0, influence=0.0, activation=0.0)
    with pytest.raises(InputError) as err:
        edge_matrix(model, attr, [bad])
    assert err.value.field == "layer"
    with pytest.raises(InputError) as err:
        compute_edges(model, attr, [node], normalization="softmax")
    assert err.value.field == "edge_normalization"
    with pytest.raises(InputError) as err:
        edge_matrix(model, attr, [node], strategy="vmap-please")
    assert err.value.field == "strategy"
    assert compute_edges(model, attr, []) == []


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["grad_x_act", "relp"])
def test_split_sweep_equals_previous_method(arch: str, method: str) -> None:
    """Rows carried only down to a split layer, their edges from the sources below it read
    from those sources' forward-mode effects (a JVP per layer), give the row-batched
    matrix at every split, including the low sources' entries."""
    model = build(arch, layers=4)
    attr = attribute(model, None, random_ids(9), A, B, method=method)
    nodes = prune(attr, tau=0.001, per_layer_top_k=15)
    old = edge_matrix(model, attr, nodes, strategy="batched", batch_size=7)
    for split in (1, 2, 3):
        new = edge_matrix(model, attr, nodes, split=split, batch_size=3)
        torch.testing.assert_close(new.raw, old.raw, rtol=1e-5, atol=1e-6)
        low = [i for i, n in enumerate(new.sources) if n.layer < split]
        assert new.raw[-1, low].abs().max() > 0  # the metric row's low-source edges
