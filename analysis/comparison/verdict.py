"""Before/after comparison of two circuits: per-neuron categories, a verdict with its
reasoning, and where in the weights a fine-tune changed the model.

The seeds' question after a correction run is whether SFT removed the bad pathway or
left it in place and added compensating signals ("L31/N589 -2.61 -> -2.50: barely
changed; influence sum -0.32 -> +1.11"). Influences here are in logit units with
m = logit(A) - logit(B): negative pushes towards the wrong answer B.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field, field_validator

Category = Literal["persistent", "strengthened", "weakened", "new", "gone", "sign_flip"]
# The circuit verdict says *why* m moved; its words are never the answer-level ones
# ("corrected", "improved": analysis.evaluation), so a page can show both without clash.
Verdict = Literal["pathway removed", "compensated", "no change", "made worse"]
OLD_VERDICTS = {"correction": "pathway removed", "compensation": "compensated"}
VERDICT_RULE = ("Circuit verdict: 'pathway removed' = the base's main drivers towards B lost "
                "most of their pull; 'compensated' = they kept it and new or strengthened "
                "drivers towards A outweigh them. It explains the move of m; whether the "
                "answer is corrected is the answer-level rule.")
NeuronKey = tuple[int, int]


class CompareThresholds(BaseModel):
    """What counts as large, unchanged and removed; shown next to every verdict."""

    large: float = Field(0.1, gt=0, le=1, description="|influence| >= large * |m_base|.")
    persistent: float = Field(0.25, gt=0, lt=1,
                              description="Relative change below this is 'persistent'.")
    removed: float = Field(0.5, gt=0, le=1,
                           description="Pathway removed: wrong-way drivers lost this share.")
    min_delta_m: float = Field(0.1, ge=0, description="Smaller moves of m are 'no change'.")


class NeuronChange(BaseModel):
    layer: int
    neuron: int
    base: float
    tuned: float
    category: Category

    @property
    def delta(self) -> float:
        return self.tuned - self.base

    @property
    def name(self) -> str:
        return f"L{self.layer}/N{self.neuron}"


class CircuitComparison(BaseModel):
    m_base: float
    m_tuned: float
    influence_sum_base: float = Field(description="Over the neurons listed.")
    influence_sum_tuned: float
    neurons: list[NeuronChange]
    verdict: Verdict
    reasons: list[str]
    thresholds: CompareThresholds

    @field_validator("verdict", mode="before")
    @classmethod
    def _old_words(cls, value: object) -> object:
        # Comparisons stored before the rename said "correction" / "compensation".
        return OLD_VERDICTS.get(value, value) if isinstance(value, str) else value


def categorize(base: float, tuned: float, scale: float, t: CompareThresholds) -> Category | None:
    """A neuron's category, or None when it is small in both circuits."""
    big_base, big_tuned = abs(base) >= t.large * scale, abs(tuned) >= t.large * scale
    if not big_base and not big_tuned:
        return None
    if big_base and big_tuned and (base > 0) != (tuned > 0):
        return "sign_flip"
    if not big_base:
        return "new"
    if not big_tuned:
        return "gone"
    relative = (abs(tuned) - abs(base)) / abs(base)
    if abs(relative) < t.persistent:
        return "persistent"
    return "strengthened" if relative > 0 else "weakened"


def compare_influences(
    m_base: float,
    m_tuned: float,
    base: Mapping[NeuronKey, float],
    tuned: Mapping[NeuronKey, float],
    thresholds: CompareThresholds | None = None,
    shown: set[NeuronKey] | None = None,
) -> CircuitComparison:
    """Compare per-neuron influences (summed over positions) of the same prompt under two
    variants. Neurons missing from one mapping count as 0 there. ``shown``: the neurons
    the base graph draws, so the reasons can say how many of the counted ones it shows."""
    t = thresholds or CompareThresholds()
    scale = abs(m_base) or 1.0
    changes: list[NeuronChange] = []
    for key in sorted(set(base) | set(tuned)):
        b, a = float(base.get(key, 0.0)), float(tuned.get(key, 0.0))
        category = categorize(b, a, scale, t)
        if category is not None:
            changes.append(NeuronChange(layer=key[0], neuron=key[1], base=b, tuned=a,
                                        category=category))
    changes.sort(key=lambda c: -max(abs(c.base), abs(c.tuned)))
    verdict, reasons = judge(m_base, m_tuned, changes, t, shown)
    return CircuitComparison(
        m_base=m_base, m_tuned=m_tuned,
        influence_sum_base=sum(c.base for c in changes),
        influence_sum_tuned=sum(c.tuned for c in changes),
        neurons=changes, verdict=verdict, reasons=reasons, thresholds=t,
    )


def judge(m_base: float, m_tuned: float, changes: list[NeuronChange],
          t: CompareThresholds, shown: set[NeuronKey] | None = None
          ) -> tuple[Verdict, list[str]]:
    """Pathway removed, compensated, no change or made worse, with the numbers behind it.
    Drivers are counted over *all* neurons by their influence summed over positions (not
    only the nodes a graph draws); the reasons say so, and how many the base graph shows."""
    delta_m = m_tuned - m_base
    reasons = [f"m moved {m_base:+.3f} -> {m_tuned:+.3f} (delta {delta_m:+.3f}; "
               f"moves under {t.min_delta_m} count as no change)."]
    if delta_m < -t.min_delta_m:
        reasons.append("m moved towards the wrong answer B.")
        return "made worse", reasons
    if delta_m <= t.min_delta_m:
        return "no change", reasons
    drivers = [c for c in changes if c.base <= -t.large * (abs(m_base) or 1.0)]
    if not drivers:
        reasons.append("The base circuit has no large driver towards B to remove; "
                       "the gain comes from drivers towards A.")
        return "compensated", reasons
    before = sum(c.base for c in drivers)
    after = sum(min(c.tuned, 0.0) for c in drivers)
    kept = after / before if before else 0.0
    names = ", ".join(f"{c.name} {c.base:+.2f} -> {c.tuned:+.2f}" for c in drivers[:5])
    floor = t.large * (abs(m_base) or 1.0)
    seen = "" if shown is None else (
        f"; {sum((c.layer, c.neuron) in shown for c in drivers)} of them are drawn in the "
        "base graph")
    reasons.append(f"The base model's {len(drivers)} main driver(s) towards B ({names}) "
                   f"kept {kept:.0%} of their pull ({before:+.3f} -> {after:+.3f}). Counted "
                   f"over all neurons, each by its influence summed over positions, at "
                   f"<= -{floor:.3f} ({t.large} x |m base|){seen}.")
    if kept <= 1 - t.removed:
        reasons.append(f"They lost at least {t.removed:.0%} of it: the bad pathway was "
                       "removed.")
        return "pathway removed", reasons
    gain = sum(max(c.tuned, 0.0) - max(c.base, 0.0) for c in changes
               if c.category in ("new", "strengthened", "sign_flip") and c.tuned > 0)
    reasons.append(f"New or strengthened drivers towards A add {gain:+.3f}.")
    if gain > abs(after - before):
        reasons.append("They outweigh what the wrong-way drivers lost: the pathway is still "
                       "there, and the fine-tune compensates for it.")
        return "compensated", reasons
    reasons.append("Neither the drivers towards B lost most of their pull nor did drivers "
                   "towards A outweigh them.")
    return "no change", reasons


