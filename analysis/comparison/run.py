"""Base vs fine-tuned comparison of one prompt (and a prompt set), in phases.

A comparison needs the variant and the base, but never both in memory at once: a LoRA
variant *is* its base with an overlay attached, and a full variant may only fit by being
swapped in. So it runs in phases, each on one model, with small tensors passed
between them:

0. :func:`reference_cut` on the base: the one absolute |influence| threshold both graphs
   use (tau x |m of the base|), so the two circuits are cut alike (:func:`with_cut`);
1. :func:`observe_variant` on the fine-tune: its circuit, every neuron's total influence,
   the prompt set's probabilities, and each layer's MLP output and residual stream for
   activation patching;
2. :func:`observe_base` on the base: the same, plus layer-by-layer patching of the
   variant's recorded activations into the base, and where the weights changed;
3. :func:`assemble` (no model): categories, verdict, prompt-set table.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from analysis.analyze import CircuitLimits, analyze, prepare
from analysis.attribution import Attribution, CircuitResult
from analysis.attribution.adapters import get_adapter
from analysis.attribution.prune import count_above, threshold
from analysis.comparison.layer_patching import LayerShare, layer_shares, record_layers
from analysis.comparison.request import (
    MAX_PROMPT_SET,
    CompareRequest,
    prompt_items,
)
from analysis.comparison.threshold import reference_cut, with_cut
from analysis.comparison.verdict import CircuitComparison, compare_influences
from analysis.comparison.weights import (
    WeightChange,
    split_name,
    weight_changes,
    weight_changes_from_files,
)
from analysis.errors import InputError, LimitExceeded
from analysis.evaluation import CORRECTED_RULE, ItemResult, Scored, score_items
from analysis.lora import adapter_norms
from analysis.models import LoadedModel, model_directory

# One model's scores on one prompt of the set: the evaluation core's.
PromptProbs = Scored


class Signature(BaseModel):
    """What must match for two models to be compared neuron by neuron."""

    n_layers: int
    d_model: int
    n_neurons: int
    vocab: str

    def mismatch(self, other: Signature) -> str | None:
        for name in ("n_layers", "d_model", "n_neurons"):
            if getattr(self, name) != getattr(other, name):
                return f"{name} {getattr(other, name)} vs {getattr(self, name)}"
        if self.vocab != other.vocab:
            return "a different tokenizer vocabulary"
        return None


class Observation(BaseModel):
    """Everything one phase measured on one model (tensors stay in memory only)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str
    kind: str
    revision: str
    memory_bytes: int
    signature: Signature
    circuit: CircuitResult
    totals: Any = Field(description="[L, N] tensor: each neuron's influence, all positions.")
    prompts: list[PromptProbs]
    recorded: dict[str, Any] = Field(default_factory=dict,
                                     description="variant only: mlp/residual [L, seq, d].")
    weight_changes: list[WeightChange] = Field(default_factory=list)
    weight_kind: Literal["full", "lora", "none"] = "none"
    patching: list[LayerShare] = Field(default_factory=list)
    threshold: float | None = Field(None, description="The |influence| cut this side used.")
    n_above: int | None = Field(None, description="Nodes reaching it, before any cap.")
    fullest_layer: int | None = Field(None, description="The most of them in one layer.")


# A prompt of the set before -> after, with its outcome: the evaluation core's.
PromptRow = ItemResult


class SideSummary(BaseModel):
    model: str
    kind: str
    revision: str
    memory_mb: float
    m: float
    p_a: float | None
    p_b: float | None
    rank_a: int | None
    rank_b: int | None
    influence_sum: float
    total_influence: float = Field(description="All neurons, all positions.")
    n_nodes: int
    top: list[dict[str, Any]]
    threshold: float | None = Field(
        None, description="The absolute |influence| cut of this side's graph (logit units).")
    n_above_threshold: int | None = Field(None, description="Nodes reaching the cut.")
    caps: list[str] = Field(default_factory=list,
                            description="Caps that bound: the graph shows fewer nodes than "
                                        "reach the cut.")


