"""Correction configs: defaults, caps, and the seeds' YAML format in and out."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from analysis.correction.config import (
    DEFAULT_LORA_TARGETS,
    CorrectionTarget,
    EvalItem,
    TrainingCaps,
    TrainingConfig,
    from_seed_yaml,
    to_seed_yaml,
    validate_caps,
)
from analysis.errors import InputError, LimitExceeded
from tests.seed_texts import SEED_PROMPT, V4_SEED_YAML, V4_TEXTS

TARGET = CorrectionTarget(prompt=SEED_PROMPT, chat_template=True, answer_prefix=" Answer:",
                          answer_a=" aldosterone", answer_b=" renin")


def test_reads_the_seeds_stage6_yaml() -> None:
    cfg = from_seed_yaml(V4_SEED_YAML)
    # PyYAML reads `5e-6` as the string "5e-6" (YAML 1.1); it must come out a float.
    assert yaml.safe_load(V4_SEED_YAML)["learning_rate"] == "5e-6"
    assert cfg.learning_rate == 5e-6
    assert cfg.texts == V4_TEXTS
    assert cfg.source_model_name == "meta-llama/Llama-3.1-8B-Instruct"
    assert cfg.base_model is None  # the caller maps it to a registered name
    assert cfg.name == "sft_raas_v4"  # from output_dir
    assert cfg.extra == {"device": "cuda", "dtype": "bfloat16",
                         "output_dir": "checkpoints/sft_raas_v4"}
    assert (cfg.epochs, cfg.batch_size, cfg.gradient_accumulation_steps) == (5, 1, 1)
    assert (cfg.warmup_ratio, cfg.max_length) == (0.1, 512)
    assert cfg.use_chat_template is True
    assert cfg.system_prompt == ""
    assert cfg.method == "full"


def test_caller_supplies_name_base_and_target() -> None:
    cfg = from_seed_yaml(V4_SEED_YAML, name="v4-fix", base_model="gemma-3-270m", target=TARGET)
    assert (cfg.name, cfg.base_model) == ("v4-fix", "gemma-3-270m")
    assert cfg.target == TARGET


def test_round_trip_keeps_everything() -> None:
    cfg = TrainingConfig(
        name="v4-lora", base_model="gemma-3-270m", target=TARGET,
        texts=[*V4_TEXTS, "one line", "trailing spaces   \nand\ttabs\n\n"],
        method="lora", lora_r=8, lora_alpha=16, lora_target_modules=["q_proj", "v_proj"],
        epochs=3, lr_scheduler="linear", seed=7, topic_words=["blood pressure", "volume"],
        eval_set=[EvalItem(prompt="Conn's syndrome is caused by excess", expected=" aldosterone",
                           kind="side_effect")],
        extra={"device": "cuda", "my_own_key": [1, 2]},
    )
    text = to_seed_yaml(cfg)
    back = from_seed_yaml(text)
    assert back == cfg
    assert back.learning_rate is None  # still "the method's default", not a pinned value
    plain = yaml.safe_load(text)
    # A seed script reading the export sees its own keys with usable values.
    assert plain["model_name"] == "gemma-3-270m"
    assert isinstance(plain["learning_rate"], float) and plain["learning_rate"] == 1e-4
    assert plain["use_lora"] is True and plain["lora_r"] == 8
    assert plain["texts"] == cfg.texts
    assert "|" in text.split("texts:", 1)[1]  # multi-line texts as blocks, like the seeds'


def test_round_trip_of_the_seed_file_keeps_its_keys() -> None:
    cfg = from_seed_yaml(V4_SEED_YAML)
    again = from_seed_yaml(to_seed_yaml(cfg))
    assert again == cfg
    plain = yaml.safe_load(to_seed_yaml(cfg))
    assert plain["model_name"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert plain["output_dir"] == "checkpoints/sft_raas_v4"
    assert plain["learning_rate"] == 5e-6


def test_unknown_keys_and_lora_spellings() -> None:
    text = ("model_name: x\nuse_lora: true\nlora_rank: 4\ntarget_modules: [q_proj]\n"
            "lr: 2e-4\nnum_train_epochs: 3\nwandb_project: mine\ntexts: [hello there]\n")
    cfg = from_seed_yaml(text)
    assert cfg.method == "lora"
    assert (cfg.lora_r, cfg.lora_target_modules) == (4, ["q_proj"])
    assert cfg.learning_rate == 2e-4 and cfg.epochs == 3
    assert cfg.extra == {"wandb_project": "mine"}
    assert from_seed_yaml(to_seed_yaml(cfg)) == cfg


def test_default_learning_rate_depends_on_the_method() -> None:
    full = TrainingConfig(name="a", texts=["x"])
    lora = TrainingConfig(name="a", texts=["x"], method="lora")
    assert full.learning_rate is None and full.effective_learning_rate == 5e-6
    assert lora.effective_learning_rate == 1e-4
    assert TrainingConfig(name="a", texts=["x"], learning_rate=3e-5).effective_learning_rate \
        == 3e-5
    assert full.lr_scheduler == "constant_with_warmup"
    assert full.lora_target_modules == list(DEFAULT_LORA_TARGETS)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("texts: [a\nepochs: 3", "yaml"),  # malformed flow sequence
        ("- just\n- a list\n", "yaml"),
        ("epochs: 3\n", "texts"),
        ("texts: hello\n", "texts"),
        ("texts: [a, 3]\n", "texts"),
        ("texts: [a]\nepochs: five\n", "epochs"),
        ("texts: [a]\nlearning_rate: fast\n", "learning_rate"),
        ("texts: [a]\nuse_lora: maybe\n", "use_lora"),
        ("texts: [a]\nwarmup_ratio: 1.0\n", "warmup_ratio"),
        ("texts: ['  ']\n", "texts"),
        ("texts: [a]\ncircuitlab: 3\n", "circuitlab"),
    ],
)
def test_bad_yaml_is_an_input_error_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(InputError) as info:
        from_seed_yaml(text)
    assert info.value.field == field
    assert info.value.message


def test_name_falls_back_when_output_dir_is_odd() -> None:
    assert from_seed_yaml("texts: [a]\n").name == "correction"
    assert from_seed_yaml("texts: [a]\noutput_dir: 'runs/my run!/'\n").name == "my-run"


def test_eval_items_put_the_target_first() -> None:
    side = EvalItem(prompt="Aldosterone is secreted by the", expected=" adrenal",
                    kind="side_effect")
    cfg = TrainingConfig(name="a", texts=["x"], target=TARGET, eval_set=[side])
    items = cfg.eval_items()
    assert [i.kind for i in items] == ["target", "side_effect"]
    assert (items[0].prompt, items[0].expected, items[0].wrong) == (
        SEED_PROMPT, " aldosterone", " renin")
    assert TrainingConfig(name="a", texts=["x"], eval_set=[side]).eval_items() == [side]


def test_target_formats_other_prompts_alike() -> None:
    spec = TARGET.prompt_spec("Another prompt is")
    assert spec.prompt == "Another prompt is"
    assert (spec.chat_template, spec.answer_prefix) == (True, " Answer:")


def test_config_rejects_blank_texts_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        TrainingConfig(name="a", texts=["ok", " \n"])
    with pytest.raises(ValidationError):
        TrainingConfig(name="a", texts=[])
    with pytest.raises(ValidationError):
        TrainingConfig(name="a", texts=["x"], epoch=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TrainingConfig(name="../etc", texts=["x"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"texts": ["t"] * 5}, "texts"),
        ({"texts": ["short", "x" * 101]}, "texts[1]"),
        ({"epochs": 11}, "epochs"),
        ({"max_length": 4096}, "max_length"),
        ({"batch_size": 9}, "batch_size"),
        ({"eval_set": [EvalItem(prompt="p", expected="e")] * 3}, "eval_set"),
        ({"topic_words": ["a", "b", "c"]}, "topic_words"),
    ],
)
def test_caps_name_the_field(change: dict[str, object], field: str) -> None:
    caps = TrainingCaps(max_texts=4, max_text_chars=100, max_epochs=10, max_length=2048,
                        max_eval_items=2, max_batch_size=8, max_topic_words=2)
    ok = TrainingConfig(name="a", texts=["t"] * 4, epochs=10, max_length=2048, batch_size=8)
    validate_caps(ok, caps)
    with pytest.raises(LimitExceeded) as info:
        validate_caps(ok.model_copy(update=change), caps)
    assert info.value.field == field
    assert "limit" in info.value.message


def test_default_caps_accept_the_seeds_v4_config() -> None:
    validate_caps(from_seed_yaml(V4_SEED_YAML))
