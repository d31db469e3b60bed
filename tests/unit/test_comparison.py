"""Comparison ground truth on a tiny 4-layer Llama: a variant with one neuron's output
weights edited, and a LoRA adapter that boosts answer A through one neuron. The
comparison must find the neuron, the weight diff its layer, and patching that layer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from analysis.analyze import CircuitRequest
from analysis.answers import resolve_answer
from analysis.attribution import attribute
from analysis.comparison import (
    CompareRequest,
    PromptSetItem,
    check_pair,
    compare_loaded,
)
from analysis.errors import InputError
from analysis.lora import load_overlay
from analysis.models import LoadedModel, ModelSpec, activate, load_lora_variant, load_model
from analysis.prompts import PromptSpec, format_prompt
from tests.tiny_checkpoints import save_tiny_checkpoint

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
LAYER = 2


def _load(path: Path, name: str, kind: str = "base", base: str | None = None) -> LoadedModel:
    spec = ModelSpec(name=name, source="local", path=path, device="cpu", kind=kind,  # type: ignore[arg-type]
                     base=base)
    return load_model(spec, path.parent)


def _request(settings: dict[str, object] | None = None) -> CompareRequest:
    return CompareRequest(
        circuit=CircuitRequest(prompt=PromptSpec(prompt=PROMPT), answer_a=" aldosterone",
                               answer_b=" renin",
                               settings={"edges": False, **(settings or {})}),
        prompt_set=[PromptSetItem(kind="side_effect", prompt="The capital of France is",
                                  expected=" Paris", wrong=" renin")],
    )


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint("llama", tmp_path_factory.mktemp("cmp") / "base", seed=1,
                                layers=4, strong=True)


@pytest.fixture(scope="module")
def base(base_dir: Path) -> LoadedModel:
    return _load(base_dir, "tiny4")


@pytest.fixture(scope="module")
def attribution(base: LoadedModel):  # type: ignore[no-untyped-def]
    ids = format_prompt(base.tokenizer, PromptSpec(prompt=PROMPT)).input_ids
    a = resolve_answer(base.tokenizer, " aldosterone").token_id
    b = resolve_answer(base.tokenizer, " renin").token_id
    return attribute(base.model, base.tokenizer, ids, a, b, method="relp")


@pytest.fixture(scope="module")
def driver(attribution) -> int:  # type: ignore[no-untyped-def]
    """The layer-2 neuron with the largest total influence on m in the base."""
    return int(attribution.neuron_totals()[LAYER].abs().argmax())


@pytest.fixture(scope="module")
def driver_sign(attribution, driver: int) -> float:  # type: ignore[no-untyped-def]
    """The sign of the driver's activation at the last position (where A is predicted)."""
    return 1.0 if float(attribution.activation[LAYER, -1, driver]) >= 0 else -1.0


def test_an_edited_neuron_is_found_by_category_weights_and_patching(
        base: LoadedModel, base_dir: Path, driver: int, tmp_path: Path) -> None:
    variant_dir = tmp_path / "edited"
    shutil.copytree(base_dir, variant_dir)
    edited = _load(variant_dir, "tiny4-edited", kind="full", base="tiny4")
    with torch.no_grad():
        edited.model.model.layers[LAYER].mlp.down_proj.weight[:, driver] *= 3.0
    edited.model.save_pretrained(variant_dir)
    edited = _load(variant_dir, "tiny4-edited", kind="full", base="tiny4")

    result = compare_loaded(base, edited, _request())
    changes = {(c.layer, c.neuron): c for c in result.comparison.neurons}
    target = changes[(LAYER, driver)]
    assert target.category == "strengthened"
    assert target.tuned == pytest.approx(3 * target.base, rel=0.35)
    # The edited neuron moved more than any other neuron.
    assert max(result.comparison.neurons, key=lambda c: abs(c.delta)) is target

    assert result.weight_kind == "full"
    top = result.weight_changes[0]
    assert (top.layer, top.module) == (LAYER, "mlp.down_proj") and top.relative > 0.01
    assert all(c.relative == 0 for c in result.weight_changes[1:])

    shares = {p.layer: p for p in result.patching}
    assert shares[LAYER].mlp_share == pytest.approx(1.0, abs=1e-4)
    for layer in (0, 1):
        assert shares[layer].mlp_share == pytest.approx(0.0, abs=1e-4)
        assert shares[layer].residual_share == pytest.approx(0.0, abs=1e-4)
    for layer in (LAYER, 3):
        assert shares[layer].residual_share == pytest.approx(1.0, abs=1e-4)

    assert result.base.m == pytest.approx(result.comparison.m_base)
    assert result.tuned.m != pytest.approx(result.base.m)
    assert [r.kind for r in result.prompts] == ["target", "side_effect"]
    assert result.comparison.reasons and result.comparison.verdict in (
        "pathway removed", "compensated", "no change", "made worse")


