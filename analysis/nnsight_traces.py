"""nnsight as the model-access layer for forward passes that read or change activations.

Interventions, faithfulness ablations and the neuron panel's activation read-out run as
nnsight traces over the same loaded Hugging Face model: the code that says *which*
activation to read or overwrite is the field's standard idiom (``.input``, ``.save()``),
and the same traced code is what NDIF would execute remotely for models no local GPU
holds. Locally the attribution backward (RelP, grad x act) and the batched edge VJPs stay
on plain torch hooks (``analysis.attribution.hooks``): RelP rewrites the backward pass and
they are the hot path. For a model on NDIF grad x act's plain backward runs inside the
trace instead (:func:`remote_gradients`).

A node is a neuron's value at the MLP's down-projection input, as everywhere else; each
architecture adapter names that module, and :func:`envoy` finds nnsight's handle for it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # no runtime import: analysis.attribution imports this module
    from analysis.attribution.adapters import ArchAdapter

# One nnsight wrapper per model object (building one walks the module tree). Weak keys:
# a model that is unloaded takes its wrapper with it.
_WRAPPERS: weakref.WeakKeyDictionary[torch.nn.Module, Any] = weakref.WeakKeyDictionary()
_PATHS: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, str]] = (
    weakref.WeakKeyDictionary())
# A model on NDIF: its causal LM module (meta weights; local ones in the simulation).
_REMOTE: weakref.WeakKeyDictionary[torch.nn.Module, RemoteAccess] = (
    weakref.WeakKeyDictionary())



def attach_remote(module: torch.nn.Module, remote: RemoteAccess) -> None:
    """Route this causal LM's traced forwards through NDIF (or its simulation): the
    same trace code then runs on the server against the model the request names."""
    _REMOTE[module] = remote
    _WRAPPERS[module] = remote.wrapper


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


@dataclass
class LastPosition:
    """What a traced forward gives at the prompt's last position, one row per condition:
    the final-normed residual for a local model (the metric then needs only two rows of
    the unembedding), or the logits themselves for a model on NDIF, whose unembedding is
    not here (see ``analysis.attribution.core.last_metric_logits``)."""

    hidden: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def _trace_root(adapter: ArchAdapter, input_ids: Sequence[int], rows: int
                ) -> tuple[torch.nn.Module, dict[str, Any], bool]:
    """Where a forward of ``rows`` copies of the prompt is traced, and with what.

    Local: the decoder stack, fed embeddings (the output is the final-normed residual).
    NDIF (or its simulation): the whole causal LM through its remote wrapper, fed token
    ids - the embedding and the unembedding are on the server - keeping only the last
    position's logits."""
    ids = torch.tensor([list(input_ids)], dtype=torch.long)
    remote = _REMOTE.get(adapter.model)
    if remote is None:
        base = adapter.base()
        embeds = adapter.embed(ids.to(adapter.input_device)).expand(rows, -1, -1)
        return base, {"inputs_embeds": embeds, "use_cache": False}, False
    return adapter.model, {"input_ids": ids.expand(rows, -1), "use_cache": False,
                           "logits_to_keep": 1, **remote.trace_kwargs()}, True


def _last(root: torch.nn.Module, remote: bool) -> Any:
    """The traced output to save: last-position logits (NDIF) or residual (local)."""
    out = traced(root).output
    return out.logits[:, -1] if remote else out.last_hidden_state[:, -1]


def patched_last(
    adapter: ArchAdapter, input_ids: Sequence[int], rows: int, patch: NodePatch
) -> LastPosition:
    """One forward of ``rows`` copies of the prompt in which every layer's node values
    ``[rows, seq, n_neurons]`` go through ``patch(layer, values)`` (None keeps them);
    later layers see the result. Runs here or on NDIF alike."""
    root, kwargs, remote = _trace_root(adapter, input_ids, rows)
    with torch.no_grad(), traced(root).trace(**kwargs):
        for layer in range(adapter.n_layers):
            down = envoy(root, adapter.mlp(layer).down)
            values = patch(layer, down.input)
            if values is not None:
                down.input = values
        last = _last(root, remote).save()
    return LastPosition(logits=last) if remote else LastPosition(hidden=last)


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
    forward runs them, for the prompt. Runs here or on NDIF alike."""
    root, kwargs, _ = _trace_root(adapter, input_ids, 1)
    saved: list[torch.Tensor] = []
    with torch.no_grad(), traced(root).trace(**kwargs):
        for module in modules:
            saved.append(_first(envoy(root, module).output)[0].detach().clone().save())
    return saved


def replaced_outputs_last(
    adapter: ArchAdapter, input_ids: Sequence[int], rows: int,
    replacements: Sequence[tuple[torch.nn.Module, list[int], torch.Tensor]],
) -> LastPosition:
    """One forward of ``rows`` copies of the prompt in which each (module, rows, value)
    replaces that module's output in those rows (listed in forward order; a module may
    appear once). Runs here or on NDIF alike."""
    root, kwargs, remote = _trace_root(adapter, input_ids, rows)
    with torch.no_grad(), traced(root).trace(**kwargs):
        for module, at, value in replacements:
            handle = envoy(root, module)
            out = handle.output
            h = _first(out).clone()
            h[at] = value.to(h.device, h.dtype)
            handle.output = (h, *out[1:]) if isinstance(out, tuple) else h
        last = _last(root, remote).save()
    return LastPosition(logits=last) if remote else LastPosition(hidden=last)


# ---------------------------------------------------------------------------------------
# NDIF: models no local GPU holds
# ---------------------------------------------------------------------------------------


class RemoteAccess:
    """A model that runs on NDIF through nnsight's remote execution.

    ``wrapper`` is an nnsight ``LanguageModel``: for NDIF proper it holds only the config
    and tokenizer (meta weights; the server has the model), and requests go to NDIF with
    the API key read from the environment at call time - never stored or logged. With
    ``simulate`` the weights are local and every request goes through nnsight's local
    simulation of the remote path instead: serialized exactly as for NDIF, deserialized
    with the caller's own modules hidden, then run here (tests and dry runs)."""

    def __init__(self, wrapper: Any, *, simulate: bool, host: str | None,
                 api_key_env: str) -> None:
        self.wrapper = wrapper
        self.simulate = simulate
        self.host = host
        self.api_key_env = api_key_env

    def trace_kwargs(self) -> dict[str, Any]:
        if self.simulate:
            return {"remote": "local"}
        import os

        from nnsight.intervention.backends.remote import RemoteBackend

        from analysis.errors import InputError

        key = os.environ.get(self.api_key_env)
        if not key:
            raise InputError(f"this model runs on NDIF: set {self.api_key_env} to your NDIF "
                             "API key in the server's environment", field="model")
        return {"backend": RemoteBackend(self.wrapper.to_model_key(), host=self.host,
                                         api_key=key)}


