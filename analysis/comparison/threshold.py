"""Like for like: the one absolute |influence| threshold both graphs of a comparison are
cut at, taken from the base (phase 0). A tau relative to each side's own m would cut a
variant whose m is near 0 almost nowhere, so the two graphs would compare different
things."""

from __future__ import annotations

from analysis.analyze import CircuitLimits, analyze, prepare
from analysis.attribution.prune import threshold
from analysis.comparison.request import CompareRequest, prompt_items
from analysis.evaluation import score_items
from analysis.models import LoadedModel, activate


def reference_cut(lm: LoadedModel, req: CompareRequest,
                  limits: CircuitLimits | None = None) -> float:
    """Phase 0, on the base: the one absolute |influence| cut both sides use. tau mode:
    tau x |m of the base| (one forward pass); cumulative mode: the smallest |influence|
    the base's own cumulative cut keeps (one attribution, no edges). A tau relative to
    each side's own m would cut a variant whose m is near 0 almost nowhere."""
    limits = limits or CircuitLimits()
    s = req.circuit.settings
    if s.min_influence is not None:
        return s.min_influence
    activate(lm)  # a LoRA variant's base: the overlay off
    if s.mode == "tau":
        target = prompt_items(req)[0]
        scored = score_items(lm, [target], req.circuit.prompt, limits.max_prompt_tokens,
                             whole=False, field="prompt")[0]
        m = scored.m if scored.m is not None else scored.expected.logit
        return threshold(m, s.tau) or s.tau
    light = s.model_copy(update={"edges": False, "ablation": None, "max_nodes": None})
    circuit = req.circuit.model_copy(update={"settings": light})
    nodes = analyze(lm, circuit, limits,
                    prepared=prepare(lm, circuit, limits, req.known_always_on)).nodes
    return min((abs(n.influence) for n in nodes), default=0.0) or s.tau


def with_cut(req: CompareRequest, cut: float) -> CompareRequest:
    """The request with both sides cut at ``cut`` (tau mode, absolute threshold)."""
    settings = req.circuit.settings.model_copy(update={"mode": "tau", "min_influence": cut})
    return req.model_copy(update={"circuit": req.circuit.model_copy(
        update={"settings": settings})})


