"""Architecture adapters: where each model family keeps its MLP neurons, norms and attention.

The algorithms (attribution, edges, ablations, descriptions) only talk to an
:class:`ArchAdapter`; supporting a new family means writing one adapter and registering
its ``model_type`` — never editing an algorithm.

A *node* is one MLP neuron at one position: the input of the MLP's output projection
(``down_proj`` / GPT-2 ``c_proj``), i.e. ``act(gate(x)) * up(x)`` in gated MLPs and
``act(fc(x))`` in plain ones. Adapters therefore name, per layer:

* ``down``  - the module whose *input* is the node activation (hooks capture/patch it);
* ``act``   - the nonlinearity module (RelP replaces its local derivative);
* ``up``    - the multiplicative partner in gated MLPs (RelP splits the gradient 50/50);
* the modules whose outputs are attention queries/keys (RelP freezes the pattern);
* the residual-stream norms (RelP freezes their scale, `frozen_norm`);
* the MLP block and `neuron_values`, which recomputes a few neurons from the MLP input
  (edges seed their VJPs there instead of running the full gate/up projections);
* the output direction of a neuron (`down_matrix`, `output_gain`) and the final norm's
  linear part (`direction_through_final_norm`) for the logit lens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from analysis.attribution.linearize import half_gradient, linearized_gate, upcast
from analysis.errors import InputError
from analysis.lora import linear_rows, linear_weight


@dataclass(frozen=True)
class MLPModules:
    """The modules of one layer's MLP that the hooks attach to."""

    down: nn.Module
    act: nn.Module
    up: nn.Module | None  # None for non-gated MLPs


@dataclass(frozen=True)
class QKOutput:
    """A module whose output carries attention queries and/or keys.

    ``columns`` selects the q/k part of a fused projection (GPT-2's ``c_attn`` emits
    q|k|v); None means the whole output is q or k.
    """

    module: nn.Module
    columns: slice | None = None


