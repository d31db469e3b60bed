"""Run one correction: SFT of a registered base model on the config's texts, full
fine-tune or LoRA, with TRL's ``SFTTrainer``.

* **Model** - the base is loaded the way ``analysis.models.load_model`` loads it (registry
  spec, device and dtype resolution: float32 on CPU, bfloat16 on a GPU; the operator's
  chat template; a pad token), as a fresh trainable copy - never the resident model.
* **Data** - each text is one example, tokenized here so what is trained is explicit:
  raw text gets the tokenizer's special tokens (BOS) and an EOS, as TRL does for plain
  language-modelling data; with ``use_chat_template`` the text is the assistant turn
  after the optional system prompt, rendered by the model's chat template. The loss covers
  every token. Texts longer than ``max_length`` are cut at the end (the log says which).
* **Determinism** - ``transformers.set_seed(cfg.seed)`` before the adapter is created and
  the trainer's seed/data_seed, so two runs of one config on one machine give the same
  loss curve.
* **Progress and cancel** - a callback reports every optimizer step (``logging_steps=1``)
  to ``on_step`` and polls ``should_cancel`` after each step; a cancelled run stops after
  the step in flight, removes its files and raises :class:`Cancelled`.
* **Output** - nothing is saved mid-run (no checkpoints, no ``report_to``). The variant is
  written into a temporary directory beside ``out_dir`` and renamed into place at the end,
  so a crash or cancel never leaves a half-written variant: full -> the model's
  ``save_pretrained`` weights + tokenizer; LoRA -> the adapter only
  (``adapter_config.json`` + weights) + tokenizer; both with ``circuitlab.json`` (config,
  base model name and revision, method, metrics, library versions).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from analysis.correction.config import TrainingCaps, TrainingConfig, validate_caps
from analysis.errors import InputError
from analysis.models import LoadedModel, ModelSpec, load_model

METADATA_FILE = "circuitlab.json"
METADATA_FORMAT = 1


class Cancelled(Exception):
    """The job was cancelled while training; nothing was written."""


@dataclass(frozen=True)
class StepReport:
    """One optimizer step, as the progress callback sees it."""

    step: int
    max_steps: int
    epoch: float
    loss: float
    learning_rate: float
    elapsed_s: float  # since the first training step began (model loading not included)


class TrainResult(BaseModel):
    name: str
    out_dir: Path
    method: str
    base_model: str
    base_revision: str
    steps: int
    epochs: int
    learning_rate: float
    train_loss: float = Field(description="Mean loss over all steps (the trainer's value).")
    final_loss: float = Field(description="Loss of the last step.")
    losses: list[float] = Field(description="Loss of every step, in order.")
    text_tokens: list[int] = Field(description="Tokens per training example (after cuts).")
    truncated: list[int] = Field(description="Indices of texts cut at max_length.")
    train_seconds: float
    total_seconds: float = Field(description="Loading, training and saving.")
    versions: dict[str, str]


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "peft": peft.__version__}


def build_examples(cfg: TrainingConfig, tokenizer: Any) -> tuple[list[list[int]], list[int]]:
    """Token ids of each training example and the indices of texts cut at max_length."""
    examples: list[list[int]] = []
    truncated: list[int] = []
    for i, text in enumerate(cfg.texts):
        if cfg.use_chat_template:
            if not getattr(tokenizer, "chat_template", None):
                raise InputError(
                    "this model has no chat template; set use_chat_template to false to train "
                    "on the raw texts", field="use_chat_template")
            messages = []
            if cfg.system_prompt is not None:  # '' is an empty system turn, as in the seeds
                messages.append({"role": "system", "content": cfg.system_prompt})
            messages.append({"role": "assistant", "content": text})
            rendered = tokenizer.apply_chat_template(messages, tokenize=False)
            # The template writes its own BOS.
            ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        else:
            ids = list(tokenizer(text)["input_ids"])
            if tokenizer.eos_token_id is not None:
                ids.append(int(tokenizer.eos_token_id))
        if len(ids) > cfg.max_length:
            truncated.append(i)
            ids = ids[: cfg.max_length]
        examples.append(ids)
    return examples, truncated


def _lora_config(cfg: TrainingConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _sft_args(cfg: TrainingConfig, lm: LoadedModel, scratch: Path) -> Any:
    import dataclasses

    from trl import SFTConfig

    on_gpu = lm.device.startswith("cuda")
    # Checkpointing saves GPU memory on an 8B model and only costs time on CPU. Newer
    # transformers renamed the flag (the old name warns).
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in names
                     else "gradient_checkpointing")
    return SFTConfig(
        output_dir=str(scratch),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.effective_learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        # transformers 5 dropped warmup_ratio; a float below 1 is read as a fraction.
        warmup_steps=cfg.warmup_ratio,
        max_length=None,  # build_examples already cut the texts (and says which)
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        # TRL turns bf16 on by default; on CPU the model is float32 and stays so. On a GPU
        # the model is already in its configured dtype.
        bf16=lm.dtype == "bfloat16",
        fp16=False,
        use_cpu=lm.device == "cpu",
        dataloader_pin_memory=on_gpu,
        packing=False,
        **{checkpointing: on_gpu},
    )


def _progress_callback(
    on_step: Callable[[StepReport], None] | None,
    should_cancel: Callable[[], bool] | None,
    losses: list[float],
) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):  # type: ignore[misc]
        cancelled = False
        started = time.perf_counter()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if should_cancel is not None and should_cancel():
                self.cancelled = True
                control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kw: Any) -> None:
            if not logs or "loss" not in logs:  # the end-of-run summary has no "loss"
                return
            losses.append(float(logs["loss"]))
            if on_step is not None:
                on_step(StepReport(
                    step=int(state.global_step),
                    max_steps=int(state.max_steps),
                    epoch=float(state.epoch or 0.0),
                    loss=float(logs["loss"]),
                    learning_rate=float(logs.get("learning_rate", 0.0)),
                    elapsed_s=time.perf_counter() - self.started,
                ))

    return Progress()


def train(
    cfg: TrainingConfig,
    base: ModelSpec,
    cache_dir: Path,
    out_dir: Path,
    *,
    on_step: Callable[[StepReport], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    caps: TrainingCaps | None = None,
) -> TrainResult:
    """Fine-tune `base` on `cfg.texts` and write the variant to `out_dir` (must not exist).

    `caps`, when given, is checked first (callers that already validated may omit it).
    Raises :class:`Cancelled` when `should_cancel()` turned true during training.
    """
    import datasets
    import transformers
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    say = log or (lambda _msg: None)
    started = time.perf_counter()
    if caps is not None:
        validate_caps(cfg, caps)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; a variant is never overwritten")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    losses: list[float] = []
    trainer: Any = None
    lm: LoadedModel | None = None
    model: Any = None
    try:
        say(f"loading {base.name} for training ({cfg.method})")
        lm = load_model(base, Path(cache_dir))
        lm.require_local("fine-tuning")
        say(f"loaded {base.name} on {lm.device} ({lm.dtype}) in {lm.load_seconds:.1f} s")
        examples, truncated = build_examples(cfg, lm.tokenizer)
        for i in truncated:
            say(f"text {i + 1} is longer than max_length={cfg.max_length} tokens; "
                "its end is not trained")
        if cfg.use_chat_template and cfg.system_prompt and cfg.system_prompt.strip() not in (
            lm.tokenizer.decode(examples[0])
        ):
            # Gemma's template, for one, prints the system prompt only inside a user turn.
            say("note: this model's chat template drops the system prompt when there is no "
                "user turn; the texts are trained without it")
        # Deterministic data order: the trainer's sampler is seeded from data_seed.
        # Pre-tokenized with labels, so TRL runs no dataset passes of its own.
        dataset = datasets.Dataset.from_dict({"input_ids": examples, "labels": examples})
        transformers.set_seed(cfg.seed)  # before the adapter's random init
        model = lm.model
        if cfg.method == "full":
            model.requires_grad_(True)
        model.train()
        progress = _progress_callback(on_step, should_cancel, losses)
        try:
            trainer = SFTTrainer(
                model=model,
                args=_sft_args(cfg, lm, partial / "_trainer"),
                train_dataset=dataset,
                processing_class=lm.tokenizer,
                peft_config=_lora_config(cfg) if cfg.method == "lora" else None,
                callbacks=[progress],
            )
        except ValueError as exc:
            if cfg.method == "lora" and "target" in str(exc).lower():
                raise InputError(
                    f"LoRA target modules {cfg.lora_target_modules} do not fit this model: "
                    f"{exc}", field="lora_target_modules") from None
            raise
        # With disable_tqdm the trainer prints every log dict to stdout; on_step reports them.
        trainer.remove_callback(PrinterCallback)
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"correction {cfg.name!r} was cancelled before training")
        say(f"training {trainer.args.num_train_epochs} epochs on {len(examples)} texts "
            f"(lr {cfg.effective_learning_rate:g}, {cfg.lr_scheduler})")
        t0 = time.perf_counter()
        output = trainer.train()
        train_seconds = time.perf_counter() - t0
        if progress.cancelled:
            raise Cancelled(f"correction {cfg.name!r} was cancelled at step "
                            f"{trainer.state.global_step}")
        steps = int(trainer.state.global_step)
        trained = trainer.model
        if getattr(trained, "config", None) is not None:
            trained.config.use_cache = True  # the trainer turns it off for checkpointing
        shutil.rmtree(partial / "_trainer", ignore_errors=True)
        trained.save_pretrained(partial)  # LoRA: a PeftModel saves its adapter only
        lm.tokenizer.save_pretrained(partial)
        result = TrainResult(
            name=cfg.name,
            out_dir=out_dir,
            method=cfg.method,
            base_model=base.name,
            base_revision=lm.revision,
            steps=steps,
            epochs=cfg.epochs,
            learning_rate=cfg.effective_learning_rate,
            train_loss=float(output.training_loss),
            final_loss=losses[-1] if losses else float("nan"),
            losses=losses,
            text_tokens=[len(e) for e in examples],
            truncated=truncated,
            train_seconds=train_seconds,
            total_seconds=time.perf_counter() - started,
            versions=library_versions(),
        )
        meta = {
            "format": METADATA_FORMAT,
            "name": cfg.name,
            "kind": cfg.method,
            "base_model": base.name,
            "base_revision": lm.revision,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": cfg.model_dump(mode="json"),
            "metrics": result.model_dump(mode="json", exclude={"out_dir", "name"}),
        }
        (partial / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        partial.rename(out_dir)
        say(f"saved {cfg.method} variant {cfg.name!r} ({steps} steps, "
            f"final loss {result.final_loss:.3f}, {train_seconds:.0f} s training)")
        return result
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        # The server process lives on: drop the trainable copy and its optimizer now (a
        # raised exception's traceback would otherwise keep this frame's model alive).
        trainer = lm = model = None
        gc.collect()


def read_metadata(variant_dir: Path) -> dict[str, Any]:
    """The ``circuitlab.json`` a trained variant carries."""
    return dict(json.loads((Path(variant_dir) / METADATA_FILE).read_text()))
