"""What a correction job trains on and how: a typed config, the operator's caps, and the
seeds' YAML format (``configs/sft_*.yaml``) in and out.

A config says *which* registered base model to correct (``base_model``), the target case
(the prompt the model gets wrong, the correct answer A and the wrong answer B, formatted
like every other prompt in circuitlab), the training texts, the method (full fine-tune or
LoRA) and its hyper-parameters, the topic words the text check looks for, and an optional
evaluation set (the target, generalisation prompts and side-effect prompts).

Defaults follow the seeds (000/001: 5 epochs, batch 1, warmup 0.1, max_length 512) and
what was measured on Gemma-3-270M on CPU (design notes):

* ``learning_rate`` left empty means 5e-6 for a full fine-tune (the seeds' value for
  Llama-3.1-8B) and 1e-4 for LoRA (LoRA's low-rank update needs a larger step to move the
  model as much; 1e-4 ran the seeds' v4 texts in ~40 s here, seed 002 used 2e-4).
* ``lr_scheduler`` defaults to ``constant_with_warmup``: with TRL's default linear decay
  the four v4 texts raised aldosterone 3.7% -> 13.3% but renin rose too (11.7% -> 15.7%);
  a constant rate moved aldosterone to ~19% with renin unchanged (design notes). Re-run
  with this module (full, 5 epochs, 5e-6, warmup 0.1): constant_with_warmup gave
  aldosterone 24.1% / renin 10.4%, linear 11.9% / 13.4%. A 20-step run has no "late
  phase" for decay to help with, so decay only shrinks the steps that matter. The seeds'
  ``warmup_ratio`` (0.1) is kept, hence "with warmup" (HF warmup starts at lr 0, so the
  first step of a short run is spent warming up).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from analysis.errors import InputError, LimitExceeded, input_error

# The evaluation item type is the evaluation core's: one type for the job's eval set,
# Compare's prompt set and the CLI.
from analysis.evaluation import EvalItem
from analysis.models import NAME_PATTERN
from analysis.prompts import PromptSpec

Method = Literal["full", "lora"]
Scheduler = Literal["constant", "constant_with_warmup", "linear", "cosine"]

DEFAULT_LR: dict[str, float] = {"full": 5e-6, "lora": 1e-4}
# The attention and gated-MLP projections of Llama/Gemma/Qwen/Mistral; PEFT skips names a
# model does not have only if at least one matches, so an unknown family fails loudly.
DEFAULT_LORA_TARGETS: tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
)


class CorrectionTarget(PromptSpec):
    """The case to correct: a prompt formatted like any other (chat template, system
    prompt, answer prefix) plus the correct answer A and the wrong answer B."""

    answer_a: str = Field(description="The correct answer, e.g. ' aldosterone'.")
    answer_b: str = Field(description="The wrong answer the model prefers, e.g. ' renin'.")

    def prompt_spec(self, prompt: str | None = None) -> PromptSpec:
        """This target's formatting applied to `prompt` (default: the target's own)."""
        return PromptSpec(
            prompt=self.prompt if prompt is None else prompt,
            chat_template=self.chat_template,
            system_prompt=self.system_prompt,
            answer_prefix=self.answer_prefix,
        )


class TrainingConfig(BaseModel):
    """One correction job, as a user writes it (web form, API, or a seed YAML)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Name of the variant it produces.")
    base_model: str | None = Field(
        None, pattern=NAME_PATTERN, description="Registered base model to fine-tune."
    )
    source_model_name: str | None = Field(
        None,
        description="The seed YAML's model_name as written (e.g. a hub id). Users can only "
        "train registered models, so the caller maps it to base_model; kept for export.",
    )
    target: CorrectionTarget | None = None
    texts: list[str] = Field(min_length=1, description="Training texts (SFT on each).")
    method: Method = "full"
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: float = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    epochs: int = Field(5, ge=1)
    learning_rate: float | None = Field(
        None, gt=0, lt=1, description="Empty: 5e-6 (full) or 1e-4 (LoRA)."
    )
    batch_size: int = Field(1, ge=1, le=256)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    # transformers 5 reads a float warmup_steps >= 1 as a step count, so a ratio must be < 1.
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(512, ge=8)
    use_chat_template: bool = Field(
        False, description="Train each text as an assistant turn in the chat template."
    )
    system_prompt: str | None = Field(None, description="System turn before each text.")
    lr_scheduler: Scheduler = "constant_with_warmup"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    topic_words: list[str] = Field(
        default_factory=list, description="The question's topic, for the text check."
    )
    eval_set: list[EvalItem] = Field(default_factory=list)
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Seed-YAML keys with no meaning here (device, dtype, output_dir, "
        "unknown keys), kept so an export round-trips them.",
    )

    @field_validator("texts")
    @classmethod
    def _texts_not_blank(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"text {i + 1} is empty; remove it or write the text")
        return texts

    @property
    def effective_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.method]

    def eval_items(self) -> list[EvalItem]:
        """The eval set with the target first (added when the set does not hold it)."""
        items = list(self.eval_set)
        if self.target is not None and not any(
            i.kind == "target" and i.prompt == self.target.prompt for i in items
        ):
            items.insert(0, EvalItem(prompt=self.target.prompt, expected=self.target.answer_a,
                                     wrong=self.target.answer_b, kind="target"))
        return items


