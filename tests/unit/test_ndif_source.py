"""Models NDIF hosts (source: ndif). Nothing here can reach NDIF, so what can be tested is:
the same traced code runs through nnsight's local simulation of the remote path (the
request is serialized exactly as for NDIF, deserialized with this project's modules
hidden, then executed) and gives the numbers a local model gives; the API key comes from
the environment at call time; work that needs local weights is refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from analysis.analyze import CircuitRequest, analyze, intervene_on_prompt
from analysis.attribution import CircuitSettings, NeuronEdit, attribute
from analysis.comparison.layer_patching import patch_between
from analysis.errors import InputError
from analysis.models import ModelSpec, load_model
from analysis.predict import predict
from analysis.prompts import PromptSpec
from analysis.screening import ScreenItem, screen
from tests.tiny_checkpoints import save_tiny_checkpoint

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


@pytest.fixture(scope="module")
def simulated(tiny_dirs: dict[str, Path]):  # type: ignore[no-untyped-def]
    spec = ModelSpec(name="tiny-ndif", source="ndif", hf_id="example/tiny-llama",
                     path=tiny_dirs["llama"], ndif_simulate=True)
    return load_model(spec, tiny_dirs["llama"].parent)


def test_predict_and_screen_through_the_simulated_remote_path(simulated, tiny_lms) -> None:  # type: ignore[no-untyped-def]
    assert simulated.remote is not None and simulated.device == "ndif"
    local = tiny_lms["llama"]
    spec = PromptSpec(prompt=PROMPT)
    remote_p = predict(simulated, spec, [" aldosterone", " renin"], top_k=5)
    local_p = predict(local, spec, [" aldosterone", " renin"], top_k=5)
    assert [t.token_id for t in remote_p.top] == [t.token_id for t in local_p.top]
    for r, ref in zip(remote_p.answers, local_p.answers, strict=True):
        assert r.prob == pytest.approx(ref.prob, rel=1e-5)
        assert r.whole is not None and ref.whole is not None
        assert r.whole.logprob == pytest.approx(ref.whole.logprob, abs=1e-4)
    items = [ScreenItem(prompt=PROMPT, answer="aldosterone"),
             ScreenItem(prompt="The capital of France is", answer="Paris")]
    remote_rows = screen(simulated, items).rows
    local_rows = screen(local, items).rows
    for r, ref in zip(remote_rows, local_rows, strict=True):
        assert (r.top1.token_id, r.correct_rank, r.target) == (
            ref.top1.token_id, ref.correct_rank, ref.target)


def test_an_intervention_through_the_simulated_remote_path(simulated, tiny_lms) -> None:  # type: ignore[no-untyped-def]
    """The neuron edits are shipped with the trace (by value: the server does not have
    circuitlab) and change the same numbers they change on the local model."""
    edits = [NeuronEdit(layer=0, neuron=3), NeuronEdit(layer=1, neuron=7, scale=4.0),
             NeuronEdit(layer=1, neuron=2, scale=-1.0, positions=[0, 2])]
    spec = PromptSpec(prompt=PROMPT)
    remote = intervene_on_prompt(simulated, spec, edits, " aldosterone", " renin", top_k=5)
    local = intervene_on_prompt(tiny_lms["llama"], spec, edits, " aldosterone", " renin",
                                top_k=5)
    assert remote.m_before is not None and remote.m_after is not None
    assert local.m_before is not None and local.m_after is not None
    assert remote.m_before == pytest.approx(local.m_before, abs=1e-4)
    assert remote.m_after == pytest.approx(local.m_after, abs=1e-4)
    assert abs(local.m_after - local.m_before) > 1e-3  # the edits did something
    assert [t.id for t in remote.top_after] == [t.id for t in local.top_after]
    assert remote.prob_b_after == pytest.approx(local.prob_b_after, rel=1e-4)


def test_layer_patching_through_the_simulated_remote_path(tiny_dirs, tiny_lms, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two models NDIF could host (a base and a tune of it): record the variant's layers
    remotely, patch them into the base remotely; the shares match the local run."""
    other = save_tiny_checkpoint("llama", tmp_path / "variant", seed=1, strong=True)
    base_dir = save_tiny_checkpoint("llama", tmp_path / "base", seed=0, strong=True)
    local = {name: load_model(ModelSpec(name=name, source="local", path=d, device="cpu"),
                              tmp_path) for name, d in (("b", base_dir), ("v", other))}
    remote = {name: load_model(ModelSpec(name=f"{name}-ndif", source="ndif",
                                         hf_id=f"example/{name}", path=d,
                                         ndif_simulate=True), tmp_path)
              for name, d in (("b", base_dir), ("v", other))}
    spec = PromptSpec(prompt=PROMPT)
    ours = patch_between(remote["b"], remote["v"], spec, " aldosterone", " renin")
    ref = patch_between(local["b"], local["v"], spec, " aldosterone", " renin")
    assert len(ours) == len(ref) == 2
    for o, r in zip(ours, ref, strict=True):
        assert o.m_mlp == pytest.approx(r.m_mlp, abs=1e-4)
        assert o.m_residual == pytest.approx(r.m_residual, abs=1e-4)
        assert o.mlp_share is not None and r.mlp_share is not None
        assert o.mlp_share == pytest.approx(r.mlp_share, abs=1e-3)
    # The variant's layers move the base's m (the shares are not all zero).
    assert max(abs(r.m_residual - r.m_mlp) for r in ref) > 1e-3
    assert max(abs(r.mlp_share or 0.0) for r in ref) > 0.01


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen3"])
def test_grad_x_act_through_the_simulated_remote_path(arch, tiny_dirs, tiny_lms, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """grad x act's forward and backward run as one nnsight trace (the gradients read
    inside it): influence, activation, m and the answers' probabilities equal the local
    hooks' result for every family."""
    lm = load_model(ModelSpec(name=f"{arch}-ndif", source="ndif", hf_id=f"example/{arch}",
                              path=tiny_dirs[arch], ndif_simulate=True), tmp_path)
    local = tiny_lms[arch]
    ids = local.tokenizer(PROMPT)["input_ids"]
    ours = attribute(lm.model, lm.tokenizer, ids, 5, 7, method="grad_x_act")
    ref = attribute(local.model, local.tokenizer, ids, 5, 7, method="grad_x_act")
    assert ref.influence.abs().max() > 1e-4  # not trivially zero
    torch.testing.assert_close(ours.influence, ref.influence, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.activation, ref.activation, rtol=1e-5, atol=1e-7)
    assert ours.m == pytest.approx(ref.m, abs=1e-6)
    assert ours.prob_a == pytest.approx(ref.prob_a, rel=1e-5)
    assert ours.completeness.embedding_sum == pytest.approx(
        ref.completeness.embedding_sum, abs=1e-6)


def test_a_grad_x_act_circuit_through_the_simulated_remote_path(simulated, tiny_lms) -> None:  # type: ignore[no-untyped-def]
    """analyze() with grad x act, no edges: the same nodes, m and faithfulness as local."""
    req = CircuitRequest(prompt=PromptSpec(prompt=PROMPT), answer_a=" aldosterone",
                         answer_b=" renin",
                         settings=CircuitSettings(method="grad_x_act", edges=False,
                                                   mode="cumulative", mass=0.5,
                                                   ablation="zero"))
    ours = analyze(simulated, req)
    ref = analyze(tiny_lms["llama"], req)
    assert ours.m == pytest.approx(ref.m, abs=1e-6)
    assert [n.name for n in ours.nodes] == [n.name for n in ref.nodes] and ref.nodes
    assert ours.faithfulness is not None and ref.faithfulness is not None
    theirs = ref.faithfulness.model_dump()
    for key, value in ours.faithfulness.model_dump().items():
        if isinstance(value, float):
            assert value == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), key
        else:
            assert value == theirs[key], key


