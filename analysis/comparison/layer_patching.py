"""Activation patching from the variant into the base, layer by layer: the share of the
change in m that each layer's MLP output, and the residual stream after it, carries."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from analysis.answers import resolve_contrast
from analysis.attribution.adapters import get_adapter
from analysis.attribution.core import last_metric_logits, metric_from_logits
from analysis.errors import InputError
from analysis.models import LoadedModel
from analysis.nnsight_traces import forward_logits, record_outputs, replaced_outputs_last
from analysis.prompts import PromptSpec, format_prompt

PATCH_ROWS = 16  # patched conditions per forward pass


class LayerShare(BaseModel):
    """How much of the change in m one layer carries, by patching the variant's
    activations into the base: share = (m_patched - m_base) / (m_tuned - m_base)."""

    layer: int
    m_mlp: float
    m_residual: float
    mlp_share: float | None
    residual_share: float | None


def record_layers(lm: LoadedModel, input_ids: list[int]) -> dict[str, torch.Tensor]:
    """Each layer's MLP output (as added to the residual) and its output residual stream,
    ``[L, seq, d]`` each, for the prompt (one nnsight trace)."""
    adapter = get_adapter(lm.model)
    modules = [m for layer in range(adapter.n_layers)
               for m in (adapter.mlp_output_module(layer), adapter.layers()[layer])]
    outputs = record_outputs(adapter, input_ids, modules)
    return {"mlp": torch.stack(outputs[0::2]), "residual": torch.stack(outputs[1::2])}


def layer_shares(lm: LoadedModel, input_ids: list[int], target_a: int,
                 target_b: int | None, m_base: float, m_tuned: float,
                 recorded: dict[str, torch.Tensor]) -> list[LayerShare]:
    """For each layer, the base's m with that layer's MLP output (and, separately, its
    output residual stream) replaced by the variant's ``recorded`` ones. Batched: one
    row per condition. Runs here or on NDIF alike."""
    adapter = get_adapter(lm.model)
    n = adapter.n_layers
    conditions = [("mlp", layer) for layer in range(n)] + [("residual", layer)
                                                          for layer in range(n)]
    results: dict[tuple[str, int], float] = {}
    for start in range(0, len(conditions), PATCH_ROWS):
        chunk = conditions[start:start + PATCH_ROWS]
        replacements = []
        for layer in range(n):  # forward order: a layer's MLP output, then its output
            for where in ("mlp", "residual"):
                rows = [i for i, c in enumerate(chunk) if c == (where, layer)]
                if rows:
                    module = (adapter.mlp_output_module(layer) if where == "mlp"
                              else adapter.layers()[layer])
                    replacements.append((module, rows, recorded[where][layer]))
        last = replaced_outputs_last(adapter, input_ids, len(chunk), replacements)
        m = metric_from_logits(last_metric_logits(adapter, last, target_a,
                                                  target_b)).tolist()
        results.update(zip(chunk, m, strict=True))
    delta = m_tuned - m_base

    def share(value: float) -> float | None:
        return (value - m_base) / delta if abs(delta) > 1e-6 else None

    return [LayerShare(layer=layer, m_mlp=results[("mlp", layer)],
                       m_residual=results[("residual", layer)],
                       mlp_share=share(results[("mlp", layer)]),
                       residual_share=share(results[("residual", layer)]))
            for layer in range(n)]


class PatchSource(BaseModel):
    """The variant's side of a circuit-free layer patching: the prompt's tokens, the
    answers, its m and its recorded layers (tensors stay in memory only)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    input_ids: list[int]
    target_a: int
    target_b: int | None
    m: float
    recorded: dict[str, torch.Tensor]


def _m(lm: LoadedModel, ids: list[int], a: int, b: int | None) -> float:
    logits = forward_logits(lm, [ids], 1)[:, -1]
    return float(metric_from_logits(logits[:, [a] if b is None else [a, b]])[0])


def record_source(variant: LoadedModel, prompt: PromptSpec, answer_a: str,
                  answer_b: str | None = None,
                  max_prompt_tokens: int | None = None) -> PatchSource:
    """Phase 1 of :func:`patch_between`, on the variant."""
    ids = list(format_prompt(variant.tokenizer, prompt, max_prompt_tokens).input_ids)
    ta, tb = resolve_contrast(variant.tokenizer, answer_a, answer_b)
    a, b = ta.token_id, (tb.token_id if tb else None)
    return PatchSource(input_ids=ids, target_a=a, target_b=b, m=_m(variant, ids, a, b),
                       recorded=record_layers(variant, ids))


def patch_from(base: LoadedModel, source: PatchSource, prompt: PromptSpec,
               max_prompt_tokens: int | None = None) -> list[LayerShare]:
    """Phase 2 of :func:`patch_between`, on the base."""
    ids = list(format_prompt(base.tokenizer, prompt, max_prompt_tokens).input_ids)
    if ids != source.input_ids:
        raise InputError("the two models tokenize the prompt differently; layer patching "
                         "needs the same tokens", field="variant")
    adapter = get_adapter(base.model)
    shape = tuple(source.recorded["residual"].shape)
    if shape != (adapter.n_layers, len(ids), adapter.d_model):
        raise InputError(f"the variant's layers {shape[0]} x d_model {shape[-1]} do not "
                         f"match the base's {adapter.n_layers} x {adapter.d_model}",
                         field="variant")
    a, b = source.target_a, source.target_b
    return layer_shares(base, ids, a, b, _m(base, ids, a, b), source.m, source.recorded)


def patch_between(base: LoadedModel, variant: LoadedModel, prompt: PromptSpec,
                  answer_a: str, answer_b: str | None = None,
                  max_prompt_tokens: int | None = None) -> list[LayerShare]:
    """Layer patching between two models of one architecture without a circuit: m on
    each, the variant's layers recorded, then patched into the base layer by layer.
    Nothing here needs gradients, so it runs on models NDIF hosts (e.g. a base model and
    its instruct tune) as well as on local ones."""
    source = record_source(variant, prompt, answer_a, answer_b, max_prompt_tokens)
    return patch_from(base, source, prompt, max_prompt_tokens)
