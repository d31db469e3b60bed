"""Correction training on tiny checkpoints: full and LoRA runs, progress, cancel, seeds,
and the written variant (loadable, complete, never half-written)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from analysis.correction.config import TrainingConfig
from analysis.correction.train import (
    METADATA_FILE,
    Cancelled,
    StepReport,
    TrainResult,
    build_examples,
    read_metadata,
    train,
)
from analysis.errors import InputError
from analysis.models import ModelSpec, load_model
from tests.seed_texts import SEED_PROMPT, V4_TEXTS

# Trains with TRL, or starts worker processes or Ray: the integration tier.
pytestmark = pytest.mark.integration

pytest.importorskip("trl")
pytest.importorskip("peft")

TEXTS = V4_TEXTS[:3]


def _spec(tiny_dirs: dict[str, Path], arch: str) -> ModelSpec:
    return ModelSpec(name=f"tiny-{arch}", source="local", path=tiny_dirs[arch], device="cpu")


def _cfg(**kw: object) -> TrainingConfig:
    base: dict[str, object] = dict(name="fix", texts=TEXTS, epochs=2, learning_rate=1e-3,
                                   lr_scheduler="constant", warmup_ratio=0.0)
    return TrainingConfig(**{**base, **kw})  # type: ignore[arg-type]


def _partials(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".partial-" in p.name]


@pytest.fixture(scope="module")
def full_run(tiny_dirs, tmp_path_factory) -> tuple[TrainResult, list[StepReport], Path]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("full") / "fix"
    steps: list[StepReport] = []
    logs: list[str] = []
    result = train(_cfg(), _spec(tiny_dirs, "llama"), tiny_dirs["llama"].parent, out,
                   on_step=steps.append, log=logs.append)
    assert any("saved full variant" in m for m in logs)
    return result, steps, out


@pytest.fixture(scope="module")
def lora_run(tiny_dirs, tmp_path_factory) -> tuple[TrainResult, Path]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("lora") / "fix-lora"
    cfg = _cfg(method="lora", learning_rate=5e-2, use_chat_template=True, system_prompt="Sys.")
    return train(cfg, _spec(tiny_dirs, "gemma3"), tiny_dirs["gemma3"].parent, out), out


def test_full_run_reports_every_step(full_run) -> None:  # type: ignore[no-untyped-def]
    result, steps, _ = full_run
    assert result.steps == 6 == len(TEXTS) * 2
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert all(s.max_steps == 6 for s in steps)
    assert [s.epoch for s in steps] == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert all(s.learning_rate == pytest.approx(1e-3) for s in steps)  # constant schedule
    assert [s.loss for s in steps] == result.losses
    assert all(math.isfinite(x) for x in result.losses)
    assert all(b.elapsed_s >= a.elapsed_s for a, b in itertools.pairwise(steps))
    # The random tiny model learns its own three texts: the second epoch's loss is lower.
    assert sum(result.losses[3:]) < sum(result.losses[:3])
    assert result.final_loss == result.losses[-1]
    assert result.train_loss == pytest.approx(sum(result.losses) / 6, rel=1e-4)


def test_full_variant_loads_and_differs_from_the_base(full_run, tiny_dirs) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    result, _, out = full_run
    assert result.out_dir == out
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()
    assert not _partials(out.parent)
    assert not (out / "_trainer").exists()
    tuned = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        assert not torch.allclose(tuned(ids).logits, base(ids).logits, atol=1e-4)
    # And through the registry, as the app will load it.
    lm = load_model(ModelSpec(name="fix", source="local", path=out, device="cpu", kind="full",
                              base="tiny-llama"), out.parent)
    assert lm.tokenizer.chat_template


def test_metadata_records_config_base_and_versions(full_run) -> None:  # type: ignore[no-untyped-def]
    result, _, out = full_run
    meta = read_metadata(out)
    assert meta["kind"] == "full" and meta["base_model"] == "tiny-llama"
    assert meta["base_revision"] == result.base_revision and len(meta["base_revision"]) == 12
    assert TrainingConfig.model_validate(meta["config"]) == _cfg()
    metrics = meta["metrics"]
    assert metrics["steps"] == 6 and metrics["losses"] == result.losses
    assert set(metrics["versions"]) == {"torch", "transformers", "trl", "peft"}
    assert json.loads((out / METADATA_FILE).read_text()) == meta


def test_lora_variant_is_an_adapter_over_the_base(lora_run, tiny_dirs) -> None:  # type: ignore[no-untyped-def]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, out = lora_run
    assert result.method == "lora" and result.steps == 6
    assert all(math.isfinite(x) for x in result.losses)
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # adapter only, not a full copy
    assert read_metadata(out)["kind"] == "lora"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                              "gate_proj", "up_proj", "down_proj"}
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["gemma3"])
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        before = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, out)
        after = tuned(ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_same_seed_same_losses_and_a_new_dir(tiny_dirs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(method="lora", epochs=1, learning_rate=1e-2, seed=3)
    spec = _spec(tiny_dirs, "qwen3")
    a = train(cfg, spec, tiny_dirs["qwen3"].parent, tmp_path / "a")
    b = train(cfg, spec, tiny_dirs["qwen3"].parent, tmp_path / "b")
    assert a.losses == pytest.approx(b.losses, rel=1e-6, abs=0)
    # LoRA's random init and dropout follow the seed: another seed, another curve.
    c = train(cfg.model_copy(update={"seed": 4}), spec, tiny_dirs["qwen3"].parent,
              tmp_path / "c")
    assert c.losses[1:] != pytest.approx(a.losses[1:], rel=1e-6, abs=0)
    with pytest.raises(FileExistsError):
        train(cfg, spec, tiny_dirs["qwen3"].parent, tmp_path / "a")


def test_cancel_stops_and_leaves_nothing(tiny_dirs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    out = tmp_path / "cancelled"

    def on_step(report: StepReport) -> None:
        seen.append(report.step)

    with pytest.raises(Cancelled):
        train(_cfg(epochs=10), _spec(tiny_dirs, "llama"), tiny_dirs["llama"].parent, out,
              on_step=on_step, should_cancel=lambda: len(seen) >= 2)
    assert 2 <= len(seen) <= 3 and seen[-1] < 30
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial directory either


def test_cancel_before_training_starts(tiny_dirs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen: list[StepReport] = []
    with pytest.raises(Cancelled):
        train(_cfg(), _spec(tiny_dirs, "llama"), tiny_dirs["llama"].parent, tmp_path / "x",
              on_step=seen.append, should_cancel=lambda: True)
    assert seen == [] and list(tmp_path.iterdir()) == []


def test_bad_lora_targets_are_an_input_error(tiny_dirs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(method="lora", lora_target_modules=["no_such_proj"])
    with pytest.raises(InputError) as info:
        train(cfg, _spec(tiny_dirs, "llama"), tiny_dirs["llama"].parent, tmp_path / "x")
    assert info.value.field == "lora_target_modules"
    assert list(tmp_path.iterdir()) == []


def test_examples_raw_and_chat(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    tok = tiny_lms["llama"].tokenizer
    raw, cut = build_examples(_cfg(texts=["Aldosterone is a hormone."]), tok)
    assert cut == []
    assert raw[0][0] == tok.bos_token_id and raw[0][-1] == tok.eos_token_id
    assert tok.decode(raw[0], skip_special_tokens=True) == "Aldosterone is a hormone."
    chat, _ = build_examples(
        _cfg(texts=["Aldosterone is a hormone."], use_chat_template=True, system_prompt="S."),
        tok)
    text = tok.decode(chat[0])
    assert text.startswith("<bos><|system|>S.<|end|><|assistant|>Aldosterone is a hormone.")
    assert text.count("<bos>") == 1  # the template's BOS, not a second one
    no_system, _ = build_examples(_cfg(texts=["X"], use_chat_template=True), tok)
    assert "<|system|>" not in tok.decode(no_system[0])
    long, cut = build_examples(_cfg(texts=["short", SEED_PROMPT * 5], max_length=20), tok)
    assert cut == [1] and len(long[1]) == 20 and len(long[0]) < 20
