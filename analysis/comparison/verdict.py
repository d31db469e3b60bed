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

from analysis.evaluation import MIN_DELTA_M
from analysis.neuron_ref import neuron_name

Category = Literal["persistent", "strengthened", "weakened", "new", "gone", "sign_flip"]
# The circuit verdict says *why* m moved; its words are never the answer-level ones
# ("corrected", "improved": analysis.evaluation), so a page can show both without clash.
Verdict = Literal["pathway removed", "pathway weakened", "compensated", "diffuse",
                  "no change", "made worse"]
OLD_VERDICTS = {"correction": "pathway removed", "compensation": "compensated"}
VERDICT_RULE = ("Circuit verdict, decided in this order: 'no change' = |Δm| within the band; "
                "'made worse' = m fell beyond it; when m rose beyond it: 'pathway removed' = "
                "the base's main drivers towards B lost at least the 'removed' share of their "
                "pull; 'compensated' = new or strengthened drivers towards A gained more than "
                "those drivers lost; 'pathway weakened' = the drivers' loss is the larger "
                "part; 'diffuse' = no large neuron accounts for the move. Always-on neurons "
                "the circuits drop are left out. It explains the move of m; whether the "
                "answer is corrected is the answer-level rule.")
NeuronKey = tuple[int, int]


class CompareThresholds(BaseModel):
    """What counts as large, unchanged and removed; shown next to every verdict."""

    large: float = Field(0.1, gt=0, le=1, description="|influence| >= large * |m_base|.")
    persistent: float = Field(0.25, gt=0, lt=1,
                              description="Relative change below this is 'persistent'.")
    removed: float = Field(0.5, gt=0, le=1,
                           description="Pathway removed: wrong-way drivers lost this share.")
    min_delta_m: float = Field(MIN_DELTA_M, ge=0,
                               description="Smaller moves of m are 'no change' (the verdict's "
                                           "and the prompt outcomes' band).")


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
        return neuron_name(self.layer, self.neuron)


class CircuitComparison(BaseModel):
    m_base: float
    m_tuned: float
    influence_sum_base: float = Field(
        description="Over the neurons listed (large in either model), so it depends on the "
                    "variant: the base circuit's own sum is SideSummary.influence_sum.")
    influence_sum_tuned: float
    neurons: list[NeuronChange]
    verdict: Verdict
    reasons: list[str]
    thresholds: CompareThresholds
    decided_by: str = Field("", description="The rule that decided the verdict (the last "
                                            "reason).")
    excluded: list[str] = Field(default_factory=list,
                                description="Always-on neurons left out of the counting.")

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
    excluded: Mapping[NeuronKey, str] | None = None,
) -> CircuitComparison:
    """Compare per-neuron influences (summed over positions) of the same prompt under two
    variants. Neurons missing from one mapping count as 0 there. ``shown``: the neurons
    the base graph draws, so the reasons can say how many of the counted ones it shows.
    ``excluded``: always-on neurons (with why) the circuits drop; they are left out of the
    counting and the lists, as the graphs leave them out."""
    t = thresholds or CompareThresholds()
    scale = abs(m_base) or 1.0
    excluded = excluded or {}
    left_out = sorted(k for k in excluded if k in base or k in tuned)
    changes: list[NeuronChange] = []
    for key in sorted((set(base) | set(tuned)) - set(excluded)):
        b, a = float(base.get(key, 0.0)), float(tuned.get(key, 0.0))
        category = categorize(b, a, scale, t)
        if category is not None:
            changes.append(NeuronChange(layer=key[0], neuron=key[1], base=b, tuned=a,
                                        category=category))
    changes.sort(key=lambda c: -max(abs(c.base), abs(c.tuned)))
    verdict, reasons = judge(m_base, m_tuned, changes, t, shown)
    if left_out:
        names = ", ".join(f"{neuron_name(*k)} ({excluded[k]})" for k in left_out[:5])
        reasons.insert(1, f"{len(left_out)} always-on neuron(s) left out of the counting, as "
                          f"the circuits drop them: {names}.")
    return CircuitComparison(
        m_base=m_base, m_tuned=m_tuned,
        influence_sum_base=sum(c.base for c in changes),
        influence_sum_tuned=sum(c.tuned for c in changes),
        neurons=changes, verdict=verdict, reasons=reasons, thresholds=t,
        decided_by=reasons[-1], excluded=[neuron_name(*k) for k in left_out],
    )