class ArchAdapter:
    """Base class: one subclass per architecture family."""

    family: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...]] = ()
    gated: ClassVar[bool] = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config

    # --- structure -------------------------------------------------------------------
    def base(self) -> nn.Module:
        """The decoder stack whose ``last_hidden_state`` is already final-normed."""
        raise NotImplementedError

    def layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def mlp(self, layer: int) -> MLPModules:
        raise NotImplementedError

    def mlp_block(self, layer: int) -> nn.Module:
        """The MLP container; its forward input is the (pre-normed) MLP input."""
        raise NotImplementedError

    def neuron_values(
        self, layer: int, x: torch.Tensor, neurons: torch.Tensor, linearize: str | None
    ) -> torch.Tensor:
        """Recompute selected node activations from MLP inputs: ``x[k, d] -> [k]``.

        Neuron ``k`` is evaluated on row ``k`` of ``x`` using only its own weight rows,
        so a backward from a few neurons never touches the full projections. Under
        ``linearize`` the gate gets the same backward as `hooks.instrument` gives it."""
        raise NotImplementedError

    def mlp_output_module(self, layer: int) -> nn.Module:
        """The module whose output the layer adds to the residual stream as its MLP part
        (what layer-by-layer activation patching swaps)."""
        return self.mlp_block(layer)

    def qk_outputs(self, layer: int) -> list[QKOutput]:
        raise NotImplementedError

    def norms(self) -> Iterator[nn.Module]:
        """Every normalisation module on the residual path (incl. the final norm)."""
        raise NotImplementedError

    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def unembedding(self) -> torch.Tensor:
        """``[vocab, d_model]`` rows that turn the final (normed) residual into logits."""
        return self.model.get_output_embeddings().weight

    def unembedding_bias(self) -> torch.Tensor | None:
        return getattr(self.model.get_output_embeddings(), "bias", None)

    def logit_softcap(self) -> float | None:
        cap = getattr(self.config, "final_logit_softcapping", None)
        return float(cap) if cap else None

    def down_matrix(self, layer: int) -> torch.Tensor:
        """``[d_model, n_neurons]``: column ``n`` is what neuron ``n`` writes per unit
        (with an attached LoRA overlay's delta)."""
        return linear_weight(self.mlp(layer).down)

    def output_gain(self, layer: int) -> torch.Tensor | None:
        """Per-channel gain applied to the MLP output before the residual add, if any."""
        return None

    # --- linearisation (RelP) --------------------------------------------------------
    def frozen_norm(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return ``y`` with the same value but the backward of a norm with frozen scale."""
        raise NotImplementedError

    def direction_through_final_norm(self, direction: torch.Tensor) -> torch.Tensor:
        """What a residual direction looks like after the final norm's (linear) part."""
        raise NotImplementedError

    # --- sizes -----------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layers())

    @property
    def n_neurons(self) -> int:
        return int(self.down_matrix(0).shape[1])

    @property
    def d_model(self) -> int:
        return int(self.down_matrix(0).shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.unembedding().shape[0])

    @property
    def input_device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def hidden(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Final-normed residual stream ``[batch, seq, d_model]`` (no logits computed)."""
        out = self.base()(inputs_embeds=inputs_embeds, use_cache=False)
        return out.last_hidden_state


# ---------------------------------------------------------------------------------------
# Llama-style decoders: Llama, Mistral, Qwen2/3, Gemma 1/2/3 (gated MLP, RMSNorm)
# ---------------------------------------------------------------------------------------


def _rows_linear(linear: nn.Module, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``linear(x)[k, rows[k]]`` for each k, touching only the needed weight rows (plus an
    attached LoRA overlay's delta, so recomputed neurons match the variant's forward)."""
    w = linear_rows(linear, rows).to(x.dtype)
    out = (x * w).sum(-1)
    bias = getattr(linear, "bias", None)
    if bias is not None:
        out = out + bias[rows.to(bias.device)].to(x.dtype)
    return out


def _rms_eps(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps"):
        value = getattr(module, name, None)
        if value is not None:
            return float(value)
    return 1e-6


class LlamaAdapter(ArchAdapter):
    """Gated MLP (gate/up/down), RMSNorm with gain ``w``, separate q/k/v projections."""

    family = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    # Gemma stores its RMSNorm gain as ``1 + w``.
    gain_offset: ClassVar[float] = 0.0

    def base(self) -> nn.Module:
        return self.model.model

    def layers(self) -> list[nn.Module]:
        return list(self.model.model.layers)

    def mlp(self, layer: int) -> MLPModules:
        mlp = self.model.model.layers[layer].mlp
        return MLPModules(down=mlp.down_proj, act=mlp.act_fn, up=mlp.up_proj)

    def mlp_block(self, layer: int) -> nn.Module:
        return self.model.model.layers[layer].mlp

    def neuron_values(
        self, layer: int, x: torch.Tensor, neurons: torch.Tensor, linearize: str | None
    ) -> torch.Tensor:
        mlp = self.mlp(layer)
        gate_proj = self.model.model.layers[layer].mlp.gate_proj
        assert mlp.up is not None
        g = _rows_linear(gate_proj, x, neurons)
        u = _rows_linear(mlp.up, x, neurons)
        a = mlp.act.forward(g)
        if linearize is not None:
            half = linearize == "relp"
            a = linearized_gate(mlp.act, g, a, linearize, half)
            if half:
                u = half_gradient(u)
        return a * u

    def qk_outputs(self, layer: int) -> list[QKOutput]:
        attn = self.model.model.layers[layer].self_attn
        return [QKOutput(attn.q_proj), QKOutput(attn.k_proj)]

    def norms(self) -> Iterator[nn.Module]:
        for module in self.model.model.modules():
            if type(module).__name__.endswith("RMSNorm"):
                yield module

    def final_norm(self) -> nn.Module:
        return self.model.model.norm

    def _gain(self, module: nn.Module) -> torch.Tensor:
        return upcast(module.weight) + self.gain_offset

    def frozen_norm(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # y = x * rsqrt(mean(x^2) + eps) * gain. Freezing the rsqrt makes it diagonal and
        # linear: dy/dx = scale * gain. The forward value stays y exactly.
        with torch.no_grad():
            xf = upcast(x)
            scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + _rms_eps(module))
            coef = (scale * self._gain(module)).to(x.dtype)
        return y.detach() + ((x - x.detach()) * coef).to(y.dtype)

    def direction_through_final_norm(self, direction: torch.Tensor) -> torch.Tensor:
        return direction.float() * self._gain(self.final_norm())


class GemmaAdapter(LlamaAdapter):
    """Gemma 1/2/3 text models: ``(1 + w)`` norm gains, sandwich norms around the MLP."""

    family = "gemma"
    model_types = ("gemma", "gemma2", "gemma3_text")
    gain_offset = 1.0

    def output_gain(self, layer: int) -> torch.Tensor | None:
        post = getattr(self.model.model.layers[layer], "post_feedforward_layernorm", None)
        return None if post is None else self._gain(post)

    def mlp_output_module(self, layer: int) -> nn.Module:
        # Gemma normalises the MLP output once more before adding it to the residual.
        post = getattr(self.model.model.layers[layer], "post_feedforward_layernorm", None)
        return post if post is not None else self.mlp_block(layer)


# ---------------------------------------------------------------------------------------
# GPT-2: non-gated MLP (c_fc -> act -> c_proj, Conv1D), LayerNorm, fused q|k|v
# ---------------------------------------------------------------------------------------


class GPT2Adapter(ArchAdapter):
    family = "gpt2"
    model_types = ("gpt2",)
    gated = False

    def base(self) -> nn.Module:
        return self.model.transformer

    def layers(self) -> list[nn.Module]:
        return list(self.model.transformer.h)

    def mlp(self, layer: int) -> MLPModules:
        mlp = self.model.transformer.h[layer].mlp
        return MLPModules(down=mlp.c_proj, act=mlp.act, up=None)

    def mlp_block(self, layer: int) -> nn.Module:
        return self.model.transformer.h[layer].mlp

    def neuron_values(
        self, layer: int, x: torch.Tensor, neurons: torch.Tensor, linearize: str | None
    ) -> torch.Tensor:
        mlp = self.model.transformer.h[layer].mlp
        w = mlp.c_fc.weight[:, neurons.to(mlp.c_fc.weight.device)].T  # Conv1D: [in, out]
        pre = (x * w.to(x.dtype)).sum(-1) + mlp.c_fc.bias[neurons.to(x.device)].to(x.dtype)
        a = mlp.act.forward(pre)
        if linearize is not None:
            a = linearized_gate(mlp.act, pre, a, linearize, False)
        return a

    def qk_outputs(self, layer: int) -> list[QKOutput]:
        attn = self.model.transformer.h[layer].attn
        return [QKOutput(attn.c_attn, slice(0, 2 * attn.split_size))]

    def norms(self) -> Iterator[nn.Module]:
        for module in self.model.transformer.modules():
            if isinstance(module, nn.LayerNorm):
                yield module

    def final_norm(self) -> nn.Module:
        return self.model.transformer.ln_f

    def down_matrix(self, layer: int) -> torch.Tensor:
        # Conv1D stores its weight as [in, out].
        return self.mlp(layer).down.weight.T

    def frozen_norm(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # LayerNorm with frozen std: centring stays (it is linear), 1/std is a constant.
        with torch.no_grad():
            xf = upcast(x)
            inv_std = torch.rsqrt(xf.var(-1, unbiased=False, keepdim=True) + module.eps)
            coef = (inv_std * module.weight.float()).to(x.dtype)
        dx = x - x.detach()
        return y.detach() + ((dx - dx.mean(-1, keepdim=True)) * coef).to(y.dtype)

    def direction_through_final_norm(self, direction: torch.Tensor) -> torch.Tensor:
        d = direction.float()
        return (d - d.mean(-1, keepdim=True)) * self.final_norm().weight.float()


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------

_ADAPTERS: dict[str, type[ArchAdapter]] = {}


def register_adapter(cls: type[ArchAdapter]) -> type[ArchAdapter]:
    """Register an adapter for each of its ``model_types`` (usable as a decorator)."""
    for model_type in cls.model_types:
        _ADAPTERS[model_type] = cls
    return cls


for _cls in (LlamaAdapter, GemmaAdapter, GPT2Adapter):
    register_adapter(_cls)


def supported_model_types() -> list[str]:
    return sorted(_ADAPTERS)


def get_adapter(model: Any) -> ArchAdapter:
    """The adapter for ``model`` (a Hugging Face ``*ForCausalLM``), or InputError."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = _ADAPTERS.get(str(model_type))
    if cls is None:
        raise InputError(
            f"neuron attribution does not support model type {model_type!r}; "
            f"supported: {', '.join(supported_model_types())}",
            field="model",
        )
    return cls(model)
