"""run_circuit end to end on a tiny model; result save/load, export, cache key, readout."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.attribution import (
    CircuitResult,
    CircuitSettings,
    cache_key,
    render_summary,
    run_circuit,
    to_circuit_tracer,
)
from tests.unit.tiny_models import build, random_ids

A, B = 5, 17


class Tok:
    def decode(self, ids: list[int]) -> str:
        return f" w{ids[0]}"


@pytest.fixture(scope="module")
def result() -> CircuitResult:
    model = build("llama", layers=3)
    return run_circuit(
        model,
        Tok(),
        random_ids(8),
        A,
        B,
        CircuitSettings(tau=0.02, max_nodes=30),
        model_name="tiny-llama",
        model_revision="abc123",
        prompt="some prompt",
        labels={"L2/N5": "my label"},
    )


def test_run_circuit_fills_everything(result: CircuitResult) -> None:
    assert 0 < len(result.nodes) <= 30
    assert result.attribution is not None
    assert result.m == pytest.approx(result.attribution.m)
    assert result.target_a_text == f" w{A}" and result.target_b_text == f" w{B}"
    assert [t.position for t in result.tokens] == list(range(8))
    assert result.edges and result.faithfulness is not None
    assert all(n.direct_effect is not None for n in result.nodes)
    assert result.timing.total_s >= result.timing.attribution_s > 0
    assert result.cache_key == cache_key(
        "tiny-llama", "abc123", result.input_ids, A, B, CircuitSettings(tau=0.02, max_nodes=30)
    )
    assert result.influence_sum == pytest.approx(sum(n.influence for n in result.nodes))
    labelled = [n for n in result.nodes if n.name == "L2/N5"]
    assert all(n.label == "my label" for n in labelled)


def test_save_and_load_round_trip(result: CircuitResult, tmp_path: Path) -> None:
    path = result.save(tmp_path / "runs" / "r.json")
    loaded = CircuitResult.load(path)
    assert loaded.model_dump() == result.model_dump()
    assert loaded.nodes[0].node_id == result.nodes[0].node_id
    assert loaded.attribution is None  # tensors are not serialised
    assert '"towards"' in path.read_text()


def test_cache_key_is_stable_and_sensitive() -> None:
    params = CircuitSettings(method="relp", ig_steps=99)  # ig_steps: not relp's business
    base = cache_key("m", "r", [1, 2, 3], 5, 6, params)
    assert base == cache_key("m", "r", [1, 2, 3], 5, 6, CircuitSettings(method="relp"))
    # Settings the pruning mode or the edges flag ignore do not split the cache either.
    assert base == cache_key("m", "r", [1, 2, 3], 5, 6, CircuitSettings(mass=0.5))
    no_edges = CircuitSettings(edges=False)
    assert cache_key("m", "r", [1], 5, 6, no_edges) == cache_key(
        "m", "r", [1], 5, 6, CircuitSettings(edges=False, edge_threshold=0.3))
    assert base != cache_key("m", "r2", [1, 2, 3], 5, 6, params)
    assert base != cache_key("m", "r", [1, 2, 4], 5, 6, params)
    assert base != cache_key("m", "r", [1, 2, 3], 5, None, params)
    assert base != cache_key("m", "r", [1, 2, 3], 5, 6, CircuitSettings(tau=0.2))
    ig = CircuitSettings(method="integrated_gradients", ig_steps=8)
    assert cache_key("m", "r", [1], 5, 6, ig) != cache_key(
        "m", "r", [1], 5, 6, CircuitSettings(method="integrated_gradients", ig_steps=16)
    )


def test_circuit_tracer_export(result: CircuitResult) -> None:
    graph = to_circuit_tracer(result, slug="test")
    assert set(graph) == {"metadata", "qParams", "nodes", "links"}
    meta = graph["metadata"]
    assert meta["slug"] == "test" and meta["scan"] == "circuitlab-neurons.tiny-llama"
    assert meta["prompt_tokens"] == [t.text for t in result.tokens]
    ids = {n["node_id"] for n in graph["nodes"]}
    for link in graph["links"]:
        assert link["source"] in ids and link["target"] in ids
    kinds = {n["feature_type"] for n in graph["nodes"]}
    assert kinds == {"mlp neuron", "circuit remainder error", "embedding", "logit"}
    logit = next(n for n in graph["nodes"] if n["feature_type"] == "logit")
    assert logit["is_target_logit"] and "(p=" in logit["clerp"]
    assert logit["layer"] == "4"  # n_layers + 1, as circuit-tracer writes it
    features = [n for n in graph["nodes"] if n["feature_type"] == "mlp neuron"]
    assert len(features) == len(result.nodes)
    first = result.nodes[0]
    node = next(
        n for n in features if n["node_id"] == f"{first.layer}_{first.neuron}_{first.position}"
    )
    assert node["logit_influence"] == first.influence
    assert node["ctx_idx"] == first.position and node["layer"] == str(first.layer)
    assert 0 < min(n["influence"] for n in features) <= max(n["influence"] for n in features) <= 1
    to_logit = [link for link in graph["links"] if link["target"] == logit["node_id"]]
    assert len(to_logit) == len(result.nodes) + 1  # and the remainder's
    assert to_circuit_tracer(result)["metadata"]["slug"].startswith("tiny-llama-")


def test_summary_reads_like_the_lab_notes(result: CircuitResult) -> None:
    text = render_summary(result, max_nodes=3)
    assert text == render_summary(result, max_nodes=3)
    assert f'm = logit(" w{A}") - logit(" w{B}")' in text
    assert "influence sum" in text
    top = result.nodes[0]
    assert f"{top.name}" in text and f"influence={top.influence:+.2f}" in text
    assert "Faithfulness (zero ablation)" in text
    assert "Toward" in text


def test_neuron_totals_sum_over_positions(result: CircuitResult) -> None:
    attr = result.attribution
    assert {(n.layer, n.neuron) for n in result.neurons} == {
        (n.layer, n.neuron) for n in result.nodes
    }
    for total in result.neurons:
        expected = float(attr.influence[total.layer, :, total.neuron].sum())
        assert total.influence == pytest.approx(expected, rel=1e-5, abs=1e-7)
        kept = sorted(n.position for n in result.nodes if n.name == total.name)
        assert total.positions == kept
