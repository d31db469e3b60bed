"""User mistakes raise InputError naming the offending field, before any model work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from analysis.attribution import (
    CircuitSettings,
    NeuronEdit,
    attribute,
    describe_neuron,
    get_adapter,
    intervene,
    prune,
)
from analysis.errors import InputError
from tests.unit.tiny_models import VOCAB, build, random_ids

A, B = 5, 17
MODEL = build("llama")
IDS = random_ids(5)
ATTR = attribute(MODEL, None, IDS, A, B)


def field_of(call: Callable[[], Any]) -> str | None:
    with pytest.raises(InputError) as err:
        call()
    assert err.value.message
    return err.value.field


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: attribute(MODEL, None, IDS, A, A), "target_b"),
        (lambda: attribute(MODEL, None, IDS, VOCAB + 1, B), "target_a"),
        (lambda: attribute(MODEL, None, IDS, A, -1), "target_b"),
        (lambda: attribute(MODEL, None, [], A, B), "input_ids"),
        (lambda: attribute(MODEL, None, [1, VOCAB], A, B), "input_ids"),
        (lambda: attribute(MODEL, None, torch.ones(2, 3, dtype=torch.long), A, B), "input_ids"),
        (lambda: attribute(MODEL, None, IDS, A, B, method="saliency"), "method"),
        (
            lambda: attribute(MODEL, None, IDS, A, B, method="integrated_gradients", ig_steps=0),
            "ig_steps",
        ),
        (
            lambda: attribute(
                MODEL, None, IDS, A, B, method="integrated_gradients", ig_baseline="noise"
            ),
            "ig_baseline",
        ),
        (lambda: prune(ATTR, tau=0.0), "tau"),
        (lambda: prune(ATTR, tau=1.5), "tau"),
        (lambda: prune(ATTR, tau=float("nan")), "tau"),
        (lambda: prune(ATTR, mode="cumulative", mass=0.0), "mass"),
        (lambda: prune(ATTR, mode="greedy"), "mode"),
        (lambda: prune(ATTR, per_layer_top_k=0), "per_layer_top_k"),
        (lambda: prune(ATTR, max_nodes=0), "max_nodes"),
        (lambda: describe_neuron(MODEL, None, 2, 0), "layer"),
        (lambda: describe_neuron(MODEL, None, 0, 10_000), "neuron"),
        (lambda: intervene(MODEL, None, IDS, [NeuronEdit(layer=5, neuron=0)]), "layer"),
        (lambda: intervene(MODEL, None, IDS, [NeuronEdit(layer=0, neuron=-1)]), "neuron"),
        (
            lambda: intervene(MODEL, None, IDS, [NeuronEdit(layer=0, neuron=0, positions=[9])]),
            "positions",
        ),
        (
            lambda: intervene(
                MODEL, None, IDS, [NeuronEdit(layer=0, neuron=0, scale=float("inf"))]
            ),
            "scale",
        ),
        (lambda: intervene(MODEL, None, IDS, []), "edits"),
        (lambda: intervene(MODEL, None, IDS, [NeuronEdit(layer=0, neuron=0)], A, A), "target_b"),
        # Settings are validated once, where they are built (CircuitSettings.checked is
        # what the CLI and notebooks use; requests and forms validate the same fields).
        (lambda: CircuitSettings.checked(tau=2.0), "tau"),
        (lambda: CircuitSettings.checked(method="lrp"), "method"),
        (lambda: CircuitSettings.checked(ablation="noise"), "ablation"),
        (lambda: CircuitSettings.checked(edge_normalization="x"), "edge_normalization"),
        (lambda: CircuitSettings.checked(max_nodes=0), "max_nodes"),
    ],
)
def test_bad_input_names_the_field(call: Callable[[], Any], field: str) -> None:
    assert field_of(call) == field


def test_unsupported_architecture() -> None:
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    assert field_of(lambda: get_adapter(bert)) == "model"


def test_input_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        attribute(MODEL, None, IDS, A, A)
