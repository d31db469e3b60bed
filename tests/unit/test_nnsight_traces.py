"""nnsight as the model-access layer: parity with the torch-hook path it replaced, on tiny
random models of every supported family, and the traced requests NDIF would receive.

The reference below is the previous implementation (a forward pre-hook on each MLP's
down projection), kept here as the independent check the nnsight path must match."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from analysis.attribution import NeuronEdit, intervene
from analysis.attribution.adapters import ArchAdapter, get_adapter
from analysis.attribution.logit_lens import neuron_activations
from analysis.nnsight_traces import envoy, node_values, patched_last, traced
from tests.unit.tiny_models import ARCHS, build, random_ids


def hook_patched_hidden(adapter: ArchAdapter, input_ids: Sequence[int], rows: int,
                        patch) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The pre-nnsight path: plain forward pre-hooks, the base model's last hidden state."""
    handles = []
    for layer in range(adapter.n_layers):
        def pre(_module, args, layer=layer):  # type: ignore[no-untyped-def]
            new = patch(layer, args[0])
            return None if new is None else (new, *args[1:])
        handles.append(adapter.mlp(layer).down.register_forward_pre_hook(pre))
    try:
        ids = torch.tensor([list(input_ids)], device=adapter.input_device)
        with torch.no_grad():
            out = adapter.base()(inputs_embeds=adapter.embed(ids).expand(rows, -1, -1),
                                 use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out.last_hidden_state[:, -1]


def _patches(n_neurons: int):  # type: ignore[no-untyped-def]
    """Row 0 clean, row 1 a neuron zeroed in layer 0, row 2 layer 1 scaled by -2."""
    def patch(layer: int, h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        if layer == 0:
            h[1, :, 3] = 0.0
        if layer == 1:
            h[2, :, : n_neurons // 2] *= -2.0
        return h
    return patch


@pytest.mark.parametrize("arch", ARCHS)
def test_patched_forward_matches_the_hook_path(arch: str) -> None:
    model = build(arch)
    adapter = get_adapter(model)
    ids = random_ids(9)
    patch = _patches(adapter.n_neurons)
    ours = patched_last(adapter, ids, 3, patch).hidden
    assert ours is not None
    ref = hook_patched_hidden(adapter, ids, 3, patch)
    assert ours.shape == ref.shape == (3, adapter.d_model)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # The patches did something: the rows differ from the clean one.
    assert not torch.allclose(ours[0], ours[1]) and not torch.allclose(ours[0], ours[2])


@pytest.mark.parametrize("arch", ARCHS)
def test_reading_a_neuron_matches_the_hook_path(arch: str) -> None:
    model = build(arch)
    adapter = get_adapter(model)
    ids = random_ids(7)
    seen: dict[int, torch.Tensor] = {}

    def keep(layer: int, h: torch.Tensor) -> None:
        seen[layer] = h[0].clone()

    hook_patched_hidden(adapter, ids, 1, keep)
    for layer in range(adapter.n_layers):
        torch.testing.assert_close(node_values(adapter, ids, layer, 5), seen[layer][:, 5])
    assert neuron_activations(model, ids, 1, 5) == pytest.approx(
        seen[1][:, 5].tolist(), abs=1e-6)


def test_group_intervention_runs_through_nnsight() -> None:
    """Zeroing a group of neurons (the supernode case) equals the hook path's numbers."""
    model = build("llama")
    adapter = get_adapter(model)
    ids = random_ids(8)
    group = [NeuronEdit(layer=0, neuron=n) for n in (1, 7, 11)] + [
        NeuronEdit(layer=1, neuron=4, scale=0.5, positions=[2, 5])]
    res = intervene(model, None, ids, group, 10, 20, top_k=5)

    def patch(layer: int, h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        if layer == 0:
            h[1, :, [1, 7, 11]] = 0.0
        if layer == 1:
            h[1, [2, 5], 4] *= 0.5
        return h

    hidden = hook_patched_hidden(adapter, ids, 2, patch)
    logits = hidden.float() @ adapter.unembedding().float().T
    assert res.m_before == pytest.approx(float(logits[0, 10] - logits[0, 20]), abs=1e-4)
    assert res.m_after == pytest.approx(float(logits[1, 10] - logits[1, 20]), abs=1e-4)
    assert res.m_after != pytest.approx(res.m_before)


def test_the_wrapper_is_built_once_per_model_and_finds_each_node_module() -> None:
    model = build("qwen3")
    adapter = get_adapter(model)
    base = adapter.base()
    assert traced(base) is traced(base)
    down = envoy(base, adapter.mlp(1).down)
    assert down._module is adapter.mlp(1).down  # the handle wraps the very module
    with pytest.raises(LookupError):
        envoy(base, torch.nn.Linear(2, 2))