@pytest.mark.parametrize("method", ["relp", "integrated_gradients"])
def test_methods_that_need_local_weights_are_refused_by_name(simulated, method) -> None:  # type: ignore[no-untyped-def]
    req = CircuitRequest(prompt=PromptSpec(prompt=PROMPT), answer_a=" aldosterone",
                         answer_b=" renin", settings=CircuitSettings(method=method))
    with pytest.raises(InputError, match=rf"runs on NDIF.*method='{method}'") as info:
        analyze(simulated, req)
    assert info.value.field == "method"
    with pytest.raises(InputError, match=rf"method='{method}' does not run on NDIF"):
        attribute(simulated.model, simulated.tokenizer, [1, 2, 3], 5, 7, method=method)


def test_edges_are_refused_by_name_on_ndif(simulated) -> None:  # type: ignore[no-untyped-def]
    req = CircuitRequest(prompt=PromptSpec(prompt=PROMPT), answer_a=" aldosterone",
                         answer_b=" renin", settings=CircuitSettings(method="grad_x_act"))
    with pytest.raises(InputError, match=r"runs on NDIF.*edges") as info:
        analyze(simulated, req)
    assert info.value.field == "edges"


def test_real_ndif_needs_its_key_from_the_environment(tiny_dirs, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Configured for NDIF proper: config and tokenizer from the local HF cache, meta
    weights, the request names the model by its id. Without the key set, a prediction
    says which variable to set - before anything leaves the machine."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-llama"
    shutil.copytree(tiny_dirs["llama"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    spec = ModelSpec(name="tiny-remote", source="ndif", hf_id="acme/tiny-llama",
                     hf_cache_dir=tmp_path, ndif_api_key_env="CIRCUITLAB_TEST_NDIF_KEY")
    lm = load_model(spec, tmp_path)
    assert next(lm.model.parameters()).device.type == "meta"  # no weights here
    monkeypatch.delenv("CIRCUITLAB_TEST_NDIF_KEY", raising=False)
    with pytest.raises(InputError, match="CIRCUITLAB_TEST_NDIF_KEY"):
        predict(lm, PromptSpec(prompt=PROMPT))
    # The key is read at call time and never stored with the model's settings. (With it
    # set, nnsight canonicalizes the model id against the Hub while building the request:
    # NDIF needs the network anyway, this machine has none, so that part is not run here.)
    monkeypatch.setenv("CIRCUITLAB_TEST_NDIF_KEY", "secret-value")
    assert "secret-value" not in repr(spec.model_dump()) + repr(vars(lm.remote))


def test_an_ndif_model_needs_its_id() -> None:
    with pytest.raises(ValueError, match="needs hf_id"):
        ModelSpec(name="x", source="ndif")
    with pytest.raises(ValueError, match="weights at path"):
        ModelSpec(name="x", source="ndif", hf_id="meta-llama/Llama-3.1-8B", ndif_simulate=True)
