"""Runs a comparison through the model manager and stores it.

The two phases run as two pieces of model work (variant, then base), so a LoRA variant
toggles its overlay on the shared base and a full variant may be swapped in; between
them only small tensors are held. Each side's circuit is saved as an ordinary run (its
graph opens in the circuit browser), and the comparison as a run of kind "comparison"
that points at both.
"""

from __future__ import annotations

from typing import Any

from analysis.analyze import CircuitRequest
from analysis.attribution import CircuitResult
from analysis.attribution.settings import CircuitSettings
from analysis.comparison import (
    CompareRequest,
    ComparisonResult,
    assemble,
    check_pair,
    observe_base,
    observe_variant,
    variant_weights_dir,
)
from analysis.errors import InputError, UnknownModel
from analysis.models import LoadedModel
from analysis.prompts import PromptSpec
from app.db import Run, RunStore
from app.model_manager import ModelManager
from app.schemas import CompareBody
from app.settings import Settings

CIRCUITS = {"base_circuit", "tuned_circuit"}


def compare_request(body: CompareBody) -> CompareRequest:
    spec = PromptSpec(prompt=body.prompt, chat_template=body.chat_template,
                      system_prompt=body.system_prompt, answer_prefix=body.answer_prefix)
    circuit = CircuitRequest(prompt=spec, answer_a=body.answer_a,
                             answer_b=body.answer_b or None,
                             settings=CircuitSettings.of(body))
    return CompareRequest(circuit=circuit, prompt_set=body.prompt_set,
                          thresholds=body.thresholds)


def _circuit_run(circuit: CircuitResult, req: CircuitRequest, kind: str) -> Run:
    return Run(
        kind="attribution", model=circuit.model_name or "", prompt=req.prompt.prompt,
        model_revision=circuit.model_revision or "", answer_a=req.answer_a,
        answer_b=req.answer_b, method=req.settings.method,
        params={**circuit.params.model_dump(mode="json"),
                "prompt_spec": req.prompt.model_dump(mode="json"), "compared_as": kind},
        metric=circuit.m, influence_sum=circuit.influence_sum,
        result=circuit.model_dump(mode="json"),
    )


async def run_comparison(body: CompareBody, manager: ModelManager, settings: Settings,
                         runs: RunStore) -> Run:
    specs = {}
    for role in ("base", "variant"):
        try:
            specs[role] = manager.spec(getattr(body, role))
        except UnknownModel as exc:
            raise UnknownModel(str(exc), field=role) from exc
    base_spec, variant_spec = specs["base"], specs["variant"]
    check_pair(body.base, body.variant, variant_spec.kind, variant_spec.base, base_spec.kind)
    # Two registered models that are not base and variant (say, two fine-tunes of one
    # base) are allowed when they share an architecture: phase 2 checks the signature.
    req = compare_request(body)
    limits = settings.circuit_limits

    def variant_phase(lm: LoadedModel) -> tuple[Any, LoadedModel, Any]:
        obs = observe_variant(lm, req, limits)
        where = None if lm.overlay is not None else variant_weights_dir(lm, settings.cache_dir)
        return obs, lm, where

    tuned_obs, tuned_lm, variant_dir = await manager.run(body.variant, variant_phase)
    lora = tuned_lm if tuned_lm.overlay is not None else None
    base_obs = await manager.run(
        body.base,
        lambda lm: observe_base(lm, req, tuned_obs, variant=lora,
                                variant_dir=variant_dir, limits=limits),
    )
    result = assemble(req, base_obs, tuned_obs)
    return save_comparison(result, body, req, runs)


def save_comparison(result: ComparisonResult, body: CompareBody, req: CompareRequest,
                    runs: RunStore) -> Run:
    assert result.base_circuit is not None and result.tuned_circuit is not None
    base_run = runs.add(_circuit_run(result.base_circuit, req.circuit, "base"))
    tuned_run = runs.add(_circuit_run(result.tuned_circuit, req.circuit, "variant"))
    run = Run(
        kind="comparison", model=body.variant, model_revision=result.tuned.revision,
        prompt=body.prompt, answer_a=body.answer_a, answer_b=body.answer_b,
        method=body.method,
        params={"base": body.base, "variant": body.variant, "base_run": base_run.id,
                "tuned_run": tuned_run.id, "request": body.model_dump(mode="json")},
        metric=result.tuned.m, influence_sum=result.tuned.influence_sum,
        result=result.model_dump(mode="json", exclude=CIRCUITS),
    )
    return runs.add(run)


def load_comparison(run: Run, runs: RunStore) -> ComparisonResult:
    """A stored comparison with both circuits attached again."""
    if run.kind != "comparison":
        raise InputError(f"run {run.id!r} is not a comparison", field="run_id")
    result = ComparisonResult.model_validate(run.result)
    for side, key in (("base_circuit", "base_run"), ("tuned_circuit", "tuned_run")):
        stored = runs.get(run.params.get(key, ""))
        if stored is not None:
            setattr(result, side, CircuitResult.model_validate(stored.result))
    return result