class ComparisonResult(BaseModel):
    """What the Compare page, the API and the CLI show."""

    base: SideSummary
    tuned: SideSummary
    comparison: CircuitComparison
    prompts: list[PromptRow]
    weight_changes: list[WeightChange]
    weight_kind: Literal["full", "lora", "none"]
    patching: list[LayerShare]
    base_circuit: CircuitResult | None = None
    tuned_circuit: CircuitResult | None = None

    @property
    def same_threshold(self) -> bool:
        b, t = self.base.threshold, self.tuned.threshold
        return b is not None and t is not None and abs(b - t) <= 1e-9 * max(b, t, 1.0)

    @property
    def warnings(self) -> list[str]:
        """What keeps the two graphs from being like for like, said on every view."""
        out = [f"{side.model}: {cap}" for side in (self.base, self.tuned) for cap in side.caps]
        if not self.same_threshold:
            out.append("the two graphs were cut at different thresholds (a comparison "
                       "stored before both sides shared one): node counts do not compare")
        return out

    def threshold_text(self) -> str:
        if self.same_threshold and self.base.threshold is not None:
            return (f"both graphs keep nodes with |influence| >= {self.base.threshold:.4f} "
                    f"(tau x |m base| = {self.base.threshold / (abs(self.base.m) or 1):.3g} x "
                    f"{abs(self.base.m):.3f}); the same cut on both sides")
        return "each graph was cut relative to its own |m|"

    def summary(self, n_neurons: int = 10) -> str:
        """A plain-text report (the CLI's output, the seeds' comparison table)."""
        b, t, c = self.base, self.tuned, self.comparison

        def pct(x: float | None) -> str:
            return "   -  " if x is None else f"{x:6.1%}"

        lines = [f"{b.model} -> {t.model}",
                 f"  m        {b.m:+8.3f} -> {t.m:+8.3f}",
                 f"  P(A)     {pct(b.p_a)} -> {pct(t.p_a)}   rank {b.rank_a} -> {t.rank_a}",
                 f"  P(B)     {pct(b.p_b)} -> {pct(t.p_b)}   rank {b.rank_b} -> {t.rank_b}",
                 f"  influence sum of the kept nodes ({b.n_nodes} -> {t.n_nodes}) "
                 f"{b.influence_sum:+.3f} -> "
                 f"{t.influence_sum:+.3f}",
                 f"  nodes kept {b.n_nodes} -> {t.n_nodes}; {self.threshold_text()}",
                 *[f"  WARNING: {w}" for w in self.warnings],
                 f"verdict: {c.verdict.upper()}", *[f"  - {r}" for r in c.reasons],
                 f"neurons (largest first, {len(c.neurons)} large in either model):"]
        for n in c.neurons[:n_neurons]:
            lines.append(f"  {n.name:>12} {n.base:+8.3f} -> {n.tuned:+8.3f}  {n.category}")
        lines.append("prompt set (P expected before -> after, top-1, outcome):")
        for r in self.prompts:
            lines.append(f"  {r.kind:<14} {pct(r.before.expected.prob)} -> "
                         f"{pct(r.after.expected.prob)}  {r.expected!r:<16} top-1 "
                         f"{r.before.top1.text!r} -> {r.after.top1.text!r}  "
                         f"{r.outcome.upper():<11} {r.prompt[:40]}")
        lines.append(CORRECTED_RULE)
        if self.weight_changes:
            top = ", ".join(f"L{w.layer} {w.module} {w.relative:.3g}"
                            for w in self.weight_changes[:3])
            lines.append(f"largest weight changes ({self.weight_kind}): {top}")
        if self.patching:
            best = max(self.patching, key=lambda p: abs(p.mlp_share or 0.0))
            if best.mlp_share is not None:
                lines.append(f"patching: L{best.layer}'s MLP output carries "
                             f"{best.mlp_share:.0%} of the change in m")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


def check_pair(base: str, variant: str, variant_kind: str, variant_base: str | None,
               base_kind: str) -> None:
    """Refuse comparisons that cannot mean anything, before any model is loaded."""
    if base == variant:
        raise InputError(f"{variant!r} is compared with itself; pick the base model and a "
                         "fine-tuned variant of it", field="variant")
    if variant_kind == "lora" and variant_base != base:
        raise InputError(f"{variant!r} is a LoRA adapter over {variant_base!r}; it can only "
                         f"be compared with {variant_base!r}", field="base")
    if base_kind == "lora":
        raise InputError(f"{base!r} is a LoRA adapter; pick its base model as the base",
                         field="base")


def signature(lm: LoadedModel) -> Signature:
    cached = lm.extra.get("signature")
    if cached is None:
        adapter = get_adapter(lm.model)
        vocab = sorted(lm.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        digest = hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]
        cached = Signature(n_layers=adapter.n_layers, d_model=adapter.d_model,
                           n_neurons=adapter.n_neurons, vocab=digest)
        lm.extra["signature"] = cached
    return cached  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------


