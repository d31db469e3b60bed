"""The cost estimate and the size refusal (analysis/estimate.py) on a tiny random model."""

from __future__ import annotations

import pytest

from analysis.attribution import CircuitSettings
from analysis.errors import LimitExceeded
from analysis.estimate import FIT_PATH, check_size, estimate, load_fit
from tests.unit.tiny_models import build

FIT = {"device": "cpu", "threads": 2, "nodes": 64, "phases": {
    key: {"c": -20.0, "a_tokens": 1.0, "b_params": 1.0}
    for key in ("bare_s", "attr_s", "edges_s", "faith_s", "attr_mib", "edges_mib")}}


def test_estimate_grows_with_tokens_nodes_and_steps() -> None:
    model = build("llama")
    base = estimate(model, 16, CircuitSettings(max_nodes=64), 1000, FIT)
    assert base.device == "cpu" and base.tokens == 16 and base.edge_pairs == 64 * 64
    assert base.total_s == pytest.approx(base.attribution_s + base.edges_s
                                         + base.faithfulness_s)
    longer = estimate(model, 64, CircuitSettings(max_nodes=64), 1000, FIT)
    assert longer.attribution_s == pytest.approx(4 * base.attribution_s)
    wider = estimate(model, 16, CircuitSettings(max_nodes=128), 1000, FIT)
    assert wider.edges_s == pytest.approx(4 * base.edges_s)  # rows x sources
    assert wider.attribution_s == pytest.approx(base.attribution_s)
    ig = estimate(model, 16, CircuitSettings(method="integrated_gradients", ig_steps=64,
                                             max_nodes=64), 1000, FIT)
    assert ig.attribution_s == pytest.approx(4 * base.attribution_s)
    bare = estimate(model, 16, CircuitSettings(max_nodes=64, edges=False, ablation=None),
                    1000, FIT)
    assert bare.edge_pairs == 0 and bare.edges_s == 0 and bare.faithfulness_s == 0
    params = sum(p.numel() for p in model.parameters())
    assert base.memory_mib > params * 4 / 2**20  # the weights, then the activations
    unlimited = estimate(model, 16, CircuitSettings(max_nodes=None), 300, FIT)
    assert unlimited.nodes == 300  # no node cap in the request: the operator's applies


def test_size_check_names_the_limit() -> None:
    check_size(CircuitSettings(max_nodes=10), 1000, 100)
    check_size(CircuitSettings(max_nodes=50, edges=False), 1000, 100)  # no edge matrix
    with pytest.raises(LimitExceeded) as err:
        check_size(CircuitSettings(max_nodes=11), 1000, 100)
    assert err.value.status == 413 and err.value.field == "max_nodes"
    assert "max_edge_pairs=100" in err.value.message and "121" in err.value.message
    with pytest.raises(LimitExceeded):
        check_size(CircuitSettings(max_nodes=None), 20, 100)  # the operator's cap, 400


def test_the_committed_fit_is_the_benchmarks() -> None:
    fit = load_fit(FIT_PATH)
    assert fit["device"] == "cpu" and fit["nodes"] >= 1
    for key in ("attr_s", "edges_s", "faith_s", "attr_mib", "edges_mib"):
        phase = fit["phases"][key]
        assert set(phase) == {"c", "a_tokens", "b_params"}
    # Attribution costs at least as much per token as a bare pass would: it grows.
    assert fit["phases"]["attr_s"]["a_tokens"] > 0 and fit["phases"]["attr_s"]["b_params"] > 0
