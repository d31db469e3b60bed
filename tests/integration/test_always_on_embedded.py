"""The issue's observation on the default model: attention-sink neurons at the first
position (L11/N1229 at ~2,824 and L11/N1487 at ~960) sat among the seed prompt's drivers.
They are flagged, left out of the circuit by default, and listed on the run page."""

from __future__ import annotations

from analysis.analyze import CircuitRequest, analyze
from analysis.attribution.circuit_settings import CircuitSettings
from analysis.prompts import PromptSpec
from tests.conftest import SEED_PROMPT


def _seed(lm, drop: bool):  # type: ignore[no-untyped-def]
    return analyze(lm, CircuitRequest(
        prompt=PromptSpec(prompt=SEED_PROMPT), answer_a=" aldosterone", answer_b=" renin",
        settings=CircuitSettings(drop_always_on=drop, edges=False, ablation=None)))


def test_seed_prompt_sinks_are_flagged_and_dropped(embedded_lm) -> None:  # type: ignore[no-untyped-def]
    dropped = _seed(embedded_lm, True)
    flagged = {(f.layer, f.neuron): f for f in dropped.always_on}
    for key, at_least in (((11, 1229), 2000.0), ((11, 1487), 500.0)):
        assert flagged[key].reason == "first_position"
        assert flagged[key].activation > at_least
    kept = {(n.layer, n.neuron) for n in dropped.nodes}
    assert not kept & set(flagged)

    with_them = _seed(embedded_lm, False)
    flagged_nodes = [n for n in with_them.nodes if n.always_on]
    assert flagged_nodes, "with the setting off, some flagged neurons are kept (flagged)"
    assert {(n.layer, n.neuron) for n in flagged_nodes} <= set(flagged)
    assert with_them.m == dropped.m