def forward_logits(lm: Any, seqs: Sequence[Sequence[int]], keep: int) -> torch.Tensor:
    """The last ``keep`` positions' logits of token sequences of any lengths, ``[B, keep,
    V]`` float32 on the CPU: a plain forward of a local model, or one nnsight trace that
    NDIF (or its simulation) executes.

    Left padding keeps every sequence's last token in the last column; explicit positions
    make the padded rows see the same positions as an unpadded run."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), int(lm.tokenizer.pad_token_id or 0),
                           dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        attention_mask[row, width - len(seq):] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    remote: RemoteAccess | None = getattr(lm, "remote", None)
    if remote is None:
        device = lm.input_device
        with torch.inference_mode():
            out = lm.model(input_ids=input_ids.to(device),
                           attention_mask=attention_mask.to(device),
                           position_ids=position_ids.to(device), logits_to_keep=keep)
        return out.logits.float().cpu()
    wrapper = remote.wrapper
    with torch.no_grad(), wrapper.trace(input_ids=input_ids, attention_mask=attention_mask,
                                        position_ids=position_ids, logits_to_keep=keep,
                                        **remote.trace_kwargs()):
        logits = wrapper.output.logits.save()
    return logits.float().cpu()


def is_remote(module: torch.nn.Module) -> bool:
    """Whether this causal LM's traced forwards run on NDIF (or its simulation)."""
    return module in _REMOTE


@dataclass
class RemoteGradients:
    """One remote forward+backward of the prompt: every layer's node values and their
    gradients of m ``[layers, seq, n_neurons]``, the embeddings' activation x gradient
    sum, and the last position's logits ``[vocab]``."""

    activation: torch.Tensor
    gradient: torch.Tensor
    embedding_sum: float
    logits: torch.Tensor


def remote_gradients(adapter: ArchAdapter, input_ids: Sequence[int], target_a: int,
                     target_b: int | None) -> RemoteGradients:
    """grad x act's pass as one nnsight trace NDIF executes: the embeddings become the
    only leaf (the hosted weights need no gradient), m = logit(A) - logit(B) is taken from
    the last position's logits (soft-cap applied, as served), and the backward inside the
    trace reads each node's gradient in reverse forward order."""
    root, kwargs, remote = _trace_root(adapter, input_ids, 1)
    assert remote, "remote_gradients is for models on NDIF"
    wrapper = traced(root)
    embed = envoy(root, root.get_input_embeddings())
    downs = [adapter.mlp(layer).down for layer in range(adapter.n_layers)]
    # Saved by appending to lists made out here: names first bound inside a trace's
    # nested backward block do not reach a function's locals. Inside the trace body no
    # comment lines and no statement spanning lines: either shifted nnsight's (0.8.1)
    # lookup of the nested ``with m.backward():`` block, which then ran as a bare backward.
    acts: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    rest: list[torch.Tensor] = []
    with torch.enable_grad(), wrapper.trace(**kwargs):
        emb = embed.output.detach().requires_grad_(True)
        embed.output = emb
        nodes = [envoy(root, down).input for down in downs]
        last = wrapper.output.logits[0, -1].float()
        m = last[target_a] - (last[target_b] if target_b is not None else 0.0)
        for node in nodes:
            acts.append(node[0].detach().float().save())
        rest.append(last.detach().save())
        with m.backward():
            for node in reversed(nodes):
                grads.append(node.grad[0].float().save())
            rest.append((emb * emb.grad).sum().float().save())
    return RemoteGradients(activation=torch.stack(acts), gradient=torch.stack(grads[::-1]),
                           embedding_sum=float(rest[1]), logits=rest[0])