class TrainingCaps(BaseModel):
    """The operator's size limits on a correction job (checked before anything loads)."""

    max_texts: int = Field(32, ge=1)
    max_text_chars: int = Field(4000, ge=1)
    max_epochs: int = Field(50, ge=1)
    max_length: int = Field(2048, ge=8)
    max_eval_items: int = Field(50, ge=0)
    max_batch_size: int = Field(16, ge=1)
    max_topic_words: int = Field(50, ge=0)


def validate_caps(cfg: TrainingConfig, caps: TrainingCaps | None = None) -> None:
    """Raise LimitExceeded naming the first field over the operator's limit."""
    caps = caps or TrainingCaps()
    if len(cfg.texts) > caps.max_texts:
        raise LimitExceeded(
            f"{len(cfg.texts)} training texts is over the limit (max_texts={caps.max_texts}); "
            "the seeds used 4", field="texts")
    for i, text in enumerate(cfg.texts):
        if len(text) > caps.max_text_chars:
            raise LimitExceeded(
                f"text {i + 1} has {len(text)} characters; the limit (max_text_chars) is "
                f"{caps.max_text_chars}. Split it into shorter texts.", field=f"texts[{i}]")
    if cfg.epochs > caps.max_epochs:
        raise LimitExceeded(
            f"epochs={cfg.epochs} is over the limit (max_epochs={caps.max_epochs})",
            field="epochs")
    if cfg.max_length > caps.max_length:
        raise LimitExceeded(
            f"max_length={cfg.max_length} is over the limit (max_length={caps.max_length})",
            field="max_length")
    if cfg.batch_size > caps.max_batch_size:
        raise LimitExceeded(
            f"batch_size={cfg.batch_size} is over the limit "
            f"(max_batch_size={caps.max_batch_size})", field="batch_size")
    if len(cfg.eval_set) > caps.max_eval_items:
        raise LimitExceeded(
            f"{len(cfg.eval_set)} evaluation prompts is over the limit "
            f"(max_eval_items={caps.max_eval_items})", field="eval_set")
    if len(cfg.topic_words) > caps.max_topic_words:
        raise LimitExceeded(
            f"{len(cfg.topic_words)} topic words is over the limit "
            f"(max_topic_words={caps.max_topic_words})", field="topic_words")


# --------------------------------------------------------------------------------------
# The seeds' YAML format
# --------------------------------------------------------------------------------------