def _boosting_adapter(base: LoadedModel, driver: int, directory: Path,
                      sign: float = 1.0) -> Path:
    """A rank-1 LoRA on layer 2's down_proj that writes answer A's unembedding direction
    in proportion to neuron ``driver``'s activation."""
    import copy

    from peft import LoraConfig, get_peft_model

    a = resolve_answer(base.tokenizer, " aldosterone").token_id
    peft_model = get_peft_model(copy.deepcopy(base.model), LoraConfig(
        r=1, lora_alpha=2, target_modules=["down_proj"], layers_to_transform=[LAYER]))
    module = peft_model.base_model.model.model.layers[LAYER].mlp.down_proj
    with torch.no_grad():
        module.lora_A["default"].weight.zero_()
        module.lora_A["default"].weight[0, driver] = 1.0
        direction = base.model.lm_head.weight[a]
        module.lora_B["default"].weight.copy_(4.0 * sign * direction[:, None] / direction.norm())
    peft_model.save_pretrained(directory)
    return directory


def test_lora_overlay_matches_peft_and_toggles_back_exactly(
        base: LoadedModel, driver: int, tmp_path: Path) -> None:
    from peft import PeftModel

    adapter_dir = _boosting_adapter(base, driver, tmp_path / "boost")
    ids = torch.tensor([format_prompt(base.tokenizer, PromptSpec(prompt=PROMPT)).input_ids])
    with torch.no_grad():
        before = base.model(ids).logits
    spec = ModelSpec(name="tiny4-boost", source="local", path=adapter_dir, kind="lora",
                     base="tiny4", device="cpu")
    variant = load_lora_variant(spec, base, tmp_path)
    activate(variant)
    with torch.no_grad():
        ours = base.model(ids).logits
    activate(base)
    with torch.no_grad():
        after = base.model(ids).logits
    import copy

    reference = PeftModel.from_pretrained(copy.deepcopy(base.model), adapter_dir).eval()
    with torch.no_grad():
        theirs = reference(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, before, atol=1e-3)
    assert torch.equal(before, after)  # the base is bit-for-bit back
    assert variant.memory_bytes() == load_overlay("x", adapter_dir).nbytes()
    assert variant.memory_bytes() < base.memory_bytes() / 100


def test_lora_comparison_points_at_the_boosted_neuron(
        base: LoadedModel, driver: int, driver_sign: float, tmp_path: Path) -> None:
    adapter_dir = _boosting_adapter(base, driver, tmp_path / "boost", driver_sign)
    spec = ModelSpec(name="tiny4-boost", source="local", path=adapter_dir, kind="lora",
                     base="tiny4", device="cpu")
    variant = load_lora_variant(spec, base, tmp_path)
    result = compare_loaded(base, variant, _request())
    assert result.tuned.p_a > result.base.p_a
    assert result.tuned.m > result.base.m
    change = {(c.layer, c.neuron): c for c in result.comparison.neurons}[(LAYER, driver)]
    assert change.delta > 0
    assert result.weight_kind == "lora"
    assert [(c.layer, c.module) for c in result.weight_changes] == [(LAYER, "mlp.down_proj")]
    shares = {p.layer: p for p in result.patching}
    assert shares[LAYER].mlp_share == pytest.approx(1.0, abs=1e-4)
    assert shares[0].mlp_share == pytest.approx(0.0, abs=1e-4)
    assert result.comparison.verdict in ("pathway removed", "compensated")


