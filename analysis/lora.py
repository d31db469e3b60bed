"""LoRA adapters as an overlay on a resident base model.

A LoRA variant must not cost a second copy of its base, and switching between base and
variant must give the base back *exactly* (merging ``W += s·B·A`` and subtracting it
again drifts by a rounding error per switch, badly so in bf16). So the overlay never
touches the base weights:

* the forward pass of every adapted ``nn.Linear`` gets a hook adding ``s·(x Aᵀ) Bᵀ``;
  detaching removes the hooks, and the base is bit-for-bit what it was;
* analyses that read weights directly (edge virtual weights, logit-lens descriptions)
  ask :func:`linear_weight` / :func:`linear_rows`, which add the adapter's delta while
  the overlay is attached.

PEFT's saved format is read directly (``adapter_config.json`` and
``adapter_model.safetensors``): plain LoRA on ``nn.Linear`` modules. DoRA, adapters with
``modules_to_save``, trained biases and adapters on the embedding or output head are
refused with a message, rather than silently giving a different model than PEFT would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.errors import InputError

ATTR = "_circuitlab_lora"  # set on an adapted Linear while the overlay is attached


@dataclass
class LoraPair:
    """One adapted module: ``delta W = scale * B @ A`` with A [r, in], B [out, r]."""

    module: str
    a: torch.Tensor
    b: torch.Tensor
    scale: float

    def delta(self) -> torch.Tensor:
        return self.scale * (self.b.float() @ self.a.float())

    def nbytes(self) -> int:
        return self.a.numel() * self.a.element_size() + self.b.numel() * self.b.element_size()


@dataclass
class LoraOverlay:
    """A loaded adapter; attach it to its base model to get the variant."""

    name: str
    pairs: dict[str, LoraPair]
    config: dict[str, Any]
    attached_to: nn.Module | None = None
    _handles: list[Any] = field(default_factory=list)

    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self.pairs.values())

    def attach(self, model: nn.Module) -> None:
        """Add the adapter's contribution to ``model``'s forward passes (idempotent)."""
        if self.attached_to is model:
            return
        if self.attached_to is not None:
            self.detach()
        modules = dict(model.named_modules())
        missing = [m for m in self.pairs if m not in modules]
        if missing:
            raise InputError(f"adapter {self.name!r} targets modules its base does not have "
                             f"(e.g. {missing[0]!r}); it belongs to another base model",
                             field="variant")
        for path, pair in self.pairs.items():
            linear = modules[path]
            weight = getattr(linear, "weight", None)
            if not isinstance(linear, nn.Linear) or weight is None:
                raise InputError(f"adapter {self.name!r}: {path} is not a linear layer",
                                 field="variant")
            if tuple(weight.shape) != (pair.b.shape[0], pair.a.shape[1]):
                raise InputError(
                    f"adapter {self.name!r}: {path} is {tuple(weight.shape)} in the base but "
                    f"the adapter expects {(pair.b.shape[0], pair.a.shape[1])}; it belongs "
                    "to another base model", field="variant")
            pair.a = pair.a.to(weight.device, weight.dtype)
            pair.b = pair.b.to(weight.device, weight.dtype)
        for path, pair in self.pairs.items():
            linear = modules[path]
            setattr(linear, ATTR, pair)
            self._handles.append(linear.register_forward_hook(_add_lora))
        self.attached_to = model

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.attached_to is not None:
            for module in self.attached_to.modules():
                if getattr(module, ATTR, None) is not None and \
                        getattr(module, ATTR).module in self.pairs:
                    delattr(module, ATTR)
        self.attached_to = None


def _add_lora(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
    pair: LoraPair = getattr(module, ATTR)
    x = args[0]
    return out + pair.scale * ((x @ pair.a.T) @ pair.b.T)


def linear_weight(linear: nn.Module) -> torch.Tensor:
    """The weight this Linear effectively applies: base plus an attached adapter's delta."""
    weight: torch.Tensor = linear.weight  # type: ignore[assignment]
    pair: LoraPair | None = getattr(linear, ATTR, None)
    if pair is None:
        return weight
    return weight + pair.delta().to(weight.device, weight.dtype)