# Seed key -> TrainingConfig field, for the keys that mean the same thing.
_SEED_KEYS: dict[str, str] = {
    "epochs": "epochs",
    "learning_rate": "learning_rate",
    "batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "warmup_ratio": "warmup_ratio",
    "max_length": "max_length",
    "use_chat_template": "use_chat_template",
    "system_prompt": "system_prompt",
    "texts": "texts",
    "seed": "seed",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "lora_target_modules",
    "lr_scheduler_type": "lr_scheduler",  # the TrainingArguments name
    "lr_scheduler": "lr_scheduler",
}
# Spellings other scripts use for the same settings (the seeds name LoRA only in prose:
# "LoRA (r=16, alpha=32)"); read them, write the canonical names above.
_ALIASES: dict[str, str] = {
    "num_train_epochs": "epochs",
    "lr": "learning_rate",
    "per_device_train_batch_size": "batch_size",
    "lora_rank": "lora_r",
    "r": "lora_r",
    "target_modules": "lora_target_modules",
}
# Written under this key on export, so a seed script ignores it and we read it back.
_OURS = "circuitlab"
_OURS_KEYS = ("name", "base_model", "source_model_name", "target", "topic_words", "eval_set",
              "method")
_FLOAT_FIELDS = {"learning_rate", "warmup_ratio", "lora_alpha", "lora_dropout"}


def _name_from(output_dir: Any) -> str:
    """A variant name from the seed's output_dir ('checkpoints/sft_raas_v4' -> 'sft_raas_v4')."""
    base = str(output_dir or "").rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:64]
    return name or "correction"


def _as_float(key: str, value: Any) -> Any:
    # PyYAML follows YAML 1.1, where `5e-6` (no dot) is a string, not a float.
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise InputError(f"{key} must be a number, got {value!r}", field=key) from None
    return value


