"""The registry: only registered names load, from local directories or the offline HF
cache; settings come from env and a config file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analysis.errors import UnknownModel
from analysis.models import ModelRegistry, ModelSpec, load_model, resolve_device_dtype
from app.settings import Settings


def test_local_directory_loads_with_device_and_dtype(tiny_dirs) -> None:  # type: ignore[no-untyped-def]
    spec = ModelSpec(name="tiny", source="local", path=tiny_dirs["llama"], dtype="bfloat16",
                     device="cpu")
    lm = load_model(spec, Path("/nonexistent"))
    assert lm.device == "cpu" and lm.dtype == "bfloat16"
    assert next(lm.model.parameters()).dtype.is_floating_point
    assert str(next(lm.model.parameters()).dtype) == "torch.bfloat16"
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert len(lm.revision) == 12
    assert lm.n_layers == 2


def test_relative_local_path_is_under_the_cache(tiny_dirs) -> None:  # type: ignore[no-untyped-def]
    spec = ModelSpec(name="tiny", source="local", path=Path("llama"), device="cpu")
    assert load_model(spec, tiny_dirs["llama"].parent).model is not None


def test_hub_id_resolves_from_a_local_cache_offline(tiny_dirs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Lay the checkpoint out exactly as huggingface_hub caches a download.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-llama"
    snap = repo / "snapshots" / commit
    shutil.copytree(tiny_dirs["llama"], snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    spec = ModelSpec(name="acme-tiny", source="hub", hf_id="acme/tiny-llama",
                     hf_cache_dir=tmp_path, device="cpu")
    lm = load_model(spec, tmp_path)
    assert lm.model.config.num_hidden_layers == 2
    missing = ModelSpec(name="nope", source="hub", hf_id="acme/not-cached",
                        hf_cache_dir=tmp_path, device="cpu")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(missing, tmp_path)


def test_registry_refuses_unknown_and_path_like_names() -> None:
    reg = ModelRegistry([ModelSpec(name="a", source="local", path=Path("/x"))])
    for bad in ["b", "../../etc", "/etc/passwd", "gpt2"]:
        with pytest.raises(UnknownModel) as err:
            reg.get(bad)
        assert "registered models: a" in err.value.message
    with pytest.raises(ValueError):
        ModelSpec(name="../../etc", source="local", path=Path("/x"))
    with pytest.raises(ValueError, match="needs a path"):
        ModelSpec(name="x", source="local")
    with pytest.raises(ValueError, match="twice"):
        ModelRegistry([ModelSpec(name="a", source="local", path=Path("/x"))] * 2)


def test_not_a_model_directory(tmp_path: Path) -> None:
    spec = ModelSpec(name="empty", source="local", path=tmp_path, device="cpu")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_model(spec, tmp_path)


def test_auto_device_on_cpu() -> None:
    import torch

    if torch.cuda.is_available():
        assert resolve_device_dtype("auto", "auto") == ("cuda", "bfloat16")
    else:
        assert resolve_device_dtype("auto", "auto") == ("cpu", "float32")
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device_dtype("cuda", "auto")


def test_settings_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    tiny_dirs) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "circuitlab.yaml"
    cfg.write_text(
        "default_model: tiny\n"
        "models:\n"
        f"  - {{name: tiny, source: local, path: '{tiny_dirs['llama']}'}}\n"
        "limits: {max_top_k: 7}\n"
    )
    monkeypatch.setenv("CIRCUITLAB_CONFIG", str(cfg))
    monkeypatch.setenv("CIRCUITLAB_LIMITS__MAX_BATCH_SIZE", "3")
    s = Settings()
    assert s.default_model == "tiny"
    # The embedded models come first, the default (the seeds' family) at their head.
    assert s.registry().names() == ["smollm2-135m-instruct", "gemma-3-270m", "tiny"]
    assert s.limits.max_top_k == 7 and s.limits.max_batch_size == 3
    assert s.host == "127.0.0.1"
    monkeypatch.setenv("CIRCUITLAB_DEFAULT_MODEL", "missing")
    with pytest.raises(ValueError, match="not registered"):
        Settings()
    monkeypatch.setenv("CIRCUITLAB_DEFAULT_MODEL", "tiny")
    monkeypatch.setenv("CIRCUITLAB_MODELS", json.dumps([{"name": "t2", "source": "local",
                                                         "path": "/x"}]))
    monkeypatch.setenv("CIRCUITLAB_DEFAULT_MODEL", "t2")
    assert Settings().registry().names() == ["smollm2-135m-instruct", "gemma-3-270m", "t2"]


def test_embedded_models_are_registered_once_each() -> None:
    from analysis.embedded import DEFAULT_EMBEDDED, EMBEDDED
    from analysis.models import embedded_spec, embedded_specs

    assert DEFAULT_EMBEDDED == "smollm2-135m-instruct"
    assert [s.name for s in embedded_specs()] == ["smollm2-135m-instruct", "gemma-3-270m"]
    assert set(EMBEDDED) == {s.name for s in embedded_specs()}
    assert embedded_spec("gemma-3-270m").source == "embedded"
    assert Settings().default_model == DEFAULT_EMBEDDED
    # An embedded entry must name a model that ships embedded.
    with pytest.raises(ValueError, match="embedded models"):
        ModelSpec(name="my-model", source="embedded")
