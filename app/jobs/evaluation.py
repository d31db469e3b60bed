"""A finished job's evaluation, before (the base) vs after (the variant): the target's
top-k and A/B scores (first token and whole answer), the evaluation set, and a
degeneration check of greedy generations on both."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis.models import ModelSpec

TOP_K = 10


DEGENERATION_PROMPTS = 4


DEGENERATION_TOKENS = 32


def evaluate_variant(cfg: Any, base_spec: ModelSpec, variant_spec: ModelSpec,
                     cache_dir: Path, say: Callable[[str], None],
                     checkpoint: Callable[[], None]) -> dict[str, Any]:
    """Before (the base) vs after (the variant): the target's top-k and A/B scores, the
    evaluation set, and a degeneration check of greedy generations on both."""
    from analysis.correction.evaluate import degeneration_check, evaluate_prompts
    from analysis.models import activate, load_lora_variant, load_model
    from analysis.predict import Limits, predict

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

    out: dict[str, Any] = {}
    limits = Limits(max_prompt_tokens=max(cfg.max_length, 8), max_top_k=TOP_K)
    target = cfg.target
    if target is not None:
        say("evaluation: the target prompt before -> after")
        answers = [target.answer_a, target.answer_b]
        activate(before)
        p_before = predict(before, target.prompt_spec(), answers, TOP_K, limits)
        activate(after)
        p_after = predict(after, target.prompt_spec(), answers, TOP_K, limits)
        out["target"] = {
            "prompt": p_after.prompt.text,
            "before": _prediction_summary(p_before),
            "after": _prediction_summary(p_after),
        }
        checkpoint()
    style = target.prompt_spec() if target is not None else None
    items = cfg.eval_items()
    if items:
        say(f"evaluation: {len(items)} evaluation prompt(s)")
        rows = evaluate_prompts(before, after, items, style=style, max_tokens=cfg.max_length)
        out["items"] = [dict(r.model_dump(mode="json"), fixed=r.fixed, broken=r.broken,
                             delta_p_expected=r.delta_p_expected) for r in rows]
        out["summary"] = {
            "n_items": len(rows),
            "correct_before": sum(r.before.correct for r in rows),
            "correct_after": sum(r.after.correct for r in rows),
            "fixed": sum(r.fixed for r in rows),
            "broken": sum(r.broken for r in rows),
            "target_fixed": any(r.fixed for r in rows if r.kind == "target"),
            "target_correct_after": next((r.after.correct for r in rows
                                          if r.kind == "target"), None),
        }
        checkpoint()
    prompts = [i.prompt for i in items][:DEGENERATION_PROMPTS] or [
        " ".join(t.split()[:6]) for t in cfg.texts[:2]]
    say(f"evaluation: degeneration check on {len(prompts)} prompt(s)")
    deg_before = degeneration_check(before, prompts, DEGENERATION_TOKENS, style=style,
                                    max_tokens=cfg.max_length)
    deg_after = degeneration_check(after, prompts, DEGENERATION_TOKENS, style=style,
                                   max_tokens=cfg.max_length)
    out["degeneration"] = {
        "before": dict(deg_before.model_dump(mode="json"),
                       n_degenerate=deg_before.n_degenerate),
        "after": dict(deg_after.model_dump(mode="json"), n_degenerate=deg_after.n_degenerate),
        # Small base models loop too: what matters is whether the correction made it worse.
        "worse": deg_after.n_degenerate > deg_before.n_degenerate,
    }
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


def _prediction_summary(p: Any) -> dict[str, Any]:
    a, b = p.answers

    def side(x: Any) -> dict[str, Any]:
        # First-token scores (the metric's: " renin" -> " ren") and the whole answer's.
        return {"answer": x.answer.answer, "token": x.answer.token_text, "prob": x.prob,
                "logit": x.logit, "rank": x.rank,
                "whole_prob": x.whole.prob if x.whole else None,
                "whole_logprob": x.whole.logprob if x.whole else None,
                "n_tokens": x.answer.n_tokens}

    return {
        "format": p.format,
        "top": [t.model_dump(mode="json") for t in p.top],
        "a": side(a),
        "b": side(b),
        "m": a.logit - b.logit,
        "whole_m": (a.whole.logprob - b.whole.logprob) if a.whole and b.whole else None,
        "top1": p.top[0].text if p.top else None,
    }
