"""Always-on neurons: the two rules on planted tensors, and a neuron built into a tiny
GPT-2 to fire at every token is flagged, dropped from the circuit by default and kept
(flagged) when the setting is off."""

from __future__ import annotations

import pytest
import torch

from analysis.attribution import CircuitSettings, run_circuit
from analysis.attribution.always_on import KnownAlwaysOn, detect_always_on
from tests.unit.tiny_models import build, random_ids


def test_first_position_rule_needs_massive_and_isolated() -> None:
    torch.manual_seed(0)
    act = torch.randn(2, 10, 64) * 0.1
    act[1, 0, 7] = 500.0  # a sink neuron: massive at the first token only
    act[1, 0, 9] = 500.0  # massive at the first token but also large later: not a sink
    act[1, 5, 9] = 400.0
    flagged = detect_always_on(act, torch.ones_like(act), dropped=True)
    assert [(f.layer, f.neuron, f.reason) for f in flagged] == [(1, 7, "first_position")]
    assert flagged[0].influence == 10.0  # summed over the prompt's positions
    assert "first position" in flagged[0].why


def test_every_token_rule_and_short_prompts() -> None:
    torch.manual_seed(1)
    act = torch.randn(1, 12, 64) * 0.1
    act[0, 1:, 3] = 30.0  # large at every later token
    act[0, 1:6, 4] = 30.0  # large at only half of them
    flagged = detect_always_on(act, torch.zeros_like(act), dropped=False)
    assert [(f.neuron, f.reason) for f in flagged] == [(3, "every_token")]
    assert detect_always_on(act[:, :1], torch.zeros_like(act[:, :1]), dropped=True) == []


def _with_always_on_neuron() -> tuple[torch.nn.Module, int]:
    model = build("gpt2", layers=2)
    neuron = 11
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.bias[neuron] = 200.0  # gelu(200 + small) at every token
    return model, neuron


def test_built_always_on_neuron_is_flagged_and_dropped() -> None:
    model, neuron = _with_always_on_neuron()
    ids = random_ids(10, seed=3)
    kept = run_circuit(model, None, ids, 5, 17,
                       CircuitSettings(tau=0.001, max_nodes=None, drop_always_on=False,
                                       edges=False, ablation=None))
    flagged = [(f.layer, f.neuron) for f in kept.always_on]
    assert (0, neuron) in flagged
    # Kept when the setting is off: its nodes carry the flag, and it matters for m.
    planted = [n for n in kept.nodes if (n.layer, n.neuron) == (0, neuron)]
    assert planted and all(n.always_on for n in planted)

    dropped = run_circuit(model, None, ids, 5, 17,
                          CircuitSettings(tau=0.001, max_nodes=None, edges=False,
                                          ablation=None))
    assert all((n.layer, n.neuron) != (0, neuron) for n in dropped.nodes)
    assert all(f.dropped for f in dropped.always_on)
    assert (0, neuron) in [(f.layer, f.neuron) for f in dropped.always_on]
    # Dropping prunes only: m and the completeness check keep the real numbers.
    assert dropped.m == kept.m
    assert dropped.completeness == kept.completeness
    assert dropped.params.drop_always_on and not kept.params.drop_always_on
    assert dropped.cache_key != kept.cache_key


def test_an_index_flag_drops_a_neuron_the_prompt_rule_keeps() -> None:
    """A neuron an exemplar index flags (a constant-like value over a corpus) joins the
    prompt's flags: gone from the nodes, listed with the index's reason and source, and
    the run's cache key names the index."""
    model = build("gpt2", layers=2)
    ids = random_ids(10, seed=3)
    settings = CircuitSettings(tau=0.001, max_nodes=None, edges=False, ablation=None)
    plain = run_circuit(model, None, ids, 5, 17, settings)
    assert not any(f.reason == "index" for f in plain.always_on)
    top = max(plain.neurons, key=lambda n: abs(n.influence))
    known = KnownAlwaysOn(source="index abc of tiny (test corpus, 1,000 tokens)",
                          reasons={f"L{top.layer}/N{top.neuron}": "large at 99% of tokens"})
    flagged = run_circuit(model, None, ids, 5, 17, settings, known_always_on=known)
    assert all((n.layer, n.neuron) != (top.layer, top.neuron) for n in flagged.nodes)
    [entry] = [f for f in flagged.always_on if f.reason == "index"]
    assert (entry.layer, entry.neuron) == (top.layer, top.neuron)
    assert entry.influence == pytest.approx(top.influence, rel=1e-5)
    assert entry.why == "large at 99% of tokens (in index abc of tiny (test corpus, 1,000 tokens))"
    assert flagged.always_on_source == known.source
    assert flagged.m == plain.m  # pruning only
    assert flagged.cache_key != plain.cache_key
    # Kept (flagged) when the setting is off.
    off = run_circuit(model, None, ids, 5, 17,
                      settings.model_copy(update={"drop_always_on": False}),
                      known_always_on=known)
    assert [n.always_on for n in off.nodes if (n.layer, n.neuron) == (top.layer, top.neuron)]
    assert all(n.always_on for n in off.nodes if (n.layer, n.neuron) == (top.layer, top.neuron))
