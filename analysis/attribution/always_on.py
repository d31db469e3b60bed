"""Always-on ("massive activation") neurons, judged from the prompt itself.

Some MLP neurons fire enormously at the first position whatever the text is (the
attention-sink pattern: on SmolLM2-135M, L11/N1229 reaches 2,824 at the first token
against a layer-typical 0.08, and 0.02 everywhere else), or stay large at almost every
token. Their influence is real arithmetic but says nothing about *this* prompt, so the
seeds' tool filters them and so do we by default (``CircuitSettings.drop_always_on``).

Two rules, both relative to the layer's typical activation (the median over neurons of
the mean |activation| at positions after the first), so they carry across models:

* **first position**: |a| at position 0 is >= FIRST_POSITION_FACTOR x typical *and* >=
  FIRST_POSITION_ISOLATION x its largest |a| at any later position (massive there only);
* **every token**: |a| >= EVERY_TOKEN_FACTOR x typical at >= EVERY_TOKEN_SHARE of the
  later positions, on prompts with at least EVERY_TOKEN_MIN_POSITIONS of them.

The prompt rule uses only the model and the prompt. A complete exemplar index
(analysis.neurons) judges over a whole corpus and catches what one prompt cannot: on
SmolLM2 L28/N1078 sits near -14 at 99% of WordNet's tokens (a bias in disguise) and is the
third strongest driver towards " renin" by the prompt rule's lights. When the caller
passes an index's flags (:class:`KnownAlwaysOn`), they join the prompt's; the run records
which index they came from, and its cache key includes it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field

from analysis.neuron_ref import neuron_name

# The index's rule (analysis/neurons/always_on_counts.py) uses the same factor and share.
from analysis.neurons.always_on_counts import DENSE_FRACTION as EVERY_TOKEN_SHARE
from analysis.neurons.always_on_counts import FIRST_POSITION_FACTOR

FIRST_POSITION_ISOLATION = 10.0
EVERY_TOKEN_FACTOR = 50.0
EVERY_TOKEN_MIN_POSITIONS = 4


class KnownAlwaysOn(BaseModel):
    """Always-on neurons judged elsewhere (an exemplar index over a corpus)."""

    source: str = Field(description="Where the flags come from, e.g. 'index 8df3d358 "
                                    "(wordnet-glosses, 402,431 tokens)'.")
    reasons: dict[str, str] = Field(description="'L{layer}/N{neuron}' -> why it is "
                                                "flagged there.")

    def keys(self) -> dict[tuple[int, int], str]:
        out = {}
        for name, why in self.reasons.items():
            layer, neuron = name.removeprefix("L").split("/N")
            out[(int(layer), int(neuron))] = why
        return out


class AlwaysOnNeuron(BaseModel):
    """A neuron flagged as always-on in this prompt, and what dropping it removed."""

    layer: int
    neuron: int
    reason: Literal["first_position", "every_token", "index"]
    activation: float  # at the first position, or the mean |a| over later positions
    typical: float  # the layer's typical |activation| the rule compared against
    influence: float  # its influence on m summed over the prompt
    dropped: bool
    detail: str | None = None  # for reason "index": the index's own reason and source

    @property
    def name(self) -> str:
        return neuron_name(self.layer, self.neuron)

    @property
    def why(self) -> str:
        if self.reason == "index" and self.detail:
            return self.detail
        ratio = self.activation / self.typical if self.typical > 0 else float("inf")
        where = ("at the first position" if self.reason == "first_position"
                 else "on average at every token")
        return f"|activation| {self.activation:,.1f} {where}, {ratio:,.0f}x the layer's typical"


def detect_always_on(activation: torch.Tensor, influence: torch.Tensor,
                     *, dropped: bool,
                     known: KnownAlwaysOn | None = None) -> list[AlwaysOnNeuron]:
    """Flag always-on neurons from a prompt's activations ``[L, T, N]`` (see the module
    docstring), plus the ``known`` ones; ``influence`` ``[L, T, N]`` gives each flagged
    neuron's total."""
    found: list[AlwaysOnNeuron] = []
    n_positions = activation.shape[1]
    extra = known.keys() if known is not None else {}
    for layer in range(activation.shape[0] if n_positions >= 2 else 0):
        a = activation[layer].abs()
        later = a[1:]
        typical = float(later.mean(0).median())
        if typical <= 0:
            continue
        first = a[0]
        isolated = first >= FIRST_POSITION_ISOLATION * later.max(0).values
        massive = (first >= FIRST_POSITION_FACTOR * typical) & isolated
        flags = {int(n): ("first_position", float(first[n]))
                 for n in massive.nonzero().flatten().tolist()}
        if later.shape[0] >= EVERY_TOKEN_MIN_POSITIONS:
            share = (later >= EVERY_TOKEN_FACTOR * typical).float().mean(0)
            for n in (share >= EVERY_TOKEN_SHARE).nonzero().flatten().tolist():
                flags.setdefault(int(n), ("every_token", float(later[:, n].mean())))
        for neuron, (reason, value) in sorted(flags.items()):
            found.append(AlwaysOnNeuron(
                layer=layer, neuron=neuron, reason=reason, activation=value,
                typical=typical, influence=float(influence[layer, :, neuron].sum()),
                dropped=dropped))
    seen = {(f.layer, f.neuron) for f in found}
    for (layer, neuron), why in sorted(extra.items()):
        if (layer, neuron) in seen or not (0 <= layer < activation.shape[0]
                                            and 0 <= neuron < activation.shape[2]):
            continue
        a = activation[layer].abs()
        assert known is not None
        found.append(AlwaysOnNeuron(
            layer=layer, neuron=neuron, reason="index",
            activation=float(a[:, neuron].mean()), typical=float(a.mean(0).median()),
            influence=float(influence[layer, :, neuron].sum()), dropped=dropped,
            detail=f"{why} (in {known.source})"))
    return sorted(found, key=lambda f: -abs(f.influence))


def masked_influence(influence: torch.Tensor,
                     flagged: list[AlwaysOnNeuron]) -> torch.Tensor:
    """The influence with the flagged neurons zeroed at every position (for pruning only:
    completeness and faithfulness keep the real numbers)."""
    if not flagged:
        return influence
    out = influence.clone()
    for f in flagged:
        out[f.layer, :, f.neuron] = 0.0
    return out
