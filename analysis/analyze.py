"""Circuit analysis of one prompt as users ask for it: prompt fields and answer *strings*
in, a `CircuitResult` out. Formatting, answer resolution and limits happen here, so the
CLI, the server and a notebook all get the same numbers from the same request."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from analysis.answers import AnswerToken, resolve_answer, resolve_contrast
from analysis.attribution import (
    Attribution,
    CircuitResult,
    CircuitSettings,
    InterventionResult,
    NeuronDescription,
    NeuronEdit,
    TokenProb,
    cache_key,
    describe_neuron,
    intervene,
    run_circuit,
)
from analysis.attribution.always_on import KnownAlwaysOn
from analysis.attribution.core import METHODS, remote_methods
from analysis.attribution.results import METRIC_NODE_ID
from analysis.errors import InputError, LimitExceeded
from analysis.estimate import Estimate, check_size, estimate
from analysis.models import LoadedModel
from analysis.predict import Limits, next_token_logits, rank_of, top_tokens
from analysis.prompts import FormattedPrompt, PromptSpec, format_prompt


class CircuitLimits(BaseModel):
    """Caps on attribution work, on top of the prediction limits."""

    max_prompt_tokens: int = Field(256, ge=1)
    max_nodes: int = Field(1000, ge=1)
    max_ig_steps: int = Field(128, ge=1)
    max_edits: int = Field(64, ge=1)
    max_edge_pairs: int = Field(
        1_000_000, ge=1, description="Edge matrix entries (max_nodes x max_nodes) a request "
        "may compute; more is refused (413) before any forward pass.")


class CircuitRequest(BaseModel):
    """What determines a circuit besides the model: prompt, contrast and settings. (An
    index's always-on flags go to :func:`prepare`; an unknown field is an error, never
    silently dropped.)"""

    model_config = ConfigDict(extra="forbid")

    prompt: PromptSpec
    answer_a: str
    answer_b: str | None = None
    settings: CircuitSettings = Field(default_factory=CircuitSettings)


class PreparedCircuit(BaseModel):
    """A request resolved against a model: tokens, answer tokens and its cache key."""

    formatted: FormattedPrompt
    answer_a: AnswerToken
    answer_b: AnswerToken | None
    params: CircuitSettings = Field(description="The request's settings, normalized.")
    key: str
    known_always_on: KnownAlwaysOn | None = Field(
        None, description="An exemplar index's always-on flags, joined to the prompt's.")


def check_remote_settings(name: str, s: CircuitSettings) -> None:
    """What of a circuit runs on NDIF: grad x act's attribution (one remote trace with
    its backward), pruning, and faithfulness (traced ablations). RelP, integrated
    gradients and the edges' batched VJPs rewrite the backward with local torch hooks,
    so they are refused by name."""
    if METHODS[s.method].remote is None:
        raise InputError(
            f"{name!r} runs on NDIF, where attribution runs with method="
            f"{' or '.join(repr(m) for m in remote_methods())} only: method={s.method!r} "
            "needs local weights (RelP's linearized backward and integrated gradients' "
            "scaled forwards are local hooks). Use one of those or register a local copy.",
            field="method")
    if s.edges:
        raise InputError(
            f"{name!r} runs on NDIF, where edges do not run yet: they are batched VJPs "
            "through local hooks. Set edges=false or register a local copy.", field="edges")


def prepare(lm: LoadedModel, req: CircuitRequest, limits: CircuitLimits,
            known_always_on: KnownAlwaysOn | None = None) -> PreparedCircuit:
    """Validate and resolve a request without running the model (cheap; gives the key).
    ``known_always_on``: flags from the model's exemplar index (part of the key)."""
    s = req.settings
    if lm.remote is not None:
        check_remote_settings(lm.name, s)
    if s.max_nodes is not None and s.max_nodes > limits.max_nodes:
        raise LimitExceeded(f"max_nodes={s.max_nodes} is over the limit "
                            f"(max_nodes={limits.max_nodes})", field="max_nodes")
    if "ig_steps" in METHODS[s.method].settings and s.ig_steps > limits.max_ig_steps:
        raise LimitExceeded(f"ig_steps={s.ig_steps} is over the limit "
                            f"(max_ig_steps={limits.max_ig_steps})", field="ig_steps")
    formatted = format_prompt(lm.tokenizer, req.prompt, limits.max_prompt_tokens)
    a, b = resolve_contrast(lm.tokenizer, req.answer_a, req.answer_b)
    params = s.normalized()
    key = cache_key(lm.name, lm.revision, formatted.input_ids, a.token_id,
                    b.token_id if b else None, params,
                    always_on_source=known_always_on.source if known_always_on else None)
    return PreparedCircuit(formatted=formatted, answer_a=a, answer_b=b, params=params, key=key,
                           known_always_on=known_always_on)


