"""Where in the weights a fine-tune changed the model: relative change per layer and
module, from two loaded models or streamed from a variant's safetensors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from analysis.errors import InputError


class WeightChange(BaseModel):
    layer: int | None
    module: str
    relative: float = Field(description="||W_tuned - W_base|| / ||W_base||.")
    norm_base: float


LAYER_RE = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.(.+)$")


def weight_changes(base: torch.nn.Module, tuned: torch.nn.Module,
                   min_relative: float = 0.0) -> list[WeightChange]:
    """Relative weight change per layer and module of a full fine-tune, largest first.
    Refuses models whose parameters do not line up (another base, another shape)."""
    base_names = {n for n, _ in base.named_parameters()}
    tuned_params = dict(tuned.named_parameters())
    if base_names != set(tuned_params):
        missing = sorted(base_names ^ set(tuned_params))[:3]
        raise InputError(f"the two models have different parameters (e.g. {missing}); "
                         "a variant must share its base's architecture", field="variant")
    return _changes(base, tuned_params.items(), min_relative)


def weight_changes_from_files(base: torch.nn.Module, directory: Path,
                              min_relative: float = 0.0) -> list[WeightChange]:
    """The same, reading the fine-tune's tensors one at a time from its safetensors files,
    so a comparison never needs base and variant in memory together. Weights tied to
    another (an output head tied to the embeddings) are not stored and not compared."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise InputError(f"variant {directory.name!r} has no safetensors weights to diff",
                         field="variant")
    base_names = {n for n, _ in base.named_parameters()}
    handles = [safe_open(str(f), framework="pt") for f in files]
    where = {key: h for h in handles for key in h.keys()}  # noqa: SIM118 (not a dict)
    extra = sorted(set(where) - base_names)
    missing = sorted(base_names - set(where))
    if extra or len(missing) > 1:
        example = (extra or missing)[:3]
        raise InputError(f"the variant's weights do not line up with the base (e.g. "
                         f"{example}); a variant must share its base's architecture",
                         field="variant")
    pairs = ((name, where[name].get_tensor(name)) for name in sorted(base_names & set(where)))
    return _changes(base, pairs, min_relative)


def _changes(base: torch.nn.Module, tuned: Iterable[tuple[str, torch.Tensor]],
             min_relative: float) -> list[WeightChange]:
    base_params = dict(base.named_parameters())
    out = []
    with torch.no_grad():
        for name, v in tuned:
            w = base_params[name]
            if w.shape != v.shape:
                raise InputError(f"{name} has shape {tuple(v.shape)} in the variant but "
                                 f"{tuple(w.shape)} in the base", field="variant")
            norm = float(w.float().norm())
            diff = float((v.float().to(w.device) - w.float()).norm())
            relative = diff / norm if norm else (0.0 if diff == 0 else float("inf"))
            if relative < min_relative:
                continue
            layer, module = split_name(name)
            out.append(WeightChange(layer=layer, module=module.removesuffix(".weight"),
                                    relative=relative, norm_base=norm))
    out.sort(key=lambda c: -c.relative)
    return out


def split_name(name: str) -> tuple[int | None, str]:
    """``model.layers.3.mlp.down_proj.weight`` -> (3, ``mlp.down_proj.weight``)."""
    match = LAYER_RE.search(name)
    return (int(match.group(1)), match.group(2)) if match else (None, name)


def layer_weight_totals(changes: list[WeightChange]) -> dict[int, float]:
    """Per layer, the largest relative change of any of its modules (for a bar chart)."""
    out: dict[int, float] = {}
    for c in changes:
        if c.layer is not None:
            out[c.layer] = max(out.get(c.layer, 0.0), c.relative)
    return dict(sorted(out.items()))