def observe_variant(lm: LoadedModel, req: CompareRequest,
                    limits: CircuitLimits | None = None) -> Observation:
    """Phase 1, on the fine-tuned variant."""
    obs = _observe(lm, req, limits or CircuitLimits())
    obs.recorded = record_layers(lm, obs.circuit.input_ids)
    return obs


def observe_base(lm: LoadedModel, req: CompareRequest, tuned: Observation,
                 variant: LoadedModel | None = None, variant_dir: Path | None = None,
                 limits: CircuitLimits | None = None) -> Observation:
    """Phase 2, on the base. ``variant`` is the variant's LoadedModel when it is a LoRA
    overlay (its adapter matrices are read, not attached); ``variant_dir`` the directory
    of a full fine-tune's weights."""
    problem = signature(lm).mismatch(tuned.signature)
    if problem:
        raise InputError(f"{tuned.model!r} does not share {lm.name!r}'s architecture "
                         f"({problem}); compare a variant with its own base", field="variant")
    obs = _observe(lm, req, limits or CircuitLimits())
    # The variant's recorded layers patched into the base, layer by layer.
    obs.patching = layer_shares(lm, obs.circuit.input_ids, obs.circuit.target_a,
                                obs.circuit.target_b, obs.circuit.m, tuned.circuit.m,
                                tuned.recorded)
    if variant is not None and variant.overlay is not None:
        obs.weight_kind = "lora"
        obs.weight_changes = []
        for path, relative, norm in adapter_norms(variant.overlay, lm.model):
            layer, module = split_name(path + ".weight")
            obs.weight_changes.append(WeightChange(
                layer=layer, module=module.removesuffix(".weight"), relative=relative,
                norm_base=norm))
    elif variant is not None:
        obs.weight_kind = "full"
        obs.weight_changes = weight_changes(lm.model, variant.model)
    elif variant_dir is not None:
        obs.weight_kind = "full"
        obs.weight_changes = weight_changes_from_files(lm.model, variant_dir)
    return obs


def variant_weights_dir(lm: LoadedModel, cache_dir: Path) -> Path | None:
    """Where a full variant's safetensors are, for the file-based weight diff."""
    location = model_directory(lm.spec, cache_dir)
    if isinstance(location, Path):
        return location
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(location, revision=lm.spec.revision,
                                      cache_dir=lm.spec.hf_cache_dir, local_files_only=True))
    except Exception:
        return None


def _observe(lm: LoadedModel, req: CompareRequest, limits: CircuitLimits) -> Observation:
    if len(req.prompt_set) > MAX_PROMPT_SET:
        raise LimitExceeded(f"{len(req.prompt_set)} prompts in the set is over the limit "
                            f"({MAX_PROMPT_SET})", field="prompt_set")
    captured: dict[str, Any] = {}
    s = req.circuit.settings

    def keep(attr: Attribution) -> None:
        captured["totals"] = attr.neuron_totals().detach().float().cpu()
        if s.mode == "tau":
            cut = threshold(attr.m, s.tau, s.min_influence)
            captured["cut"] = cut
            captured["n_above"], captured["fullest"] = count_above(attr, cut)

    prep = prepare(lm, req.circuit, limits, req.known_always_on)
    circuit = analyze(lm, req.circuit, limits, prepared=prep, on_attribution=keep)
    return Observation(
        model=lm.name, kind=lm.spec.kind, revision=lm.revision,
        memory_bytes=lm.memory_bytes(), signature=signature(lm), circuit=circuit,
        totals=captured["totals"], prompts=prompt_probs(lm, req, limits),
        threshold=captured.get("cut"), n_above=captured.get("n_above"),
        fullest_layer=captured.get("fullest"),
    )


def prompt_probs(lm: LoadedModel, req: CompareRequest,
                 limits: CircuitLimits) -> list[Scored]:
    """The target prompt and the set, formatted like the target (same chat settings),
    scored by the evaluation core."""
    return score_items(lm, prompt_items(req), req.circuit.prompt, limits.max_prompt_tokens,
                       top_k=1, field="prompt_set")


# ---------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------


