"""The correction-job form: its fields, its conversion to a TrainingConfig, and the text
check summary shown before queueing."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from analysis.correction.config import (
    DEFAULT_LORA_TARGETS,
    CorrectionTarget,
    EvalItem,
    TrainingConfig,
)
from analysis.errors import InputError, input_error
from analysis.screening import MAX_PROMPT_CHARS
from app.services.compare import parse_prompt_set

MAX_FORM_TEXT = 8000

JOB_DEFAULTS: dict[str, Any] = {
    "name": "", "base_model": "", "prompt": "", "answer_prefix": "", "chat_template": False,
    "system_prompt": "", "answer_a": "", "answer_b": "", "texts": ["", ""],
    "method": "full", "lora_r": 16, "lora_alpha": 32,
    "lora_target_modules": ", ".join(DEFAULT_LORA_TARGETS), "epochs": 5,
    "learning_rate": "", "batch_size": 1, "gradient_accumulation_steps": 1,
    "warmup_ratio": 0.1, "max_length": 512, "lr_scheduler": "constant_with_warmup",
    "use_chat_template": False, "train_system_prompt": "", "topic_words": "",
    "eval_set": "", "seed": 0,
}


class JobForm(BaseModel):
    """The form as posted; lists arrive as repeated fields (``texts``)."""

    name: str = Field("", max_length=64)
    base_model: str = Field("", max_length=64)
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    answer_prefix: str = Field("", max_length=200)
    chat_template: bool = False
    system_prompt: str = Field("", max_length=4000)
    answer_a: str = Field("", max_length=200)
    answer_b: str = Field("", max_length=200)
    texts: list[str] = Field(default_factory=list, max_length=200)
    method: Literal["full", "lora"] = "full"
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: float = Field(32, gt=0)
    lora_target_modules: str = Field("", max_length=500)
    epochs: int = Field(5, ge=1)
    learning_rate: str = Field("", max_length=32)
    batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(512, ge=8)
    lr_scheduler: Literal["constant_with_warmup", "constant", "linear", "cosine"] = \
        "constant_with_warmup"
    use_chat_template: bool = False
    train_system_prompt: str = Field("", max_length=4000)
    topic_words: str = Field("", max_length=2000)
    eval_set: str = Field("", max_length=60_000)
    seed: int = Field(0, ge=0)
    acknowledge: bool = False
    token: str = Field("", max_length=200)

    def config(self, *, named: bool = True) -> TrainingConfig:
        """A TrainingConfig, with any error pointing at this form's field. Checking or
        previewing the texts does not need the job's name yet (``named=False``)."""
        if named and not self.name.strip():
            raise InputError("name the job (it names the fine-tuned variant)", field="name")
        if not self.base_model:
            raise InputError("pick the base model to correct", field="base_model")
        if not self.prompt.strip():
            raise InputError("the target prompt is empty", field="prompt")
        if not self.answer_a.strip() or not self.answer_b.strip():
            field = "answer_a" if not self.answer_a.strip() else "answer_b"
            raise InputError("a correction needs the correct answer A and the wrong "
                             "answer B", field=field)
        texts = [t for t in self.texts if t.strip()]
        if not texts:
            raise InputError("write at least one training text", field="texts")
        try:
            lr = float(self.learning_rate) if self.learning_rate.strip() else None
        except ValueError as exc:
            raise InputError(f"learning rate {self.learning_rate!r} is not a number "
                             "(e.g. 5e-6), or leave it empty for the default",
                             field="learning_rate") from exc
        items = [EvalItem(prompt=i.prompt, expected=i.expected, wrong=i.wrong, kind=i.kind)
                 for i in parse_prompt_set(self.eval_set, field="eval_set")]
        try:
            return TrainingConfig(
                name=self.name.strip() or "unnamed", base_model=self.base_model,
                target=CorrectionTarget(prompt=self.prompt, answer_prefix=self.answer_prefix,
                                        chat_template=self.chat_template,
                                        system_prompt=self.system_prompt,
                                        answer_a=self.answer_a, answer_b=self.answer_b),
                texts=texts, method=self.method, lora_r=self.lora_r,
                lora_alpha=self.lora_alpha,
                lora_target_modules=[m.strip() for m in self.lora_target_modules.split(",")
                                     if m.strip()] or list(DEFAULT_LORA_TARGETS),
                epochs=self.epochs, learning_rate=lr, batch_size=self.batch_size,
                gradient_accumulation_steps=self.gradient_accumulation_steps,
                warmup_ratio=self.warmup_ratio, max_length=self.max_length,
                lr_scheduler=self.lr_scheduler, use_chat_template=self.use_chat_template,
                system_prompt=self.train_system_prompt, seed=self.seed,
                topic_words=split_words(self.topic_words), eval_set=items,
            )
        except ValidationError as exc:
            raise input_error(exc) from exc


def split_words(text: str) -> list[str]:
    return [w.strip() for w in text.replace("\n", ",").split(",") if w.strip()]


# What a seeds' YAML config never carries: the target case, its topic words and the
# evaluation set (and often the name). Importing one keeps these from the form as typed.
KEPT_ON_IMPORT = ("name", "prompt", "answer_prefix", "chat_template", "system_prompt",
                  "answer_a", "answer_b", "topic_words", "eval_set")


def merge_import(typed: dict[str, Any], cfg: TrainingConfig) -> dict[str, Any]:
    """The form after importing ``cfg``: the YAML's training settings and texts, and
    whatever the user typed that the YAML does not set."""
    imported = form_of(cfg)
    for key in KEPT_ON_IMPORT:
        if not imported.get(key) and typed.get(key):
            imported[key] = typed[key]
    return imported


def form_of(cfg: TrainingConfig) -> dict[str, Any]:
    """The form's fields for a config (YAML import, re-running a job)."""
    t = cfg.target
    return {
        **JOB_DEFAULTS, "name": cfg.name, "base_model": cfg.base_model or "",
        "prompt": t.prompt if t else "", "answer_prefix": t.answer_prefix if t else "",
        "chat_template": t.chat_template if t else False,
        "system_prompt": (t.system_prompt or "") if t else "",
        "answer_a": t.answer_a if t else "", "answer_b": t.answer_b if t else "",
        "texts": list(cfg.texts), "method": cfg.method, "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_target_modules": ", ".join(cfg.lora_target_modules), "epochs": cfg.epochs,
        "learning_rate": "" if cfg.learning_rate is None else f"{cfg.learning_rate:g}",
        "batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "warmup_ratio": cfg.warmup_ratio, "max_length": cfg.max_length,
        "lr_scheduler": cfg.lr_scheduler, "use_chat_template": cfg.use_chat_template,
        "train_system_prompt": cfg.system_prompt or "",
        "topic_words": ", ".join(cfg.topic_words), "seed": cfg.seed,
        "eval_set": "\n".join(" | ".join([i.kind, i.prompt, i.expected.strip(),
                                          *([i.wrong.strip()] if i.wrong else [])])
                              for i in cfg.eval_set if i.kind != "target"),
    }


