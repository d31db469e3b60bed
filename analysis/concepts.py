"""Concept candidates: Stage 4 of the seeds' method as a ranking.

In a circuit, the neurons worth strengthening with training texts are *intermediate
concepts* upstream of the answer: "L22/N13255: kidney functionality neuron boosting
Renin". A kept neuron is a candidate when it is

* **upstream** — not in the model's last layers, or reaching m mostly through other
  nodes: its direct effect (the edge straight to the metric) is a small part of its
  influence;
* **conceptual** — its top exemplars are not just the answer tokens, and its logit lens
  does not simply write A or B (those are output neurons, not concepts);
* **on the wrong side** — it pushes m towards B (the wrong answer), *as measured*: when
  the run's measured ablation effects are given (``analysis.attribution.effects``), a
  neuron counts as pushing B when zeroing it raises m, whatever its attribution says, and
  a candidate whose attribution and measurement disagree is flagged and ranked last.

Score = |measured zero-ablation effect towards B| (the attributed |influence| when nothing
was measured) x indirect share x (1 if conceptual else a penalty). The influence is
already the neuron's total effect on m through every path, so no path enumeration is
needed; the indirect share says how much of it flows through other nodes. Topic words
for training texts come from the exemplars' contexts, never the answers' words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from analysis.attribution.effects import NeuronEffect
from analysis.attribution.results import METRIC_NODE_ID, CircuitResult
from analysis.neuron_ref import neuron_name

LAST_LAYERS_SHARE = 0.1  # the last 10% of layers (at least two) count as output layers
MAX_DIRECT_SHARE = 0.5  # reaching m mostly through other nodes counts as upstream
ANSWER_EXEMPLAR_SHARE = 0.5  # exemplars mostly on A/B tokens: lexical, not a concept
LOGIT_LENS_TOP = 10
NOT_CONCEPTUAL_PENALTY = 0.25
_STOPWORDS_TEXT = (
    "a an the of and or in on to for by with from as at is are was were be been being that "
    "this these those it its into than then which who whom whose what when where how not "
    "no such any all some each other also may can used use one two three has have had "
    "having do does did done very more most less least between within about over under "
    "their there they them he she his her we our you your i s")
STOPWORDS = frozenset(_STOPWORDS_TEXT.split(" "))
# Special tokens as the index shows them in contexts: <bos>, <s>, <|endoftext|>, ...
SPECIAL_TOKEN = re.compile(r"<\|?[A-Za-z_/][^<>\s]{0,30}\|?>")


class ConceptCandidate(BaseModel):
    layer: int
    neuron: int
    influence: float = Field(description="Summed over the prompt's positions (logit units).")
    direct: float = Field(description="Its edges straight to m, summed.")
    indirect_share: float = Field(description="1 - |direct| / |influence|, clipped to 0..1.")
    upstream: bool
    conceptual: bool
    reasons: list[str]
    score: float
    zero_effect: float | None = Field(None, description="Measured: m_clean - m zeroed.")
    mean_effect: float | None = Field(None, description="Measured: m_clean - m mean-ablated.")
    disagrees: bool = Field(False, description="Attribution and measurement point opposite "
                                               "ways.")
    description: str | None = None
    exemplars: list[str] = Field(default_factory=list)
    topic_words: list[str] = Field(default_factory=list)

    @property
    def name(self) -> str:
        return neuron_name(self.layer, self.neuron)


def _norm(token: str | None) -> str:
    return (token or "").strip().lower()


def _answer_words(result: CircuitResult) -> set[str]:
    words: set[str] = set()
    for text in (result.target_a_text, result.target_b_text):
        words |= {w for w in re.findall(r"[a-z]+", _norm(text)) if len(w) > 1}
    return words


def topic_words(contexts: list[str], banned: set[str], k: int = 6) -> list[str]:
    """Frequent content words of the exemplars' contexts, never an answer's word nor a
    word that starts with one of 4+ letters ('renin' bans 'renin-angiotensin')."""
    counts: Counter[str] = Counter()
    for text in contexts:
        text = SPECIAL_TOKEN.sub(" ", text)  # "<bos>" is not a topic
        for word in set(re.findall(r"[a-z][a-z-]{2,}", text.lower())):
            if word in STOPWORDS or any(word == b or (len(b) >= 4 and word.startswith(b))
                                        for b in banned):
                continue
            counts[word] += 1
    return [w for w, n in counts.most_common(k) if n >= 2] or [w for w, _ in
                                                               counts.most_common(k)]


def concept_candidates(result: CircuitResult, n_layers: int, *,
                       logit_lens: Callable[[int, int], tuple[list[str], list[str]]],
                       exemplars: Callable[[int, int], list[Any]] | None = None,
                       describe: Callable[[int, int], str] | None = None,
                       always_on: Callable[[int, int], str | None] | None = None,
                       effects: Mapping[tuple[int, int], NeuronEffect] | None = None,
                       limit: int = 15) -> list[ConceptCandidate]:
    """Kept neurons ranked as upstream concept candidates towards B (module docstring).

    ``logit_lens(layer, neuron)`` -> (promoted tokens, suppressed tokens), best first;
    ``exemplars(layer, neuron)`` -> the index's top exemplars (with ``.token``, ``.left``,
    ``.right``) or None without an index; ``describe`` -> a short description;
    ``always_on`` -> the index's always-on reason or None (such a neuron is a bias in
    disguise, not a concept); ``effects`` -> measured ablation effects by (layer, neuron)
    (module docstring)."""
    effects = effects or {}
    if result.target_b is None:
        return []
    answers = {_norm(result.target_a_text), _norm(result.target_b_text)} - {""}
    banned = _answer_words(result)
    last_output_layer = n_layers - max(2, round(n_layers * LAST_LAYERS_SHARE))
    node_neuron = {n.node_id: (n.layer, n.neuron) for n in result.nodes}
    direct: dict[tuple[int, int], float] = {}
    for e in result.edges:
        if e.target == METRIC_NODE_ID and e.source in node_neuron:
            key = node_neuron[e.source]
            direct[key] = direct.get(key, 0.0) + e.weight
    out: list[ConceptCandidate] = []
    for total in result.neurons:
        key = (total.layer, total.neuron)
        measured = effects.get(key)
        if total.influence >= 0 and (measured is None or measured.zero >= 0):
            continue  # pushes A by both counts: not what feeds the wrong answer
        d = direct.get(key, 0.0)
        share = max(0.0, min(1.0, 1.0 - abs(d) / abs(total.influence))) \
            if result.edges and total.influence else \
            (1.0 if total.layer < last_output_layer else 0.0)
        reasons: list[str] = []
        pull = abs(total.influence)  # towards B: the measurement's when there is one
        if measured is not None:
            pull = max(0.0, -measured.zero)
            if measured.disagrees:
                reasons.append(
                    f"measured and attributed disagree: zeroing it moves m by "
                    f"{-measured.zero:+.3f} (it pushes {measured.measured_towards}), "
                    f"attributed {total.influence:+.3f}")
        upstream = total.layer < last_output_layer or share >= 1 - MAX_DIRECT_SHARE
        reasons.append(f"layer {total.layer} of {n_layers}" + (
            "" if total.layer < last_output_layer else " (an output layer)"))
        if result.edges:
            reasons.append(f"{share:.0%} of its influence flows through other nodes")
        promoted, suppressed = logit_lens(*key)
        lens = {_norm(t) for t in promoted[:LOGIT_LENS_TOP] + suppressed[:LOGIT_LENS_TOP]}
        writes_answer = bool(lens & answers)
        if writes_answer:
            reasons.append("its logit lens writes an answer token directly")
        ex = exemplars(*key) if exemplars is not None else None
        contexts: list[str] = []
        on_answers = 0.0
        if ex:
            on_answers = sum(_norm(e.token) in answers for e in ex) / len(ex)
            contexts = [f"{e.left}{e.token}{e.right}" for e in ex]
            if on_answers >= ANSWER_EXEMPLAR_SHARE:
                reasons.append(f"{on_answers:.0%} of its top exemplars are the answer tokens")
        flagged = always_on(*key) if always_on is not None else None
        if flagged:
            reasons.append(f"always-on over the corpus: {flagged}")
        conceptual = not writes_answer and on_answers < ANSWER_EXEMPLAR_SHARE and not flagged
        score = pull * max(share, 0.05) * (
            1.0 if conceptual else NOT_CONCEPTUAL_PENALTY)
        if not upstream:
            score *= NOT_CONCEPTUAL_PENALTY
        out.append(ConceptCandidate(
            layer=total.layer, neuron=total.neuron, influence=total.influence, direct=d,
            indirect_share=share, upstream=upstream, conceptual=conceptual,
            reasons=reasons, score=score,
            zero_effect=measured.zero if measured else None,
            mean_effect=measured.mean if measured else None,
            disagrees=bool(measured and measured.disagrees),
            description=describe(*key) if describe is not None and ex else None,
            exemplars=[f"{e.left[-40:]}[{e.token}]{e.right[:40]}" for e in (ex or [])[:5]],
            topic_words=topic_words(contexts, banned) if contexts else []))
    out.sort(key=lambda c: -c.score)
    return out[:limit]
