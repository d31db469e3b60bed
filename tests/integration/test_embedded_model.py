"""The real embedded models: conversion reuse, the seed prompt's wrong answer in both
formats, first-token and whole-answer scores, screening, the CLI and the server - on the
default SmolLM2-135M-Instruct, with a smaller set on Gemma-3-270M."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from analysis.embedded import converted_dir, ensure_converted, is_converted
from analysis.predict import predict
from analysis.prompts import PromptSpec, in_format
from analysis.screening import ScreenItem, ScreenOptions, screen
from tests.conftest import CACHE_DIR, DEFAULT_MODEL, GEMMA, SEED_PROMPT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", [DEFAULT_MODEL, GEMMA])
def test_second_load_reuses_the_converted_model(name: str, embedded_lm, gemma_lm) -> None:  # type: ignore[no-untyped-def]
    assert is_converted(CACHE_DIR, name)
    weights = converted_dir(CACHE_DIR, name) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    messages: list[str] = []
    assert ensure_converted(CACHE_DIR, name, log=messages.append) == converted_dir(
        CACHE_DIR, name)
    assert messages == []  # nothing converted, nothing announced
    assert weights.stat().st_mtime_ns == before


def test_smollm2_makes_the_seeds_error_in_the_plain_completion(embedded_lm) -> None:  # type: ignore[no-untyped-def]
    """The seeds' error (Llama-3.1-8B: Renin 35.2%, Aldosterone 11.4%) on their family's
    small model: " ren" 31.8% first, " al" 11.8% second."""
    assert embedded_lm.name == DEFAULT_MODEL
    assert type(embedded_lm.model).__name__ == "LlamaForCausalLM"
    p = predict(embedded_lm, PromptSpec(prompt=SEED_PROMPT),
                answers=[" aldosterone", " renin"], top_k=10)
    ald, ren = p.answers
    # Both answers are several tokens; first-token scores use " al" and " ren".
    assert (ald.answer.token_text, ald.answer.n_tokens) == (" al", 3)
    assert (ren.answer.token_text, ren.answer.n_tokens) == (" ren", 2)
    assert p.top[0].text == " ren" and p.top[1].text == " al"
    assert ren.prob == pytest.approx(0.318, abs=0.02) and ald.prob == pytest.approx(0.118, abs=0.02)
    # The whole answers keep the order: " aldosterone" 11.4%, " renin" 31.8%.
    assert ald.whole is not None and ren.whole is not None
    assert ren.whole.prob > 2 * ald.whole.prob
    assert ald.whole.prob <= ald.prob and ald.whole.n_tokens == 3
    # The first token is ambiguous: " al" also starts other words; the whole answer is not.
    aldehyde = predict(embedded_lm, PromptSpec(prompt=SEED_PROMPT), answers=[" aldehyde"])
    assert aldehyde.answers[0].answer.token_text == " al"
    assert aldehyde.answers[0].whole is not None
    assert aldehyde.answers[0].whole.prob < ald.whole.prob / 10


def test_smollm2_in_the_seeds_chat_format(embedded_lm) -> None:  # type: ignore[no-untyped-def]
    """The seeds' Stage 3/7 format: chat template, empty system turn, ' Answer:'. On a
    135M model the format changes the answer - which is why both are shown side by side."""
    p = predict(embedded_lm, in_format(PromptSpec(prompt=SEED_PROMPT), "seeds_chat"),
                answers=[" aldosterone", " renin"], top_k=5)
    assert p.prompt.text == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n" + SEED_PROMPT
        + "<|im_end|>\n<|im_start|>assistant\n Answer:")
    assert [t.text for t in p.top[:2]] == [" The", "<|im_end|>"]
    ald = p.answers[0]
    assert ald.prob < 0.01 and ald.rank > 10


def test_gemma_prefers_renin_with_single_token_answers(gemma_lm) -> None:  # type: ignore[no-untyped-def]
    p = predict(gemma_lm, PromptSpec(prompt=SEED_PROMPT),
                answers=[" aldosterone", " renin"], top_k=10)
    ald, ren = p.answers
    assert ald.answer.token_text == " aldosterone" and ren.answer.token_text == " renin"
    assert ald.answer.n_tokens == 1 and ren.answer.n_tokens == 1
    assert ren.prob > ald.prob and ren.rank < ald.rank
    assert " renin" in [t.text for t in p.top[:3]]
    assert p.prompt.tokens[0].text == "<bos>"
    # A one-token answer's whole-answer probability is its first-token probability.
    assert ald.whole is not None and ald.whole.prob == pytest.approx(ald.prob, rel=1e-3)


def test_gemma_chat_format_with_answer_prefix(gemma_lm) -> None:  # type: ignore[no-untyped-def]
    p = predict(gemma_lm, in_format(PromptSpec(prompt=SEED_PROMPT), "seeds_chat"), top_k=3)
    # Gemma has no system role; the seeds' empty system turn adds nothing.
    assert p.prompt.text == ("<bos><start_of_turn>user\n" + SEED_PROMPT
                             + "<end_of_turn>\n<start_of_turn>model\n Answer:")


def test_screening_flags_the_seed_prompt(embedded_lm) -> None:  # type: ignore[no-untyped-def]
    items = [ScreenItem(prompt=SEED_PROMPT, answer="aldosterone"),
             ScreenItem(prompt="The neurotransmitter associated with reward is",
                        answer="dopamine")]
    result = screen(embedded_lm, items)
    seed, dopamine = result.rows
    assert seed.wrong and seed.target
    assert seed.top1.text == " ren" and seed.correct_rank == 2
    assert seed.correct_whole_prob is not None and seed.correct_n_tokens == 3
    assert not dopamine.wrong and not dopamine.target


def test_screening_on_gemma_keeps_the_lead_in_to_a_wrong_answer(gemma_lm) -> None:  # type: ignore[no-untyped-def]
    # After " the" Gemma goes on to " renin" (about half its mass), a wrong answer, not
    # to aldosterone: " the" starts the model's wrong answer and is not a lead-in, so it
    # is the top-1 (B) and nothing is skipped. " aldosterone" counts at raw rank 7 -
    # outside the default top-5, inside a top-10 screen.
    item = [ScreenItem(prompt=SEED_PROMPT, answer="aldosterone")]
    seed = screen(gemma_lm, item).rows[0]
    assert seed.wrong and not seed.target and seed.top1.text == " the"
    assert seed.skipped == [] and seed.rank_excluding_filler == seed.correct_rank
    assert seed.top1_reason is not None and "' renin'" in seed.top1_reason
    wider = screen(gemma_lm, item, ScreenOptions(top_k=10)).rows[0]
    assert wider.wrong and wider.target and wider.top1.text == " the"


def test_screening_on_gemma_hides_no_lead_in(gemma_lm) -> None:  # type: ignore[no-untyped-def]
    """Issue 21.6: " cell" went on to " membrane" (a wrong candidate) and was skipped
    unlisted, which made mitochondria a target at k=5 from raw rank 6."""
    item = [ScreenItem(prompt="The powerhouse of the cell is the", answer="mitochondria")]
    row = screen(gemma_lm, item).rows[0]
    assert row.top1.text == " nucleus" and row.wrong
    assert row.correct_rank == 6 and row.rank_excluding_filler == 6
    assert not row.target and row.skipped == [] and row.skip_reasons == []


@pytest.fixture(scope="module")
def server(embedded_lm, tmp_path_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(cache_dir=CACHE_DIR, data_dir=tmp_path_factory.mktemp("data")))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_server_predicts_the_seed_prompt(server: TestClient) -> None:
    health = server.get("/api/v1/health").json()
    assert health["model_loaded"] and health["default_model"] == DEFAULT_MODEL
    r = server.post("/api/v1/predict", json={"prompt": SEED_PROMPT,
                                             "answers": [" aldosterone", " renin"]})
    assert r.status_code == 200, r.text
    ald, ren = r.json()["answers"]
    assert ren["prob"] > ald["prob"]
    assert ren["whole"]["prob"] > ald["whole"]["prob"] and ald["whole"]["n_tokens"] == 3
    bad = server.post("/api/v1/predict", json={"prompt": SEED_PROMPT, "model": "../../etc"})
    assert bad.status_code == 422
    assert server.post("/api/v1/screen", json={"items": [
        {"prompt": SEED_PROMPT, "answer": "aldosterone"}]}).json()["n_targets"] == 1


def test_cli_predict_and_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import cli

    monkeypatch.setenv("CIRCUITLAB_CACHE_DIR", str(CACHE_DIR))
    runner = CliRunner()
    r = runner.invoke(cli, ["predict", SEED_PROMPT, "-a", " aldosterone", "-a", " renin",
                            "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["model"] == DEFAULT_MODEL
    assert body["answers"][1]["prob"] > body["answers"][0]["prob"]
    r = runner.invoke(cli, ["predict", SEED_PROMPT, "-a", " aldosterone", "--both-formats"])
    assert r.exit_code == 0, r.output
    assert "[Plain completion]" in r.stdout and "[Seeds' chat format" in r.stdout
    assert "whole-answer p=" in r.stdout

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"prompt": SEED_PROMPT, "answer": "aldosterone"}]))
    r = runner.invoke(cli, ["screen", str(prompts)])
    assert r.exit_code == 0, r.output
    assert "TARGET" in r.stdout and "1 target case(s) of 1" in r.stdout

    prompts.write_text("[{oops")
    r = runner.invoke(cli, ["screen", str(prompts)])
    assert r.exit_code == 2 and "not valid JSON" in r.output

    r = runner.invoke(cli, ["models", "--json"])
    assert r.exit_code == 0
    listed = json.loads(r.stdout)["models"]
    assert [m["name"] for m in listed[:2]] == [DEFAULT_MODEL, GEMMA]
    assert listed[0]["converted"] is True


def test_cli_analyze_writes_the_graph_and_summary(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.attribution import CircuitResult
    from app.cli import cli

    monkeypatch.setenv("CIRCUITLAB_CACHE_DIR", str(CACHE_DIR))
    out = tmp_path / "medical_contrastive"
    r = CliRunner().invoke(cli, ["analyze", SEED_PROMPT, "--contrastive", " aldosterone",
                                 " renin", "--tau", "0.15", "--method", "relp",
                                 "--output", str(out)])
    assert r.exit_code == 0, r.output
    result = CircuitResult.load(out / "graph.json")
    assert result.m < 0  # the model prefers renin
    assert result.nodes and all(abs(n.influence) >= 0.15 * abs(result.m) for n in result.nodes)
    summary = (out / "summary.txt").read_text()
    strongest = max(result.nodes, key=lambda n: abs(n.influence))
    assert strongest.name in summary and strongest.name in r.stdout
    tracer = json.loads((out / "circuit-tracer.json").read_text())
    assert len([n for n in tracer["nodes"] if n.get("feature_type") != "logit"]) >= 1
    viewer = json.loads((out / "viewer" / "graph-metadata.json").read_text())
    assert [g["slug"] for g in viewer["graphs"]] == [tracer["metadata"]["slug"]]
    assert (out / "viewer" / f"{tracer['metadata']['slug']}.json").is_file()

    r = CliRunner().invoke(cli, ["analyze", SEED_PROMPT, "--contrastive", " renin", " renin"])
    assert r.exit_code == 2 and "same token" in r.output
    # " aldehyde" starts with the same token as " aldosterone" on SmolLM2: refused, named.
    r = CliRunner().invoke(cli, ["analyze", SEED_PROMPT, "--contrastive", " aldosterone",
                                 " aldehyde"])
    assert r.exit_code == 2 and "same token" in r.output and "' al'" in r.output

    # The seeds' chat format end to end: chat template, empty system turn, " Answer:".
    chat_out = tmp_path / "chat"
    r = CliRunner().invoke(cli, ["analyze", SEED_PROMPT, "--contrastive", " aldosterone",
                                 " renin", "--chat-template", "--system-prompt", "",
                                 "--answer-prefix", " Answer:", "--output", str(chat_out)])
    assert r.exit_code == 0, r.output
    chat = CircuitResult.load(chat_out / "graph.json")
    assert chat.prompt is not None and chat.prompt.startswith("<|im_start|>system\n<|im_end|>")
    assert chat.prompt.endswith("<|im_start|>assistant\n Answer:")
    assert chat.nodes and chat.m != pytest.approx(result.m, abs=0.1)
