"""The exemplar index on the default embedded model: the seed prompt's top drivers
towards the wrong answer (" renin") get exemplars and a readable data-only description."""

from __future__ import annotations

from typing import Any

import pytest

from analysis.attribution import CircuitSettings, run_circuit
from analysis.neurons.data_description import data_description
from analysis.neurons.index import NeuronIndex
from analysis.neurons.search import search
from tests.conftest import SEED_PROMPT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def drivers_towards_b(embedded_lm: Any) -> list[tuple[int, int, float]]:
    tok = embedded_lm.tokenizer
    ids = tok(SEED_PROMPT)["input_ids"]
    a = tok.encode(" aldosterone", add_special_tokens=False)[0]
    b = tok.encode(" renin", add_special_tokens=False)[0]
    circuit = run_circuit(embedded_lm.model, tok, ids, a, b,
                          CircuitSettings(method="relp", tau=0.15, edges=False),
                          model_name=embedded_lm.name, model_revision=embedded_lm.revision,
                          prompt=SEED_PROMPT)
    towards_b = sorted((n for n in circuit.neurons if n.influence < 0),
                       key=lambda n: n.influence)
    return [(n.layer, n.neuron, n.influence) for n in towards_b[:12]]


def test_index_is_complete_and_consistent(seed_index: NeuronIndex) -> None:
    meta = seed_index.meta
    assert meta.complete and meta.tokens_done == meta.tokens_total > 3000
    assert (meta.n_layers, meta.n_neurons) == (30, 1536)
    assert meta.size_bytes > 0


def test_seed_drivers_have_exemplars_and_descriptions(
        seed_index: NeuronIndex, drivers_towards_b: list[tuple[int, int, float]]) -> None:
    assert len(drivers_towards_b) >= 5
    for layer, neuron, influence in drivers_towards_b:
        exemplars = seed_index.exemplars(layer, neuron, k=5)
        assert len(exemplars) == 5
        assert exemplars[0].activation >= exemplars[-1].activation
        assert all(e.token and (e.left or e.right) for e in exemplars)
        description = data_description(seed_index, layer, neuron)
        assert description and description != "no exemplars yet"
        assert "×" in description
        stats = seed_index.stats(layer, neuron)
        assert stats.count == seed_index.meta.tokens_done
        print(f"L{layer}/N{neuron} ({influence:+.3f}): {description}")
        for e in exemplars[:3]:
            print(f"    {e.left[-40:]!r} [{e.token!r}] {e.right!r}  {e.activation:.2f}")


def test_search_finds_blood_neurons(seed_index: NeuronIndex) -> None:
    hits = search(seed_index, "blood", limit=10)
    assert hits
    assert "blood" in (hits[0].example.left + hits[0].example.token
                       + hits[0].example.right).lower()