def test_pairs_that_cannot_be_compared_are_refused(
        base: LoadedModel, tiny_dirs: dict[str, Path], tmp_path: Path, driver: int) -> None:
    with pytest.raises(InputError, match="itself"):
        check_pair("tiny4", "tiny4", "full", "tiny4", "base")
    with pytest.raises(InputError, match="only be compared with 'tiny4'"):
        check_pair("other", "boost", "lora", "tiny4", "base")
    other = _load(tiny_dirs["gemma3"], "tiny-gemma")
    with pytest.raises(InputError, match="architecture"):
        compare_loaded(base, other, _request())
    # An adapter over the 4-layer Llama cannot attach to the 2-layer one.
    adapter_dir = _boosting_adapter(base, driver, tmp_path / "boost")
    small = _load(tiny_dirs["llama"], "tiny-llama")
    spec = ModelSpec(name="boost", source="local", path=adapter_dir, kind="lora",
                     base="tiny-llama", device="cpu")
    with pytest.raises(InputError, match="another base"):
        activate(load_lora_variant(spec, small, tmp_path))


def test_both_graphs_are_cut_at_the_base_threshold_and_a_binding_cap_is_said(
        base: LoadedModel, driver: int, driver_sign: float, tmp_path: Path) -> None:
    adapter_dir = _boosting_adapter(base, driver, tmp_path / "boost", driver_sign)
    spec = ModelSpec(name="tiny4-boost", source="local", path=adapter_dir, kind="lora",
                     base="tiny4", device="cpu")
    variant = load_lora_variant(spec, base, tmp_path)
    tau = 0.05
    result = compare_loaded(base, variant, _request(settings={"tau": tau, "edges": False}))
    cut = tau * abs(result.base.m)
    assert result.tuned.m != pytest.approx(result.base.m, abs=1e-3)
    # One absolute cut, the base's, on both sides - not tau x each side's own |m|.
    assert result.base.threshold == pytest.approx(cut, rel=1e-4)
    assert result.tuned.threshold == result.base.threshold
    assert result.same_threshold
    for circuit in (result.base_circuit, result.tuned_circuit):
        assert circuit is not None and circuit.nodes
        assert min(abs(n.influence) for n in circuit.nodes) >= result.base.threshold
    assert result.base.n_above_threshold == result.base.n_nodes  # no cap bound
    assert not result.warnings and "same cut on both sides" in result.summary()

    capped = compare_loaded(base, variant, _request(settings={"tau": tau, "edges": False,
                                                              "max_nodes": 3}))
    assert capped.base.n_nodes == 3 and capped.base.n_above_threshold > 3
    assert any("max_nodes=3 bound" in w for w in capped.warnings)
    assert "WARNING: tiny4: max_nodes=3 bound" in capped.summary()


def test_the_verdict_says_which_set_it_counts_and_how_many_the_graph_draws() -> None:
    from analysis.comparison import compare_influences

    c = compare_influences(-1.0, 0.6, {(31, 589): -1.2, (20, 7): -0.3},
                           {(31, 589): -0.05, (20, 7): -0.02}, shown={(31, 589)})
    reason = next(r for r in c.reasons if "main driver" in r)
    assert "2 main driver(s)" in reason and "over all neurons" in reason
    assert "1 of them are drawn in the base graph" in reason
