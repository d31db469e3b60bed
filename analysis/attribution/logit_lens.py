"""Data-free neuron descriptions.

* **Logit lens of the output weights**: the neuron writes ``a * W_down[:, n]`` into the
  residual stream (times the post-MLP norm gain in Gemma). Passed through the final
  norm's gain (centred first for LayerNorm) and the unembedding, that direction scores
  every vocabulary token: the top scores are what the neuron promotes when it fires
  positively, the bottom ones what it suppresses (signs flip for negative activations).
  Scores ignore the norms' per-position scale, so they rank tokens but are not logits.
* **Activations on a prompt**: the neuron's value at every position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, computed_field

from analysis.attribution.adapters import get_adapter
from analysis.attribution.core import as_id_list, decode_tokens
from analysis.attribution.results import TokenScore
from analysis.errors import InputError
from analysis.neuron_ref import neuron_name
from analysis.nnsight_traces import node_values


class PositionActivation(BaseModel):
    position: int
    token_id: int
    token: str | None = None
    activation: float


class NeuronDescription(BaseModel):
    layer: int
    neuron: int
    promotes: list[TokenScore]
    suppresses: list[TokenScore]
    activations: list[PositionActivation] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        return neuron_name(self.layer, self.neuron)


def check_neuron(n_layers: int, n_neurons: int, layer: int, neuron: int) -> None:
    if not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise InputError(f"layer must be in [0, {n_layers - 1}], got {layer!r}", field="layer")
    if not isinstance(neuron, int) or not 0 <= neuron < n_neurons:
        raise InputError(f"neuron must be in [0, {n_neurons - 1}], got {neuron!r}", field="neuron")


def check_model_neuron(model: torch.nn.Module, layer: int, neuron: int) -> None:
    """``check_neuron`` against a loaded model's shape."""
    adapter = get_adapter(model)
    check_neuron(adapter.n_layers, adapter.n_neurons, layer, neuron)


def logit_lens(model: torch.nn.Module, layer: int, neuron: int) -> torch.Tensor:
    """Vocabulary scores ``[vocab]`` of the neuron's output direction (float32)."""
    adapter = get_adapter(model)
    check_neuron(adapter.n_layers, adapter.n_neurons, layer, neuron)
    with torch.no_grad():
        w = adapter.down_matrix(layer)
        direction = w[:, neuron].float()
        gain = adapter.output_gain(layer)
        if gain is not None:
            direction = direction * gain.to(direction.device)
        direction = adapter.direction_through_final_norm(direction)
        unembed = adapter.unembedding()
        return (unembed.float() @ direction.to(unembed.device)).cpu()


def neuron_activations(
    model: torch.nn.Module, input_ids: Sequence[int] | torch.Tensor, layer: int, neuron: int
) -> list[float]:
    adapter = get_adapter(model)
    check_neuron(adapter.n_layers, adapter.n_neurons, layer, neuron)
    ids = as_id_list(input_ids, adapter.vocab_size)
    return node_values(adapter, ids, layer, neuron).float().cpu().tolist()


def describe_neuron(
    model: torch.nn.Module,
    tokenizer: object | None,
    layer: int,
    neuron: int,
    input_ids: Sequence[int] | torch.Tensor | None = None,
    *,
    top_k: int = 10,
) -> NeuronDescription:
    """Promoted/suppressed tokens (logit lens) and, given a prompt, per-position activations."""
    if not isinstance(top_k, int) or not 1 <= top_k <= 200:
        raise InputError("top_k must be in [1, 200]", field="top_k")
    scores = logit_lens(model, layer, neuron)
    up = scores.topk(top_k)
    down = (-scores).topk(top_k)

    def listing(idx: list[int], vals: list[float]) -> list[TokenScore]:
        texts = decode_tokens(tokenizer, idx) or [None] * len(idx)
        return [
            TokenScore(id=i, token=t, score=v) for i, t, v in zip(idx, texts, vals, strict=True)
        ]

    activations = None
    if input_ids is not None:
        adapter = get_adapter(model)
        ids = as_id_list(input_ids, adapter.vocab_size)
        values = neuron_activations(model, ids, layer, neuron)
        texts = decode_tokens(tokenizer, ids) or [None] * len(ids)
        activations = [
            PositionActivation(position=p, token_id=i, token=t, activation=v)
            for p, (i, t, v) in enumerate(zip(ids, texts, values, strict=True))
        ]
    return NeuronDescription(
        layer=layer,
        neuron=neuron,
        promotes=listing(up.indices.tolist(), up.values.tolist()),
        suppresses=listing(down.indices.tolist(), (-down.values).tolist()),
        activations=activations,
    )
