"""Runs a comparison through the model manager and stores it.

The two phases run as two pieces of model work (variant, then base), so a LoRA variant
toggles its overlay on the shared base and a full variant may be swapped in; between
them only small tensors are held. Each side's circuit is saved as an ordinary run under its
cache key (its graph opens in the circuit browser; an identical circuit already stored is
reused, not stored again), and the comparison as a run of kind "comparison"
that points at both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from analysis.analyze import CircuitRequest
from analysis.attribution import CircuitResult
from analysis.attribution.circuit_settings import CircuitSettings
from analysis.comparison import (
    MAX_PROMPT_SET,
    CompareRequest,
    ComparisonResult,
    PromptSetItem,
    assemble,
    check_pair,
    observe_base,
    observe_variant,
    reference_cut,
    variant_weights_dir,
    with_cut,
)
from analysis.comparison.layer_patching import LayerShare, patch_from, record_source
from analysis.errors import InputError, NotFound, UnknownModel, input_error
from analysis.models import LoadedModel
from analysis.prompts import PromptSpec
from app.schemas import CompareBody, PatchingBody
from app.services.model_manager import ModelManager
from app.settings import Settings
from app.store.runs import RunStore
from app.store.tables import Run

if TYPE_CHECKING:  # a type only: the job runner imports this module
    from app.services.index_readers import IndexReaders

CIRCUITS = {"base_circuit", "tuned_circuit"}


def compare_request(body: CompareBody) -> CompareRequest:
    circuit = CircuitRequest(prompt=PromptSpec.of(body), answer_a=body.answer_a,
                             answer_b=body.answer_b or None,
                             settings=CircuitSettings.of(body))
    return CompareRequest(circuit=circuit, prompt_set=body.prompt_set,
                          thresholds=body.thresholds)


def _circuit_run(circuit: CircuitResult, req: CircuitRequest, kind: str) -> Run:
    """One side's circuit as an ordinary run, under its cache key: the store gives back
    the run already stored for that key, so comparing one base with several variants
    keeps one base run (and a run of the base with the same settings is that run)."""
    return Run(
        kind="attribution", model=circuit.model_name or "", prompt=req.prompt.prompt,
        model_revision=circuit.model_revision or "", answer_a=req.answer_a,
        answer_b=req.answer_b, method=req.settings.method,
        params={**circuit.params.model_dump(mode="json"),
                "prompt_spec": req.prompt.model_dump(mode="json"), "compared_as": kind},
        cache_key=circuit.cache_key, metric=circuit.m, influence_sum=circuit.influence_sum,
        result=circuit.model_dump(mode="json"),
    )


def run_comparison(body: CompareBody, manager: ModelManager, settings: Settings,
                   runs: RunStore, readers: IndexReaders | None = None) -> Run:
    """Compare and store, synchronously: each phase is one piece of model work under the
    manager's lock (web routes call this in a worker thread; the CLI calls it directly).
    With the index readers, the base's complete exemplar index flags always-on neurons
    for both circuits, as it does for a run of the base (the same base circuit, the same
    influence sum, on the run page and here)."""
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
    limits = settings.circuit_limits
    # Phase 0 on the base: one absolute threshold for both graphs (like for like).
    req = compare_request(body)
    if readers is not None:
        req.known_always_on = readers.known_always_on(body.base, base_spec.base)
    req = with_cut(req, manager.run_sync(body.base, lambda lm: reference_cut(lm, req, limits)))

    def variant_phase(lm: LoadedModel) -> tuple[Any, LoadedModel, Any]:
        obs = observe_variant(lm, req, limits)
        where = None if lm.overlay is not None else variant_weights_dir(lm, settings.cache_dir)
        return obs, lm, where

    tuned_obs, tuned_lm, variant_dir = manager.run_sync(body.variant, variant_phase)
    lora = tuned_lm if tuned_lm.overlay is not None else None
    base_obs = manager.run_sync(
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
    try:
        result = ComparisonResult.model_validate(run.result)
    except ValidationError as exc:
        raise InputError(f"comparison {run.id!r} was stored by an older version of "
                         "circuitlab (before the one evaluation core); run it again from "
                         "the Compare form", field="run_id") from exc
    for side, key in (("base_circuit", "base_run"), ("tuned_circuit", "tuned_run")):
        stored = runs.get(run.params.get(key, ""))
        if stored is not None:
            setattr(result, side, CircuitResult.model_validate(stored.result))
    return result


def variant_rows(manager: ModelManager) -> list[dict[str, Any]]:
    """Registered models with kind, base and, when loaded, the memory each one adds."""
    manager.refresh()
    loaded = {lm.name: lm for lm in manager.loaded()}
    return [{"name": s.name, "kind": s.kind, "base": s.base, "loaded": s.name in loaded,
             "memory_mb": round(loaded[s.name].memory_bytes() / 2**20, 1)
             if s.name in loaded else None, "description": s.description}
            for s in manager.registry.specs()]


def stored_comparison(runs: RunStore, run_id: str) -> Run:
    run = runs.get(run_id) if len(run_id) <= 32 else None
    if run is None or run.kind != "comparison":
        raise NotFound(f"no comparison with id {run_id!r}")
    return run


def parse_prompt_set(text: str, field: str = "prompt_set") -> list[PromptSetItem]:
    """Lines ``kind | prompt | expected | wrong``; blank lines and ``#`` comments skipped."""
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) not in (3, 4):
            raise InputError(f"prompt set line {number}: expected 3 or 4 fields separated "
                             f"by '|', got {len(parts)} ({PROMPT_SET_HELP})",
                             field=field)
        kind = parts[0].lower().replace("-", "_").replace(" ", "_")
        if kind not in ("generalization", "side_effect"):
            raise InputError(f"prompt set line {number}: kind {parts[0]!r} is not "
                             "'generalization' or 'side_effect'", field=field)
        # Answers keep one leading space (" renin" is the token after "is"), as the
        # answers typed in the form would; the '|' separators ate it.
        expected = " " + parts[2] if parts[2] else ""
        wrong = " " + parts[3] if len(parts) == 4 and parts[3] else None
        try:
            items.append(PromptSetItem(kind=kind, prompt=parts[1],  # type: ignore[arg-type]
                                       expected=expected, wrong=wrong))
        except ValidationError as exc:
            raise input_error(exc, prefix=f"prompt set line {number}: ",
                              field=field) from exc
        if len(items) > MAX_PROMPT_SET:
            raise InputError(f"the prompt set has more than {MAX_PROMPT_SET} prompts",
                             field=field)
    return items


