"""nnsight as the model-access layer for forward passes that read or change activations.

Interventions, faithfulness ablations and the neuron panel's activation read-out run as
nnsight traces over the same loaded Hugging Face model: the code that says *which*
activation to read or overwrite is the field's standard idiom (``.input``, ``.save()``),
and the same traced code is what NDIF would execute remotely for models no local GPU
holds. The attribution backward (RelP, grad x act) and the batched edge VJPs stay on
plain torch hooks (``analysis.attribution.hooks``): they rewrite the backward pass, which
nnsight does not model, and they are the hot path.

A node is a neuron's value at the MLP's down-projection input, as everywhere else; each
architecture adapter names that module, and :func:`envoy` finds nnsight's handle for it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # no runtime import: analysis.attribution imports this module
    from analysis.attribution.adapters import ArchAdapter

# One nnsight wrapper per model object (building one walks the module tree). Weak keys:
# a model that is unloaded takes its wrapper with it.
_WRAPPERS: weakref.WeakKeyDictionary[torch.nn.Module, Any] = weakref.WeakKeyDictionary()
_PATHS: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, str]] = (
    weakref.WeakKeyDictionary())

NodePatch = Callable[[int, torch.Tensor], torch.Tensor | None]


def traced(module: torch.nn.Module) -> Any:
    """The module wrapped for nnsight tracing (cached)."""
    from nnsight import NNsight

    wrapper = _WRAPPERS.get(module)
    if wrapper is None:
        wrapper = _WRAPPERS[module] = NNsight(module)
    return wrapper


def envoy(root: torch.nn.Module, module: torch.nn.Module) -> Any:
    """nnsight's handle for ``module``, a submodule of ``root``."""
    paths = _PATHS.get(root)
    if paths is None:
        paths = _PATHS[root] = {id(m): name for name, m in root.named_modules()}
    path = paths.get(id(module))
    if path is None:
        raise LookupError(f"{type(module).__name__} is not a submodule of "
                          f"{type(root).__name__}")
    handle = traced(root)
    for part in path.split(".") if path else []:
        handle = handle[int(part)] if part.isdigit() else getattr(handle, part)
    return handle


def patched_hidden(
    adapter: ArchAdapter, input_ids: Sequence[int], rows: int, patch: NodePatch
) -> torch.Tensor:
    """One forward of ``rows`` copies of the prompt in which every layer's node values
    ``[rows, seq, n_neurons]`` go through ``patch(layer, values)`` (None keeps them);
    later layers see the result. Returns the final-normed residual at the last position,
    ``[rows, d_model]``."""
    base = adapter.base()
    ids = torch.tensor([list(input_ids)], device=adapter.input_device)
    with torch.no_grad():
        embeds = adapter.embed(ids).expand(rows, -1, -1)
        with traced(base).trace(inputs_embeds=embeds, use_cache=False):
            for layer in range(adapter.n_layers):
                down = envoy(base, adapter.mlp(layer).down)
                values = patch(layer, down.input)
                if values is not None:
                    down.input = values
            hidden = traced(base).output.last_hidden_state[:, -1].save()
    return hidden


def node_values(adapter: ArchAdapter, input_ids: Sequence[int], layer: int,
                neuron: int) -> torch.Tensor:
    """One neuron's value at every position of the prompt, ``[seq]`` (read, not changed)."""
    base = adapter.base()
    ids = torch.tensor([list(input_ids)], device=adapter.input_device)
    with torch.no_grad():
        embeds = adapter.embed(ids)
        with traced(base).trace(inputs_embeds=embeds, use_cache=False) as tracer:
            values = envoy(base, adapter.mlp(layer).down).input[0, :, neuron].save()
            # Stop after the layer that holds the neuron: nothing later is needed.
            tracer.stop()
    return values


def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


def record_outputs(adapter: ArchAdapter, input_ids: Sequence[int],
                   modules: Sequence[torch.nn.Module]) -> list[torch.Tensor]:
    """The outputs (first element, batch row 0) of ``modules``, listed in the order the
    forward runs them, for the prompt."""
    base = adapter.base()
    ids = torch.tensor([list(input_ids)], device=adapter.input_device)
    saved: list[torch.Tensor] = []
    with torch.no_grad():
        embeds = adapter.embed(ids)
        with traced(base).trace(inputs_embeds=embeds, use_cache=False):
            for module in modules:
                saved.append(_first(envoy(base, module).output)[0].detach().clone().save())
    return saved


def replaced_outputs_hidden(
    adapter: ArchAdapter, input_ids: Sequence[int], rows: int,
    replacements: Sequence[tuple[torch.nn.Module, list[int], torch.Tensor]],
) -> torch.Tensor:
    """One forward of ``rows`` copies of the prompt in which each (module, rows, value)
    replaces that module's output in those rows (listed in forward order; a module may
    appear once). Returns the final-normed residual at the last position."""
    base = adapter.base()
    ids = torch.tensor([list(input_ids)], device=adapter.input_device)
    with torch.no_grad():
        embeds = adapter.embed(ids).expand(rows, -1, -1)
        with traced(base).trace(inputs_embeds=embeds, use_cache=False):
            for module, at, value in replacements:
                handle = envoy(base, module)
                out = handle.output
                h = _first(out).clone()
                h[at] = value.to(h.device, h.dtype)
                handle.output = (h, *out[1:]) if isinstance(out, tuple) else h
            hidden = traced(base).output.last_hidden_state[:, -1].save()
    return hidden