def analyze(
    lm: LoadedModel,
    req: CircuitRequest,
    limits: CircuitLimits | None = None,
    labels: dict[str, str] | None = None,
    prepared: PreparedCircuit | None = None,
    on_attribution: Callable[[Attribution], None] | None = None,
) -> CircuitResult:
    """Attribution, pruning, edges and faithfulness for one prompt."""
    limits = limits or CircuitLimits()
    prep = prepared or prepare(lm, req, limits)
    # Checked here, not in prepare: a stored identical run is still returned (API, web),
    # and every computing entry point (API, web, Compare, CLI) comes through here.
    check_size(req.settings, limits.max_nodes, limits.max_edge_pairs)
    result = run_circuit(
        lm.model, lm.tokenizer, prep.formatted.input_ids, prep.answer_a.token_id,
        prep.answer_b.token_id if prep.answer_b else None, req.settings,
        model_name=lm.name, model_revision=lm.revision, prompt=prep.formatted.text,
        labels=labels, on_attribution=on_attribution,
        known_always_on=prep.known_always_on,
    )
    result.cache_key = prep.key
    add_predictions(lm, result, prep)
    return result


def estimate_request(lm: LoadedModel, req: CircuitRequest,
                     limits: CircuitLimits | None = None) -> Estimate:
    """Expected time and memory of ``req`` on ``lm``'s device (the benchmark's fit)."""
    limits = limits or CircuitLimits()
    prep = prepare(lm, req, limits)
    return estimate(lm.model, len(prep.formatted.input_ids), req.settings, limits.max_nodes)


TOP_K_STORED = 10


def add_predictions(lm: LoadedModel, result: CircuitResult, prep: PreparedCircuit) -> None:
    """Store the top next tokens and the answers' ranks with the run, so a saved run
    reopens with its predictions and never needs the model again."""
    logits = next_token_logits(lm, [prep.formatted.input_ids])[0]
    result.top = [TokenProb(id=t.token_id, token=t.text, logit=t.logit, prob=t.prob)
                  for t in top_tokens(lm, logits, TOP_K_STORED)]
    result.rank_a = rank_of(logits, prep.answer_a.token_id)
    result.rank_b = rank_of(logits, prep.answer_b.token_id) if prep.answer_b else None


def intervene_on_prompt(
    lm: LoadedModel,
    prompt: PromptSpec,
    edits: Sequence[NeuronEdit],
    answer_a: str | None = None,
    answer_b: str | None = None,
    top_k: int = 10,
    limits: Limits | None = None,
    circuit_limits: CircuitLimits | None = None,
) -> InterventionResult:
    """Re-run a prompt with neurons zeroed or scaled; new top-k and m beside the old.
    One traced forward, so it runs on NDIF-hosted models too."""
    limits = limits or Limits()
    circuit_limits = circuit_limits or CircuitLimits()
    limits.check_top_k(top_k)
    if len(edits) > circuit_limits.max_edits:
        raise LimitExceeded(f"{len(edits)} edits is over the limit "
                            f"(max_edits={circuit_limits.max_edits})", field="edits")
    formatted = format_prompt(lm.tokenizer, prompt, circuit_limits.max_prompt_tokens)
    a = b = None
    if answer_a and answer_a.strip():
        ta, tb = resolve_contrast(lm.tokenizer, answer_a, answer_b)
        a, b = ta.token_id, (tb.token_id if tb else None)
    elif answer_b and answer_b.strip():
        raise InputError("answer B needs answer A", field="answer_a")
    return intervene(lm.model, lm.tokenizer, formatted.input_ids, edits, a, b, top_k=top_k)


def describe(
    lm: LoadedModel,
    layer: int,
    neuron: int,
    prompt: PromptSpec | None = None,
    top_k: int = 10,
    circuit_limits: CircuitLimits | None = None,
) -> NeuronDescription:
    """What a neuron writes (logit lens) and, given a prompt, where it fires."""
    lm.require_local("a neuron description")
    circuit_limits = circuit_limits or CircuitLimits()
    ids = None
    if prompt is not None and prompt.prompt.strip():
        ids = format_prompt(lm.tokenizer, prompt, circuit_limits.max_prompt_tokens).input_ids
    return describe_neuron(lm.model, lm.tokenizer, layer, neuron, ids, top_k=top_k)


def refilter(result: CircuitResult, tau: float | None = None,
             edge_threshold: float | None = None) -> CircuitResult:
    """A stricter view of a stored circuit without recomputing it: nodes with
    |influence| >= tau * |m| and edges with |weight| >= edge_threshold among them. A
    looser tau than the stored one cannot bring back nodes that were never kept."""
    if tau is not None and not 0 < tau <= 1:
        raise InputError(f"tau must be in (0, 1], got {tau}", field="tau")
    if edge_threshold is not None and edge_threshold < 0:
        raise InputError("edge threshold must be >= 0", field="edge_threshold")
    nodes = result.nodes
    if tau is not None:
        nodes = [n for n in nodes if abs(n.influence) >= tau * abs(result.m)]
    kept = {n.node_id for n in nodes}
    threshold = edge_threshold or 0.0
    edges = [e for e in result.edges
             if e.source in kept and (e.target in kept or e.target == METRIC_NODE_ID)
             and abs(e.weight) >= threshold]
    kept_neurons = {(n.layer, n.neuron) for n in nodes}
    neurons = [n for n in result.neurons if (n.layer, n.neuron) in kept_neurons]
    return result.model_copy(update={"nodes": nodes, "edges": edges, "neurons": neurons})


__all__ = [
    "CircuitLimits",
    "CircuitRequest",
    "PreparedCircuit",
    "analyze",
    "describe",
    "estimate_request",
    "intervene_on_prompt",
    "prepare",
    "refilter",
    "resolve_answer",
]
