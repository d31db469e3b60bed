"""The command line reads a model's exemplar index as the server does: `circuitlab analyze`
on a model with a complete index drops the index's always-on neurons as a run of the app
does, and its summary says how many it left out and whose flags they were (one prompt,
one circuit, from the page or the terminal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from analysis.analyze import CircuitRequest
from analysis.attribution import CircuitSettings
from analysis.attribution.results import CircuitResult
from analysis.neurons.index import build_index
from analysis.prompts import PromptSpec
from app.cli import cli
from app.services import build_services
from app.services.runs import compute_or_reuse
from app.settings import Settings
from app.store.indexes import READY
from tests.conftest import SEED_PROMPT
from tests.unit.test_neuron_index import (  # noqa: F401  (the planted model fixture)
    SETTINGS,
    planted,
)

MODEL = "tiny-planted"


def test_cli_analyze_drops_the_neurons_the_index_flags(
        planted: dict[str, Any], tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    lm = planted["lm"]
    checkpoint = tmp_path / "planted"
    lm.model.save_pretrained(checkpoint)
    lm.tokenizer.save_pretrained(checkpoint)
    config = tmp_path / "circuitlab.yaml"
    config.write_text(yaml.safe_dump({
        "include_embedded": False, "default_model": MODEL, "cache_dir": str(tmp_path / "cache"),
        "data_dir": str(tmp_path / "data"),
        "models": [{"name": MODEL, "source": "local", "path": str(checkpoint),
                    "device": "cpu"}]}))
    monkeypatch.setenv("CIRCUITLAB_CONFIG", str(config))
    args = ["analyze", SEED_PROMPT, "--contrastive", " aldosterone", " renin",
            "--tau", "0.01", "--no-edges"]

    plain = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    before = json.loads((tmp_path / "plain" / "graph.json").read_text())
    assert before["always_on_source"] is None

    # A complete index of the model, registered where the server keeps its indexes.
    services = build_services(Settings())
    corpus = planted["corpus"]
    build_index(lm, corpus, services.settings.data_dir / "indexes" / "planted", SETTINGS)
    row = services.index_store.create(model=MODEL, revision="planted0", corpus_key=corpus.key,
                                      corpus_name=corpus.name, path="indexes/planted", meta={})
    services.index_store.update(row.id, state=READY, tokens_done=1)
    known = services.index_readers.known_always_on(MODEL, None)
    assert known is not None and known.reasons

    flagged = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "flagged")])
    assert flagged.exit_code == 0, flagged.output
    after = json.loads((tmp_path / "flagged" / "graph.json").read_text())
    assert after["always_on_source"] == known.source
    # The circuit a run of the server computes (its service, its index readers).
    req = CircuitRequest(prompt=PromptSpec(prompt=SEED_PROMPT), answer_a=" aldosterone",
                         answer_b=" renin", settings=CircuitSettings.checked(tau=0.01,
                                                                              edges=False))
    run, _ = compute_or_reuse(lm, req, False, services.settings, services.runs,
                              services.labels, services.index_readers)
    server_side = CircuitResult.model_validate(run.result)
    assert [(n["layer"], n["neuron"], n["position"]) for n in after["nodes"]] == \
        [(n.layer, n.neuron, n.position) for n in server_side.nodes]
    dropped = [n for n in after["always_on"] if n["dropped"]]
    assert dropped and f"Always-on: {len(dropped)} neuron" in flagged.output
    assert f"(with {known.source})" in flagged.output
