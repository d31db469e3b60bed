"""Measured single-neuron effects (issue 21.3): one batched forward gives, for each
neuron, what zeroing or mean-ablating it at every position does to m, identical to an
unbatched ablation; the drivers and the concept ranking carry them."""

from __future__ import annotations

import pytest
import torch

from analysis.analyze import CircuitRequest, analyze
from analysis.attribution import CircuitSettings
from analysis.attribution.effects import measure_effects, measured_pool, run_effects, top_drivers
from analysis.attribution.patching import ablated_metric
from analysis.concepts import concept_candidates
from analysis.prompts import PromptSpec
from tests.unit.access_apps import client_with_run

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


@pytest.fixture(scope="module")
def run(tiny_lms):  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]
    req = CircuitRequest(prompt=PromptSpec(prompt=PROMPT), answer_a=" aldosterone",
                         answer_b=" renin",
                         settings=CircuitSettings(tau=0.01, max_nodes=80, ablation=None))
    return lm, analyze(lm, req)


def test_batched_effects_equal_one_ablation_at_a_time(run) -> None:  # type: ignore[no-untyped-def]
    lm, result = run
    pool = measured_pool(result)
    assert len(pool) >= 3
    effects = measure_effects(lm.model, result.input_ids, result.target_a, result.target_b,
                              pool)
    seq = len(result.input_ids)
    m_clean = ablated_metric(lm.model, result.input_ids, result.target_a, result.target_b, [])
    for e in effects[:6]:
        nodes = [(e.layer, p, e.neuron) for p in range(seq)]
        zeroed = ablated_metric(lm.model, result.input_ids, result.target_a,
                                result.target_b, nodes)
        assert e.zero == pytest.approx(m_clean - zeroed, abs=1e-4)
        # mean ablation: the neuron's clean mean over the positions
        acts = _clean_acts(lm, result.input_ids, e.layer, e.neuron)
        meaned = ablated_metric(lm.model, result.input_ids, result.target_a,
                                result.target_b, nodes, fill=float(acts.mean()))
        assert e.mean == pytest.approx(m_clean - meaned, abs=1e-4)
        assert e.disagrees == (e.influence * e.zero < 0)


def _clean_acts(lm, ids, layer: int, neuron: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    from analysis.attribution.adapters import get_adapter
    from analysis.nnsight_traces import node_values

    return node_values(get_adapter(lm.model), ids, layer, neuron).float()


def test_drivers_are_the_strongest_by_attribution_with_their_measurement(run) -> None:  # type: ignore[no-untyped-def]
    lm, result = run
    effects = run_effects(lm.model, result)
    drivers = top_drivers(result, effects)
    strongest = sorted(result.neurons, key=lambda n: -abs(n.influence))[:12]
    assert [d.name for d in drivers] == [n.name for n in strongest]
    assert all(d.influence == n.influence for d, n in zip(drivers, strongest, strict=True))


def test_concept_ranking_follows_the_measurement(run) -> None:  # type: ignore[no-untyped-def]
    lm, result = run
    effects = run_effects(lm.model, result)
    found = concept_candidates(result, 2, logit_lens=lambda layer, n: ([], []),
                               effects=effects, limit=100)
    assert found
    for c in found:
        e = effects[(c.layer, c.neuron)]
        assert c.zero_effect == e.zero and c.disagrees == e.disagrees
        # a candidate pushes B by the attribution or by the measurement
        assert c.influence < 0 or e.zero < 0
    # Candidates the measurement says push A (zeroing them lowers nothing towards B)
    # score 0 and sort after every one it confirms.
    scores = [c.score for c in found]
    assert scores == sorted(scores, reverse=True)
    for c in found:
        if c.zero_effect is not None and c.zero_effect >= 0:
            assert c.score == 0 and any("disagree" in r for r in c.reasons)


def test_a_contradiction_is_flagged_in_the_api_and_on_the_page(tiny_client_run) -> None:  # type: ignore[no-untyped-def]
    client, run_id = tiny_client_run
    body = client.get(f"/api/v1/runs/{run_id}/drivers").json()
    assert body["drivers"] and body["disagree"] == sum(d["disagrees"] for d in body["drivers"])
    for d in body["drivers"]:
        assert d["disagrees"] == (d["influence"] * d["zero"] < 0)
    page = client.get(f"/runs/{run_id}/drivers").text
    assert f"{body['disagree']} of {len(body['drivers'])} disagree in sign" in page
    for d in body["drivers"]:
        row = page.split(f'data-neuron="{d["name"]}"')[1].split("</tr>")[0]
        assert f"{d['zero']:+.3f}" in row and f"{d['influence']:+.3f}" in row
        assert ("⚠ attributed" in row) == d["disagrees"]


@pytest.fixture(scope="module")
def tiny_client_run(tiny_dirs, tmp_path_factory):  # type: ignore[no-untyped-def]
    with client_with_run(tiny_dirs, tmp_path_factory.mktemp("data"), tau=0.01,
                         max_nodes=60) as (client, run):
        yield client, run["run_id"]