def linear_rows(linear: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """``linear_weight(linear)[rows]`` without forming the whole delta."""
    weight: torch.Tensor = linear.weight  # type: ignore[assignment]
    rows = rows.to(weight.device)
    picked = weight[rows]
    pair: LoraPair | None = getattr(linear, ATTR, None)
    if pair is None:
        return picked
    return picked + pair.scale * (pair.b[rows] @ pair.a).to(picked.dtype)


# ---------------------------------------------------------------------------------------
# Loading PEFT's format
# ---------------------------------------------------------------------------------------

PREFIX = "base_model.model."


def read_adapter_config(directory: Path) -> dict[str, Any]:
    path = directory / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a LoRA adapter (no adapter_config.json)")
    config: dict[str, Any] = json.loads(path.read_text())
    problems = []
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} (only LORA is supported)")
    if config.get("use_dora"):
        problems.append("DoRA")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']}")
    if config.get("bias", "none") != "none":
        problems.append(f"trained biases (bias={config['bias']!r})")
    if config.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out (Conv1D layers)")
    if problems:
        raise InputError(f"adapter in {directory.name}: not supported: {', '.join(problems)}; "
                         "merge it into a full checkpoint and register that instead",
                         field="variant")
    return config


def _scale(config: dict[str, Any], module: str, rank: int) -> float:
    alpha = float(config.get("lora_alpha", rank))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if module == pattern or module.endswith("." + pattern):
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def load_overlay(name: str, directory: Path) -> LoraOverlay:
    """Read a PEFT LoRA adapter directory into an overlay (on the CPU until attached)."""
    from safetensors.torch import load_file

    config = read_adapter_config(directory)
    weights_path = directory / "adapter_model.safetensors"
    if weights_path.is_file():
        tensors = load_file(str(weights_path))
    elif (directory / "adapter_model.bin").is_file():
        tensors = torch.load(directory / "adapter_model.bin", map_location="cpu",
                             weights_only=True)
    else:
        raise FileNotFoundError(f"{directory} has no adapter_model.safetensors")
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        stem = key.removeprefix(PREFIX)
        for half in ("lora_A", "lora_B"):
            marker = f".{half}."
            if marker in stem:
                module = stem.split(marker)[0]
                halves.setdefault(module, {})[half] = tensor
                break
        else:
            raise InputError(f"adapter in {directory.name}: unexpected tensor {key!r} "
                             "(only LoRA A/B matrices are supported)", field="variant")
    pairs = {}
    for module, ab in halves.items():
        if set(ab) != {"lora_A", "lora_B"}:
            raise InputError(f"adapter in {directory.name}: {module} lacks its A or B matrix",
                             field="variant")
        if module.endswith(("lm_head", "embed_tokens")):
            raise InputError(f"adapter in {directory.name}: adapters on {module} are not "
                             "supported; merge it into a full checkpoint", field="variant")
        a, b = ab["lora_A"], ab["lora_B"]
        pairs[module] = LoraPair(module=module, a=a, b=b, scale=_scale(config, module,
                                                                       a.shape[0]))
    if not pairs:
        raise InputError(f"adapter in {directory.name} holds no LoRA matrices", field="variant")
    return LoraOverlay(name=name, pairs=pairs, config=config)


def adapter_norms(overlay: LoraOverlay, base: nn.Module) -> list[tuple[str, float, float]]:
    """Per adapted module: (module path, ||s·B·A|| / ||W||, ||W||), largest first. The
    adapter's counterpart of a full fine-tune's relative weight change."""
    modules = dict(base.named_modules())
    out = []
    with torch.no_grad():
        for path, pair in overlay.pairs.items():
            w = modules[path].weight  # type: ignore[union-attr]
            norm = float(w.float().norm())
            delta = float(pair.delta().norm())
            out.append((path, delta / norm if norm else float("inf"), norm))
    return sorted(out, key=lambda t: -t[1])
