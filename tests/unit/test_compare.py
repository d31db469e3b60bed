"""Comparison core: per-neuron categories, the verdict and its reasons, weight changes."""

from __future__ import annotations

import copy

import pytest
import torch

from analysis.comparison import (
    CompareThresholds,
    categorize,
    compare_influences,
    weight_changes,
)
from analysis.errors import InputError
from tests.unit.tiny_models import build, down_module

T = CompareThresholds()


@pytest.mark.parametrize(("base", "tuned", "expected"), [
    (-2.61, -2.50, "persistent"),
    (-1.0, -2.0, "strengthened"),
    (-1.0, -0.4, "weakened"),
    (0.01, 0.8, "new"),
    (-0.9, 0.02, "gone"),
    (-0.9, 0.9, "sign_flip"),
    (0.01, -0.02, None),
])
def test_categories(base: float, tuned: float, expected: str | None) -> None:
    assert categorize(base, tuned, scale=1.0, t=T) == expected


def test_correction_when_the_wrong_way_driver_loses_its_pull() -> None:
    c = compare_influences(-1.0, 0.6, {(31, 589): -1.2, (20, 7): 0.3},
                           {(31, 589): -0.05, (20, 7): 0.35})
    assert c.verdict == "pathway removed"
    assert {n.name: n.category for n in c.neurons}["L31/N589"] == "gone"
    assert any("L31/N589" in r for r in c.reasons)


def test_compensation_when_the_driver_stays_and_new_ones_outweigh_it() -> None:
    # The seeds' L31/N589 -2.61 -> -2.50 with the influence sum turning positive.
    c = compare_influences(-0.32, 1.11, {(31, 589): -2.61, (30, 12): 0.4},
                           {(31, 589): -2.50, (30, 12): 0.5, (29, 3): 3.0})
    assert c.verdict == "compensated"
    cats = {n.name: n.category for n in c.neurons}
    assert cats == {"L31/N589": "persistent", "L30/N12": "persistent", "L29/N3": "new"}
    assert c.influence_sum_base == pytest.approx(-2.21)
    assert c.influence_sum_tuned == pytest.approx(1.0)


def test_no_change_and_made_worse() -> None:
    same = compare_influences(-1.0, -0.95, {(1, 1): -1.0}, {(1, 1): -0.97})
    assert same.verdict == "no change"
    worse = compare_influences(-1.0, -2.0, {(1, 1): -1.0}, {(1, 1): -2.0})
    assert worse.verdict == "made worse"
    strict = compare_influences(-1.0, -0.95, {(1, 1): -1.0}, {(1, 1): -0.97},
                                CompareThresholds(min_delta_m=0.01))
    # A narrower band: +0.05 is a move, and the driver's small loss is the larger part of it
    # (this read "no change" beside "moves under 0.01 count as no change" before issue 21).
    assert strict.verdict == "pathway weakened" and "pathway weakened" in strict.decided_by


def test_weight_changes_point_at_the_edited_layer() -> None:
    base = build("llama", seed=3)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        down_module(tuned, 1).weight[:, 5] += 0.5
    changes = weight_changes(base, tuned)
    assert changes[0].layer == 1 and "down_proj" in changes[0].module
    assert changes[0].relative > 0.01
    assert all(c.relative == 0 for c in changes[1:])
    assert weight_changes(base, tuned, min_relative=1e-9) == changes[:1]


def test_weight_changes_refuse_a_different_architecture() -> None:
    with pytest.raises(InputError, match="different parameters"):
        weight_changes(build("llama"), build("gemma3"))
    with pytest.raises(InputError, match="shape"):
        weight_changes(build("llama", layers=2), _wider(build("llama", layers=2)))


def _wider(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        emb = model.get_input_embeddings()
        emb.weight = torch.nn.Parameter(torch.cat([emb.weight, emb.weight[:3]]))
    return model
