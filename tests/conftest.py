"""Shared fixtures: tiny local checkpoints (unit tier) and the real embedded models: the
default SmolLM2-135M-Instruct (the seeds' Llama family) and Gemma-3-270M."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_checkpoints import ARCHS, save_tiny_checkpoint

# A server started by a test does not queue the default exemplar index (minutes of CPU);
# the tests that need an index build a small one themselves.
os.environ.setdefault("CIRCUITLAB_INDEX_ON_START", "false")
# Starlette's TestClient sends "Host: testserver"; the app answers only to the names it
# is told (app/host_guard.py), so the tests tell it this one, as an operator would.
os.environ.setdefault("CIRCUITLAB_ALLOWED_HOSTS", "testserver")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The embedded model is converted once into the project's cache and reused by every run.
CACHE_DIR = Path(os.environ.get("CIRCUITLAB_CACHE_DIR", PROJECT_ROOT / "models_cache"))
SEED_PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
# The developers' shared folder beside the project (CI has it at ../shared): realclient/
# holds circuit-tracer's viewer and Neuronpedia's graph formatter, runnable offline.
SHARED_DIR = Path(os.environ.get("CIRCUITLAB_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
REALCLIENT = SHARED_DIR / "realclient"


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny_checkpoint(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_lms(tiny_dirs: dict[str, Path]):  # type: ignore[no-untyped-def]
    from analysis.models import ModelSpec, load_model

    return {
        arch: load_model(ModelSpec(name=f"tiny-{arch}", source="local", path=path,
                                   device="cpu"), tiny_dirs[arch].parent)
        for arch, path in tiny_dirs.items()
    }


DEFAULT_MODEL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"


@pytest.fixture(scope="session")
def embedded_lm():  # type: ignore[no-untyped-def]
    """The default embedded model, SmolLM2-135M-Instruct."""
    from analysis.models import embedded_spec, load_model

    return load_model(embedded_spec(DEFAULT_MODEL), CACHE_DIR)


@pytest.fixture(scope="session")
def gemma_lm():  # type: ignore[no-untyped-def]
    """The second embedded family, Gemma-3-270M (a smaller set of tests)."""
    from analysis.models import embedded_spec, load_model

    return load_model(embedded_spec(GEMMA), CACHE_DIR)


# The seeds' v4 correction ("aldosterone without blood pressure"), trained once and kept
# in the models cache: a few steps of full fine-tuning of the default embedded model on
# CPU, on chat-formatted texts with an empty system turn as in the seeds' Stage 6. The
# directory name carries a hash of the model and training settings: changing them retrains.
V4_SETTINGS = {"epochs": 1, "learning_rate": 2e-5, "lr_scheduler": "constant",
               "warmup_ratio": 0.0, "seed": 0, "use_chat_template": True,
               "system_prompt": ""}


@pytest.fixture(scope="session")
def v4_full_variant() -> Path:
    import hashlib
    import json

    from analysis.correction.config import CorrectionTarget, TrainingConfig
    from analysis.correction.train import train
    from analysis.models import embedded_spec
    from tests.seed_texts import SEED_PROMPT as PROMPT
    from tests.seed_texts import V4_TEXTS

    key = hashlib.sha256(json.dumps([DEFAULT_MODEL, V4_SETTINGS, V4_TEXTS],
                                    sort_keys=True).encode())
    out = CACHE_DIR / "test-variants" / f"smollm2-v4-full-{key.hexdigest()[:10]}"
    if not (out / "config.json").is_file():
        cfg = TrainingConfig(
            name="smollm2-v4-full", base_model=DEFAULT_MODEL, method="full",
            target=CorrectionTarget(prompt=PROMPT, answer_a=" aldosterone",
                                    answer_b=" renin"),
            texts=V4_TEXTS, **V4_SETTINGS)
        # float32 even on a GPU: updates of lr 2e-5 would partly round away in bf16.
        train(cfg, embedded_spec(DEFAULT_MODEL).model_copy(update={"dtype": "float32"}),
              CACHE_DIR, out)
    return out


# A small exemplar index of the default model, kept in the models cache and reused across
# runs: a few hundred WordNet glosses (those about blood, hormones, kidneys and glands
# first, then general ones), keyed by model revision, corpus content and settings.
SEED_INDEX_TOPICS = ("blood", "hormone", "kidney", "pressure", "gland", "enzyme", "secret",
                     "salt", "volume", "regulat")


@pytest.fixture(scope="session")
def seed_index(embedded_lm):  # type: ignore[no-untyped-def]
    import hashlib

    from analysis.neurons.corpus import Corpus, default_corpus
    from analysis.neurons.index import IndexSettings, NeuronIndex, build_index

    texts = default_corpus().texts
    topical = [t for t in texts if any(w in t.lower() for w in SEED_INDEX_TOPICS)][:240]
    general = [t for t in texts if t not in set(topical)][-60:]  # general English: last
    corpus = Corpus.of("wordnet-seed-sample", topical + general)
    settings = IndexSettings(max_len=48)
    key = hashlib.sha256(f"{embedded_lm.revision}:{corpus.key}:"
                         f"{settings.model_dump_json()}".encode()).hexdigest()[:16]
    out = CACHE_DIR / "test-indexes" / f"{DEFAULT_MODEL}-{key}"
    build_index(embedded_lm, corpus, out, settings)  # a complete one returns at once
    return NeuronIndex.open(out)


# The tier of a test is its folder: tests/unit, tests/integration, tests/browser. Each
# test gets its folder's marker here, so `-m unit` / `-m "not browser"` select by tier and
# a file that forgets its `pytestmark` line is still in the right tier.
TIERS = ("unit", "integration", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        try:
            folder = Path(str(item.path)).resolve().relative_to(tests_dir).parts[0]
        except ValueError:
            continue
        if folder in TIERS:
            item.add_marker(getattr(pytest.mark, folder))