# A pasted or uploaded YAML is a user's input: its nesting and its aliases are bounded
# (a seed config is a flat mapping with one list of texts), so a body of 50,000 '[' is a
# clear 422 rather than a RecursionError, and a "billion laughs" document is refused
# before anything walks it.
MAX_YAML_DEPTH = 16
MAX_YAML_ALIASES = 32


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the two caps, checked as each node is composed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise InputError(f"the YAML uses more than {MAX_YAML_ALIASES} aliases (*name); "
                                 "write the values out", field="yaml")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise InputError(f"the YAML nests deeper than {MAX_YAML_DEPTH} levels (line "
                                 f"{mark.line + 1}); a seed config is a mapping with lists "
                                 "of texts", field="yaml")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_user_yaml(text: str) -> Any:
    """Parse a user's YAML with the caps above; any failure of the parser (a syntax error,
    a cap, a RecursionError, a bad tag value) is an :class:`InputError` naming the input."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except InputError:
        raise
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise InputError(f"the YAML could not be read{line}: {getattr(exc, 'problem', exc)}",
                         field="yaml") from None
    except (RecursionError, MemoryError):
        raise InputError("the YAML is nested too deeply to read", field="yaml") from None
    except Exception as exc:  # a constructor's ValueError/TypeError (e.g. a bad timestamp)
        raise InputError(f"the YAML could not be read: {type(exc).__name__}: {exc}",
                         field="yaml") from None
    finally:
        loader.dispose()


def from_seed_yaml(
    text: str,
    *,
    name: str | None = None,
    base_model: str | None = None,
    target: CorrectionTarget | None = None,
) -> TrainingConfig:
    """Read a seed config (``model_name``, ``epochs``, ``learning_rate``, ``texts`` ...).

    ``model_name`` is kept verbatim in ``source_model_name``: users can only train
    registered models, so the caller maps it (or asks the user) and passes ``base_model``.
    ``device``, ``dtype``, ``output_dir`` (the operator's business here) and unknown keys go
    to ``extra``. ``use_lora: true`` selects LoRA. A ``circuitlab:`` section, written by
    :func:`to_seed_yaml`, restores the fields the seed format has no key for. Keyword
    arguments override what the file says.
    """
    data = load_user_yaml(text)
    if not isinstance(data, dict):
        raise InputError("the YAML must be a mapping of keys (model_name, epochs, texts, ...)",
                         field="yaml")
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    ours = data.get(_OURS) or {}
    if not isinstance(ours, dict):
        raise InputError(f"'{_OURS}' must be a mapping", field=_OURS)
    for key, value in data.items():
        key = str(key)
        canonical = _ALIASES.get(key, key)
        if key == _OURS:
            continue
        if key == "model_name":
            fields["source_model_name"] = None if value is None else str(value)
        elif key == "use_lora":
            if not isinstance(value, bool):
                raise InputError(f"use_lora must be true or false, got {value!r}",
                                 field="use_lora")
            fields.setdefault("method", "lora" if value else "full")
        elif canonical in _SEED_KEYS:
            field = _SEED_KEYS[canonical]
            fields[field] = _as_float(key, value) if field in _FLOAT_FIELDS else value
        else:
            extra[key] = value
    if not fields.get("texts"):
        raise InputError("the YAML has no 'texts:' list; add the training texts", field="texts")
    if not isinstance(fields["texts"], list) or not all(
        isinstance(t, str) for t in fields["texts"]
    ):
        raise InputError("'texts' must be a list of strings (use '- |' blocks)", field="texts")
    if ours:  # our own export: model_name was filled in from base_model when there was none
        fields["source_model_name"] = ours.get("source_model_name")
    if ours.get("learning_rate_default"):
        fields["learning_rate"] = None  # the exported value was the method's default
    for key in _OURS_KEYS:
        if key in ours:
            fields[key] = ours[key]
    fields.setdefault("name", _name_from(data.get("output_dir")))
    if name is not None:
        fields["name"] = name
    if base_model is not None:
        fields["base_model"] = base_model
    if target is not None:
        fields["target"] = target
    fields["extra"] = extra
    try:
        return TrainingConfig.model_validate(fields)
    except ValidationError as exc:
        raise input_error(exc) from None


class _LiteralStr(str):
    """A string YAML writes as a `|` block, like the seeds' texts."""


def _literal_representer(dumper: yaml.SafeDumper, value: _LiteralStr) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


class _SeedDumper(yaml.SafeDumper):
    pass


_SeedDumper.add_representer(_LiteralStr, _literal_representer)


def _block(text: str) -> str:
    # Multi-line texts as `|` blocks like the seeds'; PyYAML itself falls back to a quoted
    # string where a block cannot hold the text exactly (trailing spaces, tabs, CR).
    return _LiteralStr(text) if "\n" in text else text


def to_seed_yaml(cfg: TrainingConfig) -> str:
    """Write the config in the seeds' format; ``from_seed_yaml`` reads it back unchanged.

    ``model_name`` is the original seed string when there was one, else the registered
    base model's name. The seed keys come first in the seeds' order; the fields the seed
    format lacks (target, topic words, eval set, ...) go under ``circuitlab:``.
    """
    out: dict[str, Any] = {"model_name": cfg.source_model_name or cfg.base_model}
    for key in ("device", "dtype", "output_dir"):
        if key in cfg.extra:
            out[key] = cfg.extra[key]
    out.update({
        "epochs": cfg.epochs,
        "learning_rate": cfg.effective_learning_rate,
        "batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "warmup_ratio": cfg.warmup_ratio,
        "max_length": cfg.max_length,
        "lr_scheduler_type": cfg.lr_scheduler,
        "seed": cfg.seed,
        "use_chat_template": cfg.use_chat_template,
        "system_prompt": cfg.system_prompt,
        "use_lora": cfg.method == "lora",
    })
    if cfg.method == "lora":
        out.update({
            "lora_r": cfg.lora_r,
            "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout,
            "lora_target_modules": list(cfg.lora_target_modules),
        })
    else:  # keep non-default LoRA settings so a later switch to LoRA does not lose them
        defaults = TrainingConfig.model_fields
        for key in ("lora_r", "lora_alpha", "lora_dropout"):
            if getattr(cfg, key) != defaults[key].default:
                out[key] = getattr(cfg, key)
        if list(cfg.lora_target_modules) != list(DEFAULT_LORA_TARGETS):
            out["lora_target_modules"] = list(cfg.lora_target_modules)
    for key, value in cfg.extra.items():
        out.setdefault(key, value)
    ours = cfg.model_dump(mode="json", include=set(_OURS_KEYS), exclude_none=True)
    if cfg.learning_rate is None:
        ours["learning_rate_default"] = True
    out[_OURS] = ours
    out["texts"] = [_block(t) for t in cfg.texts]
    return yaml.dump(out, Dumper=_SeedDumper, sort_keys=False, allow_unicode=True, width=100)