def verdict_band(delta_m: float, t: CompareThresholds) -> Verdict | None:
    """The verdict m's move alone decides ('no change' inside the band, 'made worse'
    below it), or None when m rose beyond the band and the drivers decide."""
    if delta_m < -t.min_delta_m:
        return "made worse"
    if delta_m <= t.min_delta_m:
        return "no change"
    return None


def judge(m_base: float, m_tuned: float, changes: list[NeuronChange],
          t: CompareThresholds, shown: set[NeuronKey] | None = None
          ) -> tuple[Verdict, list[str]]:
    """The verdict (VERDICT_RULE, in its order) with the numbers behind it; the last
    reason is always the rule that decided it. Drivers are counted over *all* neurons by
    their influence summed over positions (not only the nodes a graph draws)."""
    delta_m = m_tuned - m_base
    reasons = [f"m moved {m_base:+.3f} -> {m_tuned:+.3f} (Δm {delta_m:+.3f})."]
    band = verdict_band(delta_m, t)
    if band == "made worse":
        reasons.append(f"made worse: Δm {delta_m:+.3f} is below -{t.min_delta_m}, towards "
                       "the wrong answer B.")
        return band, reasons
    if band == "no change":
        reasons.append(f"no change: |Δm| {abs(delta_m):.3f} is within the band "
                       f"(<= {t.min_delta_m}).")
        return band, reasons
    floor = t.large * (abs(m_base) or 1.0)
    drivers = [c for c in changes if c.base <= -floor]
    before = sum(c.base for c in drivers)
    after = sum(min(c.tuned, 0.0) for c in drivers)
    lost = after - before  # >= 0: the pull towards B the base's drivers gave up
    kept = after / before if before else 0.0
    gain = sum(max(c.tuned, 0.0) - max(c.base, 0.0) for c in changes
               if c.category in ("new", "strengthened", "sign_flip") and c.tuned > 0)
    if drivers:
        names = ", ".join(f"{c.name} {c.base:+.2f} -> {c.tuned:+.2f}" for c in drivers[:5])
        seen = "" if shown is None else (
            f"; {sum((c.layer, c.neuron) in shown for c in drivers)} of them are drawn in "
            "the base graph")
        reasons.append(f"The base model's {len(drivers)} main driver(s) towards B ({names}) "
                       f"kept {kept:.0%} of their pull ({before:+.3f} -> {after:+.3f}, "
                       f"lost {lost:+.3f}). Counted over all neurons, each by its influence "
                       f"summed over positions, at <= -{floor:.3f} ({t.large} x |m base|)"
                       f"{seen}.")
    else:
        reasons.append(f"The base circuit has no driver towards B at <= -{floor:.3f} "
                       f"({t.large} x |m base|).")
    reasons.append(f"New or strengthened drivers towards A gained {gain:+.3f}.")
    if drivers and kept <= 1 - t.removed:
        reasons.append(f"pathway removed: the drivers towards B kept {kept:.0%} of their "
                       f"pull, at most {1 - t.removed:.0%}.")
        return "pathway removed", reasons
    if gain > lost and gain > 0:
        reasons.append(f"compensated: drivers towards A gained {gain:+.3f}, more than the "
                       f"drivers towards B lost ({lost:+.3f}); the pathway is still there.")
        return "compensated", reasons
    if lost > 0:
        reasons.append(f"pathway weakened: the drivers towards B lost {lost:+.3f} (keeping "
                       f"{kept:.0%}, more than {1 - t.removed:.0%}), more than drivers "
                       f"towards A gained ({gain:+.3f}).")
        return "pathway weakened", reasons
    reasons.append(f"diffuse: m rose by {delta_m:+.3f}, but no large neuron lost pull "
                   "towards B or gained pull towards A; the move is spread over neurons "
                   f"below {floor:.3f} (or outside the MLPs).")
    return "diffuse", reasons
