"""Concept candidates (Stage 4): only neurons pushing towards B; output-like neurons
(writing an answer token, firing on the answers, last layers) rank below upstream
concepts; topic words never contain an answer's word."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from analysis.attribution import CircuitResult, CircuitSettings, run_circuit
from analysis.concepts import concept_candidates, topic_words
from tests.unit.tiny_models import build, random_ids


class Tok:
    def decode(self, ids: list[int]) -> str:
        return {5: " aldosterone", 17: " renin"}.get(ids[0], f" w{ids[0]}")


@dataclass
class Ex:
    left: str
    token: str
    right: str
    activation: float = 1.0


@pytest.fixture(scope="module")
def result() -> CircuitResult:
    model = build("llama", layers=4)
    return run_circuit(model, Tok(), random_ids(8), 5, 17,
                       CircuitSettings(tau=0.01, max_nodes=60, ablation=None))


def test_only_b_pushers_ranked_by_score(result: CircuitResult) -> None:
    found = concept_candidates(result, 4, logit_lens=lambda layer, neuron: ([], []))
    assert found, "the tiny circuit has neurons pushing towards B"
    by_name = {(t.layer, t.neuron): t.influence for t in result.neurons}
    assert all(by_name[(c.layer, c.neuron)] < 0 for c in found)
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    for c in found:
        assert 0.0 <= c.indirect_share <= 1.0
        assert c.upstream == (c.layer < 2 or c.indirect_share >= 0.5)


def test_a_neuron_writing_the_wrong_answer_is_not_a_concept(result: CircuitResult) -> None:
    plain = concept_candidates(result, 4, logit_lens=lambda layer, neuron: ([], []))
    top = plain[0]

    def lens(layer: int, neuron: int) -> tuple[list[str], list[str]]:
        return ([" renin"], []) if (layer, neuron) == (top.layer, top.neuron) else ([], [])

    flagged = concept_candidates(result, 4, logit_lens=lens)
    same = next(c for c in flagged if (c.layer, c.neuron) == (top.layer, top.neuron))
    assert not same.conceptual
    assert same.score == pytest.approx(top.score * 0.25)
    assert any("logit lens" in r for r in same.reasons)


def test_an_always_on_neuron_is_not_a_concept(result: CircuitResult) -> None:
    plain = concept_candidates(result, 4, logit_lens=lambda layer, neuron: ([], []))
    top = plain[0]
    found = concept_candidates(
        result, 4, logit_lens=lambda layer, neuron: ([], []),
        always_on=lambda layer, neuron: ("large at 99% of tokens"
                                         if (layer, neuron) == (top.layer, top.neuron)
                                         else None))
    same = next(c for c in found if (c.layer, c.neuron) == (top.layer, top.neuron))
    assert not same.conceptual and same.score == pytest.approx(top.score * 0.25)
    assert "always-on over the corpus: large at 99% of tokens" in same.reasons
    assert all(c.conceptual for c in found if c is not same) == all(
        c.conceptual for c in plain if c is not top)


def test_exemplars_on_the_answers_mark_lexical_neurons(result: CircuitResult) -> None:
    def exemplars(layer: int, neuron: int) -> list[Ex]:
        if layer % 2:
            return [Ex("secreted by the", " renin", " system")] * 3
        return [Ex("the kidney", " filters", " blood pressure"),
                Ex("renal", " blood", " flow in the kidney")]

    found = concept_candidates(result, 4, logit_lens=lambda layer, neuron: ([], []),
                               exemplars=exemplars, describe=lambda layer, neuron: "d")
    for c in found:
        assert c.conceptual == (c.layer % 2 == 0)
        for word in c.topic_words:
            assert "renin" not in word and "aldosterone" not in word
    concept = next(c for c in found if c.conceptual)
    assert {"kidney", "blood"} <= set(concept.topic_words)
    assert concept.description == "d" and concept.exemplars


def test_topic_words_skip_stopwords_and_answers() -> None:
    words = topic_words(["the renin-angiotensin system of the kidney",
                         "kidney and adrenal gland", "the adrenal cortex"], {"renin"})
    assert words[:2] == ["kidney", "adrenal"] or words[:2] == ["adrenal", "kidney"]
    assert not any(w.startswith("renin") for w in words)
    assert "the" not in words


def test_topic_words_skip_special_tokens() -> None:
    words = topic_words(["<bos>hypernatremia: excessive sodium in the blood",
                         "<bos>sodium and potassium", "<|endoftext|>sodium balance",
                         "<s> potassium in blood"], set())
    assert "sodium" in words and "potassium" in words and "blood" in words
    assert not {"bos", "endoftext"} & set(words)
