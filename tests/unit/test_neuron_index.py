"""The neuron exemplar index on a tiny Llama with planted neurons.

The model's attention is switched off (o_proj = 0) and layer 0 writes nothing back
(down_proj = 0), so every MLP sees only its token's embedding. Three neurons are planted
through dedicated embedding dimensions:

* L0/N7 fires on one token X (" dopamine") and is exactly 0 elsewhere;
* L0/N9 fires massively on <bos>, i.e. at every text's first position (attention-sink style);
* L1/N3 is large at every token (always on).

Everything else is random. Statistics are checked against a brute-force pass (one text at
a time, every activation kept), not against the streaming code's own arithmetic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from analysis.errors import InputError, LimitExceeded
from analysis.models import LoadedModel, ModelSpec
from analysis.neurons.corpus import Corpus, corpus_from_bytes, load_corpus
from analysis.neurons.data_description import data_description
from analysis.neurons.index import (
    Cancelled,
    IndexSettings,
    NeuronIndex,
    build_index,
)
from analysis.neurons.search import search
from analysis.neurons.store import SNAPSHOT_ARRAYS, load_snapshot
from tests.tiny_checkpoints import build_config, build_tokenizer

X_NEURON, BOS_NEURON, DENSE_NEURON = (0, 7), (0, 9), (1, 3)
WORDS = ["the", "hormone", "aldosterone", "renin", "angiotensin", "insulin", "dopamine",
         "reward", "blood", "pressure", "volume", "kidney", "capital", "France", "Paris",
         "side", "effect", "opioid"]


def _texts() -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 14)))) for _ in range(70)]


@pytest.fixture(scope="module")
def planted() -> dict[str, Any]:
    tok = build_tokenizer()
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(build_config("llama", len(tok), layers=2))
    x_token, = tok.encode(" dopamine", add_special_tokens=False)
    bos = tok.bos_token_id
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5 / p.shape[1] ** 0.5)
        emb = model.model.embed_tokens.weight
        emb[:, :3] = 0.0
        emb[x_token, 0] = 3.0   # dimension 0: only token X
        emb[:, 1] = 2.0         # dimension 1: every token
        emb[bos, 2] = 3.0       # dimension 2: only <bos>
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.layers[0].mlp.down_proj.weight.zero_()
        for (layer, neuron), dim, gain in ((X_NEURON, 0, 4.0), (BOS_NEURON, 2, 30.0),
                                           (DENSE_NEURON, 1, 4.0)):
            mlp = model.model.layers[layer].mlp
            mlp.gate_proj.weight[neuron].zero_()
            mlp.up_proj.weight[neuron].zero_()
            mlp.gate_proj.weight[neuron, dim] = gain
            mlp.up_proj.weight[neuron, dim] = gain
            # No other neuron reads the planted dimensions.
            others = [n for n in range(mlp.gate_proj.weight.shape[0]) if n != neuron]
            mlp.gate_proj.weight[others, dim] = 0.0
            mlp.up_proj.weight[others, dim] = 0.0
    model.eval().requires_grad_(False)
    lm = LoadedModel(spec=ModelSpec(name="tiny-planted", source="local", path=Path("unused")),
                     model=model, tokenizer=tok, device="cpu", dtype="float32",
                     revision="planted0", load_seconds=0.0)
    corpus = Corpus.of("planted", _texts())
    return {"lm": lm, "corpus": corpus, "x": x_token}


SETTINGS = IndexSettings(top_k=30, dtype="float32", batch_tokens=96, chunk_texts=32,
                         snapshot_tokens=150, sample_size=200, max_len=32)


@pytest.fixture(scope="module")
def built(planted: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> NeuronIndex:
    out = tmp_path_factory.mktemp("index")
    seen: list[int] = []
    summary = build_index(planted["lm"], planted["corpus"], out, SETTINGS,
                          on_progress=lambda p: seen.append(p.tokens_done))
    assert summary.complete and summary.tokens_done == summary.tokens_total
    assert seen == sorted(seen) and seen[-1] == summary.tokens_total
    return NeuronIndex.open(out)


def _brute_force(planted: dict[str, Any]) -> dict[str, Any]:
    """Every activation of every layer, one text at a time, with positions."""
    lm, tok = planted["lm"], planted["lm"].tokenizer
    acts: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    ids_all: list[list[int]] = []
    layers = lm.model.model.layers
    for text in planted["corpus"].texts:
        ids = tok(text, truncation=True, max_length=SETTINGS.max_len)["input_ids"]
        ids_all.append(ids)
        grabbed: dict[int, torch.Tensor] = {}
        handles = [layers[i].mlp.down_proj.register_forward_pre_hook(
            lambda m, a, i=i, g=grabbed: g.__setitem__(i, a[0][0].clone())) for i in (0, 1)]
        with torch.no_grad():
            lm.model(torch.tensor([ids]))
        for h in handles:
            h.remove()
        for i in (0, 1):
            acts[i].append(grabbed[i])
    return {"acts": {i: torch.cat(v) for i, v in acts.items()},
            "first": {i: torch.stack([a[0] for a in v]) for i, v in acts.items()},
            "ids": ids_all, "tokens": np.concatenate([np.array(i) for i in ids_all])}


def test_planted_neuron_exemplars_are_exactly_its_token(built: NeuronIndex,
                                                         planted: dict[str, Any]) -> None:
    brute = _brute_force(planted)
    layer, neuron = X_NEURON
    x_text = built.token_text(planted["x"])
    occurrences = int((brute["tokens"] == planted["x"]).sum())
    assert 3 <= occurrences <= SETTINGS.top_k
    exemplars = built.exemplars(layer, neuron)
    firing = [e for e in exemplars if e.activation > 0]
    assert len(firing) == occurrences
    assert {e.token for e in firing} == {x_text}
    assert exemplars[:occurrences] == firing  # firing ones first, then the zeros
    assert all(e.activation == 0 for e in exemplars[occurrences:])
    # Each context is a real stretch of its text, the token in the middle.
    for e in firing:
        assert x_text.strip() in planted["corpus"].texts[e.text_id]
        window = (e.left + e.token + e.right).replace("<bos>", "").strip()
        assert window in planted["corpus"].texts[e.text_id]


def test_stats_match_brute_force(built: NeuronIndex, planted: dict[str, Any]) -> None:
    brute = _brute_force(planted)
    for layer, neuron in (X_NEURON, BOS_NEURON, DENSE_NEURON, (1, 11), (0, 40)):
        a = brute["acts"][layer][:, neuron].double()
        s = built.stats(layer, neuron)
        assert s.count == a.numel()
        assert s.mean == pytest.approx(float(a.mean()), rel=1e-5, abs=1e-6)
        assert s.std == pytest.approx(float(a.std(unbiased=False)), rel=1e-4, abs=1e-6)
        assert s.max == pytest.approx(float(a.max()), rel=1e-6)
        assert s.min == pytest.approx(float(a.min()), rel=1e-6)
        assert s.frac_active == pytest.approx(float((a > s.threshold).double().mean()))
        assert s.frac_large == pytest.approx(float((a.abs() > s.threshold).double().mean()))
        first = brute["first"][layer][:, neuron].double()
        assert s.first_pos_mean == pytest.approx(float(first.mean()), rel=1e-5, abs=1e-6)
        # Top activations and where they are, against a full sort.
        values = built.exemplars(layer, neuron)
        top = torch.sort(a, descending=True).values[:len(values)]
        assert [e.activation for e in values] == pytest.approx(top.tolist(), rel=1e-6)
        lowest = built.exemplars(layer, neuron, negative=True)
        bottom = torch.sort(a).values[:len(lowest)]
        assert [e.activation for e in lowest] == pytest.approx(bottom.tolist(), rel=1e-6)


def test_always_on_flags_the_planted_ones_only(built: NeuronIndex) -> None:
    flagged = built.always_on()
    assert BOS_NEURON in flagged and DENSE_NEURON in flagged
    assert X_NEURON not in flagged
    assert len(flagged) <= 4  # random neurons are not flagged wholesale
    bos, dense = built.stats(*BOS_NEURON), built.stats(*DENSE_NEURON)
    assert bos.always_on and "first position" in (bos.always_on_reason or "")
    assert dense.always_on and "every token" in (dense.always_on_reason or "")
    normal = built.stats(*X_NEURON)
    assert not normal.always_on and normal.always_on_reason is None


def test_quantiles_and_histogram_come_from_the_sample(built: NeuronIndex) -> None:
    layer, neuron = DENSE_NEURON
    edges, counts = built.histogram(layer, neuron)
    assert len(edges) == len(counts) + 1
    assert sum(counts) == len(built.sample_positions) == SETTINGS.sample_size
    samples = built.quantile_samples(layer, neuron)
    assert len(samples) == SETTINGS.n_quantile_samples
    qs = [e.quantile for e in samples]
    assert qs == sorted(qs) and qs[0] == 0.5
    assert [e.activation for e in samples] == sorted(e.activation for e in samples)


def test_description_and_search_find_the_planted_neuron(built: NeuronIndex,
                                                        planted: dict[str, Any]) -> None:
    x_text = built.token_text(planted["x"])
    description = data_description(built, *X_NEURON)
    assert description.startswith(f'"{x_text}" ×')
    hits = search(built, "Dopamine", limit=5)
    assert (hits[0].layer, hits[0].neuron) == X_NEURON
    assert hits[0].example.token == x_text
    assert search(built, "zzzz-not-there") == []
    # Whole words or their inflections only: "amine" sits inside "dopamine" but is not a
    # word of it (as "renal" is not a word of "adrenal"); a plural still finds it.
    assert search(built, "amine") == []
    plural = search(built, "dopamines", limit=1)
    assert (plural[0].layer, plural[0].neuron) == X_NEURON


def test_resume_after_a_stop_equals_one_build(planted: dict[str, Any], built: NeuronIndex,
                                              tmp_path: Path) -> None:
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    with pytest.raises(Cancelled) as info:
        build_index(planted["lm"], planted["corpus"], tmp_path, SETTINGS, should_stop=stop)
    partial = NeuronIndex.open(tmp_path)  # readable while incomplete
    assert not partial.meta.complete
    assert 0 < partial.meta.tokens_done == info.value.summary.tokens_done
    assert partial.meta.tokens_done < partial.meta.tokens_total
    assert partial.exemplars(*X_NEURON) or partial.stats(*DENSE_NEURON).count > 0
    summary = build_index(planted["lm"], planted["corpus"], tmp_path, SETTINGS)
    assert summary.complete and summary.tokens_done < 2 * summary.tokens_total
    resumed = NeuronIndex.open(tmp_path)
    assert resumed.meta.thresholds == built.meta.thresholds
    assert resumed.meta.snapshot is not None and built.meta.snapshot is not None
    a = load_snapshot(tmp_path, resumed.meta.snapshot)
    b = load_snapshot(built.path, built.meta.snapshot)
    for name in SNAPSHOT_ARRAYS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # Only the current snapshot is left.
    assert [p.name for p in tmp_path.iterdir() if "snap-" in p.name] == [resumed.meta.snapshot]
    # A complete index is not rebuilt.
    again = build_index(planted["lm"], planted["corpus"], tmp_path, SETTINGS)
    assert again.tokens_per_s == 0.0 and again.complete


def test_a_directory_of_another_build_is_refused_untouched(planted: dict[str, Any],
                                                           built: NeuronIndex) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in built.path.iterdir()}
    other = SETTINGS.model_copy(update={"top_k": 5})
    with pytest.raises(InputError, match="another model, corpus or settings"):
        build_index(planted["lm"], planted["corpus"], built.path, other)
    after = {p.name: p.stat().st_mtime_ns for p in built.path.iterdir()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"}


def test_bad_neuron_is_a_clear_error(built: NeuronIndex) -> None:
    with pytest.raises(InputError, match="layer must be in"):
        built.stats(5, 0)
    with pytest.raises(InputError, match="neuron must be in"):
        built.exemplars(0, 10_000)


@pytest.mark.parametrize("factor", [0.0, 1e9])  # always the full topk / always candidates
def test_streaming_top_k_paths_match_a_full_sort(factor: float) -> None:
    from analysis.neurons.accumulate import IndexState

    gen = torch.Generator().manual_seed(1)
    state = IndexState(n_layers=1, n_neurons=8, k=5, sample_size=4)
    state.full_topk_factor = factor
    seen = []
    for b in range(6):
        acts = torch.randn(40, 8, generator=gen) * (1 + b)
        positions = torch.arange(40) + 40 * b
        empty = torch.zeros(0, dtype=torch.int64)
        state.update(0, acts, positions, empty, empty, empty)
        seen.append(acts)
    every = torch.cat(seen)
    top = torch.sort(every, dim=0, descending=True)
    low = torch.sort(every, dim=0)
    torch.testing.assert_close(state.top_val[0], top.values[:5])
    assert torch.equal(state.top_idx[0], top.indices[:5])
    torch.testing.assert_close(-state.neg_val[0], low.values[:5])
    assert torch.equal(state.neg_idx[0], low.indices[:5])


# --- corpora -----------------------------------------------------------------------------


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_corpus_formats(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("renin: an enzyme\n\n  aldosterone:\ta hormone  \n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "kidney\nfilters"}) + "\n\n")
    one = load_corpus(tmp_path / "a.txt")
    assert one.texts == ["renin: an enzyme", "aldosterone: a hormone"]
    folder = load_corpus(tmp_path)
    assert folder.texts == [*one.texts, "kidney filters"]
    assert folder.name == tmp_path.name and len(folder.key) == 64
    same = corpus_from_bytes("up.txt", b"renin: an enzyme\naldosterone: a hormone\n")
    assert same.key == one.key  # the key is the content, not the file
    assert load_corpus(tmp_path / "b.jsonl").key != one.key


@pytest.mark.parametrize(("name", "data", "error", "match"), [
    ("empty.txt", b"\n  \n", InputError, "holds no text"),
    ("bin.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00", InputError, "binary"),
    ("latin.txt", "caf\u00e9\n".encode("latin-1"), InputError, "not UTF-8"),
    ("bad.jsonl", b'{"text": "fine"}\n{"text": oops}\n', InputError, "line 2: not valid JSON"),
    ("nofield.jsonl", b'{"body": "x"}\n', InputError, "line 1: expected an object"),
    ("big.txt", b"word\n" * 100, LimitExceeded, "more than the limit of 100 bytes"),
    ("data.csv", b"a,b\n", InputError, "unsupported file type"),
])
def test_corpus_errors_are_typed_and_leave_nothing(tmp_path: Path, name: str, data: bytes,
                                                   error: type[Exception], match: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    before = _listing(tmp_path)
    with pytest.raises(error, match=match):
        load_corpus(path, max_bytes=100)
    with pytest.raises(error, match=match):
        corpus_from_bytes(name, data, max_bytes=100)
    assert _listing(tmp_path) == before


def test_corpus_text_limit_and_missing(tmp_path: Path) -> None:
    (tmp_path / "many.txt").write_text("a\nb\nc\n")
    with pytest.raises(LimitExceeded, match="more than the limit of 2"):
        load_corpus(tmp_path / "many.txt", max_texts=2)
    with pytest.raises(InputError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")


# --- the CLI -----------------------------------------------------------------------------


def test_cli_builds_resumable_index_and_reports_bad_corpus(
        tiny_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from typer.testing import CliRunner

    from app.cli import cli

    config = tmp_path / "circuitlab.yaml"
    config.write_text(yaml.safe_dump({
        "include_embedded": False, "default_model": "tiny", "data_dir": str(tmp_path / "d"),
        "models": [{"name": "tiny", "source": "local", "path": str(tiny_dirs["llama"]),
                    "device": "cpu"}]}))
    monkeypatch.setenv("CIRCUITLAB_CONFIG", str(config))
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n".join(_texts()[:20]))
    r = CliRunner().invoke(cli, ["index", "tiny", "--corpus", str(corpus), "--top-k", "5",
                                 "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    assert "complete: " in r.output
    key = load_corpus(corpus).key
    index = NeuronIndex.open(tmp_path / "d" / "indexes" / "tiny" / key[:16])
    assert index.meta.complete and index.meta.settings.top_k == 5
    assert len(index.exemplars(0, 0)) == 5
    corpus.write_bytes(b"\x00\x01binary")
    r = CliRunner().invoke(cli, ["index", "tiny", "--corpus", str(corpus)])
    assert r.exit_code == 2 and "binary" in r.output