def prompt_set_text(items: list[dict[str, Any]]) -> str:
    """The textarea text of a stored prompt set (the inverse of parse_prompt_set)."""
    return "\n".join(" | ".join([i["kind"], i["prompt"], i["expected"].strip(),
                                 *([i["wrong"].strip()] if i.get("wrong") else [])])
                     for i in items)


PROMPT_SET_HELP = ("one prompt per line: kind | prompt | expected answer | wrong answer "
                   "(kind: generalization or side_effect; the wrong answer may be left out)")


def run_patching(body: PatchingBody, manager: ModelManager,
                 settings: Settings) -> list[LayerShare]:
    """Circuit-free layer patching: the variant's layers recorded (one piece of model
    work), then patched into the base (another). Nothing is stored: it is a few numbers
    per layer, recomputed in seconds."""
    for role in ("base", "variant"):
        try:
            manager.spec(getattr(body, role))
        except UnknownModel as exc:
            raise UnknownModel(str(exc), field=role) from exc
    if body.base == body.variant:
        raise InputError("patching a model into itself changes nothing; pick two models",
                         field="variant")
    prompt = PromptSpec.of(body)
    limit = settings.circuit_limits.max_prompt_tokens
    source = manager.run_sync(body.variant, lambda lm: record_source(
        lm, prompt, body.answer_a, body.answer_b or None, limit))
    return manager.run_sync(body.base, lambda lm: patch_from(lm, source, prompt, limit))
