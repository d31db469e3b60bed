"""A finished job's evaluation, before (the base) vs after (the variant), as one typed
``JobEvaluation``: every item scored by the evaluation core (the target first, with its
top-10), the outcome counts, a degeneration check of greedy generations on both, and the
circuit verdict on the target (its comparison stored as a comparison run)."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis.correction.evaluate import CircuitVerdictRef, JobEvaluation
from analysis.models import ModelSpec

TOP_K = 10
DEGENERATION_PROMPTS = 4
DEGENERATION_TOKENS = 32

# Stores a comparison and returns its run id (the runner gives one over the job's DB).
SaveComparison = Callable[[Any, Any], str]


def evaluate_variant(cfg: Any, base_spec: ModelSpec, variant_spec: ModelSpec,
                     cache_dir: Path, say: Callable[[str], None],
                     checkpoint: Callable[[], None],
                     save_comparison: SaveComparison | None = None) -> JobEvaluation:
    """Before (the base) vs after (the variant), see the module docstring."""
    from analysis.correction.evaluate import degeneration_check
    from analysis.evaluation import OutcomeCounts, evaluate_items
    from analysis.models import load_lora_variant, load_model
    from analysis.prompts import format_label, format_prompt

    started = time.perf_counter()
    say(f"evaluation: loading {base_spec.name}")
    before = load_model(base_spec, cache_dir)
    checkpoint()
    if variant_spec.kind == "lora":
        # One copy of the base: the adapter is an overlay on it (Compare's LoRA path),
        # switched on for "after" and off for "before".
        say(f"evaluation: attaching the LoRA adapter {variant_spec.name}")
        after = load_lora_variant(variant_spec, before, cache_dir)
    else:
        say(f"evaluation: loading the fine-tuned {variant_spec.name}")
        after = load_model(variant_spec, cache_dir)
    checkpoint()

    target = cfg.target
    style = target.prompt_spec() if target is not None else None
    out = JobEvaluation()
    if style is not None:
        out.target_prompt = format_prompt(before.tokenizer, style).text
        out.target_format = format_label(style)
    items = cfg.eval_items()
    if items:
        say(f"evaluation: the target prompt and {len(items)} evaluation prompt(s), "
            "before -> after")
        out.items = evaluate_items(before, after, items, style=style,
                                   max_tokens=max(cfg.max_length, 8), top_k=TOP_K)
        out.summary = OutcomeCounts.of(out.items)
        if out.target is not None:
            say(f"evaluation: target {out.target.outcome} (top-1 "
                f"{out.target.before.top1.text!r} -> {out.target.after.top1.text!r})")
        checkpoint()
    prompts = [i.prompt for i in items][:DEGENERATION_PROMPTS] or [
        " ".join(t.split()[:6]) for t in cfg.texts[:2]]
    say(f"evaluation: degeneration check on {len(prompts)} prompt(s)")
    out.degeneration_before = degeneration_check(before, prompts, DEGENERATION_TOKENS,
                                                 style=style, max_tokens=cfg.max_length)
    out.degeneration_after = degeneration_check(after, prompts, DEGENERATION_TOKENS,
                                                style=style, max_tokens=cfg.max_length)
    checkpoint()
    if target is not None and target.answer_b:
        out.circuit = circuit_verdict(cfg, before, after, say, save_comparison)
        checkpoint()
    out.seconds = round(time.perf_counter() - started, 2)
    return out


def circuit_verdict(cfg: Any, before: Any, after: Any, say: Callable[[str], None],
                    save_comparison: SaveComparison | None) -> CircuitVerdictRef:
    """The target's circuit on both models, compared once (Compare's own code, both graphs
    cut at the base's threshold); edges are left out to keep it to seconds. A failure here
    is recorded on the evaluation, never fails a job whose training succeeded."""
    from analysis.analyze import CircuitRequest
    from analysis.attribution.circuit_settings import CircuitSettings
    from analysis.comparison import MAX_PROMPT_SET, CompareRequest, compare_loaded

    say("evaluation: the circuit verdict on the target (base vs variant)")
    t = cfg.target
    req = CompareRequest(
        circuit=CircuitRequest(prompt=t.prompt_spec(), answer_a=t.answer_a,
                               answer_b=t.answer_b, settings=CircuitSettings(edges=False)),
        prompt_set=[i for i in cfg.eval_items() if i.kind != "target"][:MAX_PROMPT_SET])
    try:
        result = compare_loaded(before, after, req)
    except Exception as exc:  # recorded on the job, see the docstring
        say("evaluation: the circuit verdict failed: "
            + "".join(traceback.format_exception(exc)).rstrip())
        return CircuitVerdictRef(error=f"{type(exc).__name__}: {exc}")
    ref = CircuitVerdictRef(
        verdict=result.comparison.verdict, reasons=result.comparison.reasons,
        threshold=result.base.threshold, nodes_base=result.base.n_nodes,
        nodes_variant=result.tuned.n_nodes, warnings=result.warnings)
    if save_comparison is not None:
        ref.comparison_id = save_comparison(result, req)
    say(f"evaluation: circuit verdict {ref.verdict}"
        + (f" (comparison {ref.comparison_id})" if ref.comparison_id else ""))
    return ref
