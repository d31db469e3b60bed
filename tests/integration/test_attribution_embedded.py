"""Attribution on both real embedded models and the lab notes' seed prompt.

Both prefer renin (wrong) over aldosterone: m < 0. On SmolLM2-135M-Instruct (the default,
Llama architecture) both answers are several tokens and the metric contrasts their first
tokens, " al" and " ren", like the seeds' ``--contrastive " Ald" " Ren"``; on Gemma-3-270M
both are single tokens. The circuit must name the neurons pushing renin, and ablating them
must move m towards aldosterone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from analysis.attribution import (
    CircuitResult,
    CircuitSettings,
    NeuronEdit,
    attribute,
    describe_neuron,
    edge_matrix,
    intervene,
    render_summary,
    run_circuit,
)

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("CIRCUITLAB_CACHE_DIR", PROJECT_ROOT / "models_cache"))
PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


# The answers' token counts on each model: (aldosterone, renin).
ANSWER_TOKENS = {"smollm2-135m-instruct": (3, 2), "gemma-3-270m": (1, 1)}


@pytest.fixture(scope="module", params=list(ANSWER_TOKENS))
def gemma(request: pytest.FixtureRequest) -> Any:
    """Each embedded model in turn (the name is historical: Gemma was the only one)."""
    return request.getfixturevalue("embedded_lm" if request.param == "smollm2-135m-instruct"
                                   else "gemma_lm")


@pytest.fixture(scope="module")
def seed(gemma: Any) -> dict[str, Any]:
    tok = gemma.tokenizer
    ids = tok(PROMPT)["input_ids"]  # default special tokens (Gemma: BOS; SmolLM2: none)
    a = tok.encode(" aldosterone", add_special_tokens=False)
    b = tok.encode(" renin", add_special_tokens=False)
    assert (len(a), len(b)) == ANSWER_TOKENS[gemma.name]
    return {"ids": ids, "a": a[0], "b": b[0]}  # the first tokens: the seeds' metric


@pytest.fixture(scope="module")
def circuit(gemma: Any, seed: dict[str, Any]) -> CircuitResult:
    return run_circuit(
        gemma.model,
        gemma.tokenizer,
        seed["ids"],
        seed["a"],
        seed["b"],
        CircuitSettings(method="relp", tau=0.15),
        model_name=gemma.name,
        model_revision=gemma.revision,
        prompt=PROMPT,
    )


def test_prompt_starts_with_bos_where_the_model_has_one(gemma: Any,
                                                       seed: dict[str, Any]) -> None:
    if gemma.name == "gemma-3-270m":
        assert seed["ids"][0] == gemma.tokenizer.bos_token_id
    else:  # SmolLM2 adds no BOS to a plain prompt; its chat template opens with <|im_start|>
        assert gemma.tokenizer.decode(seed["ids"][:1]) == "The"


def test_model_prefers_renin(circuit: CircuitResult) -> None:
    assert circuit.m < 0
    assert circuit.prob_b is not None and circuit.prob_a is not None
    assert circuit.prob_b > circuit.prob_a


def test_relp_conserves_relevance_on_the_real_model(circuit: CircuitResult) -> None:
    c = circuit.completeness
    assert c.embedding_sum == pytest.approx(circuit.m, rel=1e-3, abs=1e-3)


def test_readout_names_neurons_pushing_renin(circuit: CircuitResult) -> None:
    toward_renin = [n for n in circuit.nodes if n.towards == "B"]
    assert toward_renin, "no kept neuron pushes renin"
    assert all(abs(n.influence) >= 0.15 * abs(circuit.m) for n in circuit.nodes)
    text = render_summary(circuit)
    first_b = " renin" if circuit.model_name == "gemma-3-270m" else " ren"
    assert f'Toward "{first_b}" (B)' in text
    top = max(toward_renin, key=lambda n: abs(n.influence))
    assert f"{top.name:<12} influence={top.influence:+.2f}" in text


def test_ablating_each_side_moves_m_its_way(gemma: Any, circuit: CircuitResult) -> None:
    f = circuit.faithfulness
    assert f is not None and f.mode == "zero"
    assert f.n_towards_a > 0 and f.n_towards_b > 0
    # Removing the renin-pushers raises m, past zero: the circuit carries the error.
    assert f.m_without_towards_b > f.m_clean and f.m_without_towards_b > 0
    if gemma.name == "gemma-3-270m":
        # Removing the aldosterone-pushers lowers it. Not asserted on SmolLM2, where
        # zeroing all ~90 A-pushers at once *raises* m (-0.99 -> -0.08, measured): a joint
        # zero-ablation of many late neurons is not the sum of their linear influences.
        assert f.m_without_towards_a < f.m_clean


def test_edges_batched_equal_loop_on_real_model(
    gemma: Any, seed: dict[str, Any], circuit: CircuitResult
) -> None:
    attr = circuit.attribution
    nodes = circuit.nodes[:12]
    batched = edge_matrix(gemma.model, attr, nodes, batch_size=8)
    loop = edge_matrix(gemma.model, attr, nodes, strategy="loop")
    assert (batched.raw - loop.raw).abs().max() <= 1e-4 * (1 + loop.raw.abs().max())


def test_methods_agree_on_the_answer_sign(gemma: Any, seed: dict[str, Any]) -> None:
    attr = attribute(gemma.model, None, seed["ids"], seed["a"], seed["b"], method="grad_x_act")
    assert attr.m < 0
    # Gemma: the auto (mean) baseline at 32 steps. SmolLM2: auto picks the zero baseline,
    # whose path does not converge there (sum/target at 16/32/64/128 steps: 0.64, -0.09,
    # 0.59, 1.15 - switching off every neuron, the first position's massive activations
    # included, is far from linear); the mean baseline converges at 128 steps (0.9995).
    smollm2 = gemma.name == "smollm2-135m-instruct"
    ig = attribute(
        gemma.model,
        None,
        seed["ids"],
        seed["a"],
        seed["b"],
        method="integrated_gradients",
        ig_steps=128 if smollm2 else 32,
        ig_baseline="mean" if smollm2 else "auto",
    )
    c = ig.completeness
    assert c.influence_sum == pytest.approx(c.target, rel=0.05)


def test_zeroing_the_top_renin_neuron_helps_aldosterone(
    gemma: Any, seed: dict[str, Any], circuit: CircuitResult
) -> None:
    top = max((n for n in circuit.nodes if n.towards == "B"), key=lambda n: abs(n.influence))
    res = intervene(
        gemma.model,
        gemma.tokenizer,
        seed["ids"],
        [NeuronEdit(layer=top.layer, neuron=top.neuron, positions=[top.position])],
        seed["a"],
        seed["b"],
    )
    assert res.m_before == pytest.approx(circuit.m, abs=1e-3)
    assert res.m_after is not None and res.m_after > res.m_before
    desc = describe_neuron(gemma.model, gemma.tokenizer, top.layer, top.neuron, seed["ids"])
    assert len(desc.promotes) == 10 and desc.activations is not None
    assert desc.activations[top.position].activation == pytest.approx(top.activation, abs=1e-4)