def influence_maps(base: torch.Tensor, tuned: torch.Tensor, floor: float
                   ) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    """Neurons whose total reaches ``floor`` in either model, with both totals."""
    big = (base.abs() >= floor) | (tuned.abs() >= floor)
    keys = [tuple(k) for k in big.nonzero().tolist()]
    return ({(k[0], k[1]): float(base[k[0], k[1]]) for k in keys},
            {(k[0], k[1]): float(tuned[k[0], k[1]]) for k in keys})


def _caps(obs: Observation) -> list[str]:
    p, out = obs.circuit.params, []
    if obs.n_above is not None and p.max_nodes is not None and obs.n_above > p.max_nodes:
        out.append(f"max_nodes={p.max_nodes} bound: {obs.n_above} nodes reach the cut, "
                   f"the graph keeps the {p.max_nodes} largest")
    if obs.fullest_layer is not None and obs.fullest_layer > p.per_layer_top_k:
        out.append(f"per_layer_top_k={p.per_layer_top_k} bound: one layer has "
                   f"{obs.fullest_layer} nodes reaching the cut")
    return out


def _summary(obs: Observation) -> SideSummary:
    c = obs.circuit
    target = obs.prompts[0]
    return SideSummary(
        model=obs.model, kind=obs.kind, revision=obs.revision,
        memory_mb=round(obs.memory_bytes / 2**20, 1), m=c.m,
        p_a=target.expected.prob, p_b=target.wrong.prob if target.wrong else None,
        rank_a=c.rank_a, rank_b=c.rank_b,
        influence_sum=c.influence_sum, total_influence=float(obs.totals.sum()),
        n_nodes=len(c.nodes), top=[t.model_dump() for t in c.top],
        threshold=obs.threshold, n_above_threshold=obs.n_above, caps=_caps(obs),
    )


def dropped_always_on(*circuits: CircuitResult) -> dict[tuple[int, int], str]:
    """The always-on neurons either circuit dropped, with why: the verdict leaves them out
    of its counting as the graphs leave them out."""
    out: dict[tuple[int, int], str] = {}
    for circuit in circuits:
        for f in circuit.always_on:
            if f.dropped:
                out.setdefault((f.layer, f.neuron), f.reason.replace("_", " "))
    return out


def assemble(req: CompareRequest, base: Observation, tuned: Observation) -> ComparisonResult:
    """Categories, verdict and tables from the two observations (no model needed)."""
    t = req.thresholds
    floor = t.large * (abs(base.circuit.m) or 1.0)
    b_map, t_map = influence_maps(base.totals, tuned.totals, floor)
    shown = {(n.layer, n.neuron) for n in base.circuit.nodes}
    comparison = compare_influences(base.circuit.m, tuned.circuit.m, b_map, t_map, t, shown,
                                    excluded=dropped_always_on(base.circuit, tuned.circuit))
    rows = [ItemResult(index=i, kind=item.kind, prompt=item.prompt, expected=item.expected,
                       wrong=item.wrong, before=pb, after=pt, band=t.min_delta_m)
            for i, (item, pb, pt) in enumerate(zip(prompt_items(req), base.prompts,
                                                   tuned.prompts, strict=True))]
    return ComparisonResult(
        base=_summary(base), tuned=_summary(tuned), comparison=comparison, prompts=rows,
        weight_changes=base.weight_changes, weight_kind=base.weight_kind,
        patching=base.patching, base_circuit=base.circuit, tuned_circuit=tuned.circuit,
    )


def compare_loaded(base: LoadedModel, tuned: LoadedModel, req: CompareRequest,
                   limits: CircuitLimits | None = None,
                   variant_dir: Path | None = None) -> ComparisonResult:
    """Both phases in one call, for notebooks and tests (the server and the CLI run the
    phases through their model manager). A LoRA ``tuned`` shares ``base``'s modules: its
    overlay is attached for phase 1 and detached for phase 2."""
    from analysis.models import activate

    check_pair(base.name, tuned.name, tuned.spec.kind, tuned.spec.base, base.spec.kind)
    activate(base)
    req = with_cut(req, reference_cut(base, req, limits))
    activate(tuned)
    tuned_obs = observe_variant(tuned, req, limits)
    activate(base)
    full = tuned if tuned.overlay is None and variant_dir is None else None
    lora = tuned if tuned.overlay is not None else None
    base_obs = observe_base(base, req, tuned_obs, variant=lora or full,
                            variant_dir=variant_dir, limits=limits)
    return assemble(req, base_obs, tuned_obs)
