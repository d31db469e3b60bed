"""Issue 21: every readout agrees with its own numbers. Each test here failed on the code
before the fix it names: the words a page shows are checked against the numbers beside them."""

from __future__ import annotations

import pytest

from analysis.comparison import CompareThresholds, compare_influences
from analysis.comparison.verdict import verdict_band

T = CompareThresholds()


@pytest.mark.parametrize(("m_base", "m_tuned", "base", "tuned"), [
    # The job's case: m rose by +0.255, its B-driver kept most of its pull, nothing new
    # towards A outweighed it. It read "no change" beside "moves under 0.1 count as no change".
    (-0.993, -0.738, {(24, 110): -0.66, (28, 3): -0.3}, {(24, 110): -0.55, (28, 3): -0.28}),
    (-0.993, -0.844, {(24, 110): -0.66}, {(24, 110): -0.60}),
    # m rose while no large neuron changed: the move is spread over small ones.
    (-0.993, -0.70, {(24, 110): -0.66}, {(24, 110): -0.66}),
])
def test_a_move_beyond_the_band_is_never_no_change(m_base: float, m_tuned: float,
                                                   base: dict, tuned: dict) -> None:
    c = compare_influences(m_base, m_tuned, base, tuned)
    assert abs(m_tuned - m_base) > T.min_delta_m
    assert c.verdict != "no change"
    # The last reason is the rule that decided it, and it names the verdict.
    assert c.decided_by and c.verdict in c.decided_by
    assert c.decided_by == c.reasons[-1]


def test_no_change_only_inside_the_band_and_says_so() -> None:
    c = compare_influences(-1.0, -0.95, {(1, 1): -1.0}, {(1, 1): -0.2})
    assert c.verdict == "no change"
    assert "0.050" in c.decided_by and str(T.min_delta_m) in c.decided_by
    assert verdict_band(0.05, T) == "no change" and verdict_band(0.2, T) is None
    assert verdict_band(-0.2, T) == "made worse"


def test_always_on_neurons_are_left_out_of_the_drivers_and_the_page_says_so() -> None:
    # L11/N1229 is the first-position sink the circuit drops; it dominated "main drivers".
    base = {(11, 1229): -3000.0, (24, 110): -0.66, (20, 5): 0.2}
    tuned = {(11, 1229): -3000.0, (24, 110): -0.05, (20, 5): 0.25}
    c = compare_influences(-0.993, 0.1, base, tuned,
                           excluded={(11, 1229): "always-on at the first position"})
    assert all((n.layer, n.neuron) != (11, 1229) for n in c.neurons)
    assert c.verdict == "pathway removed"
    drivers_line = next(r for r in c.reasons if r.startswith("The base model's"))
    assert "L11/N1229" not in drivers_line
    assert c.excluded == ["L11/N1229"]
    assert any("always-on" in r and "L11/N1229" in r for r in c.reasons)
    without = compare_influences(-0.993, 0.1, base, tuned)
    assert without.verdict != "pathway removed"  # the sink's unchanged pull hid the removal


def test_the_prompt_outcome_uses_the_verdicts_band() -> None:
    from analysis.evaluation import MIN_DELTA_M

    assert T.min_delta_m == MIN_DELTA_M
