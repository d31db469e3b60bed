"""Circuit runs: compute one or reuse the stored identical run, look runs up, and read
them back with the current labels."""

from __future__ import annotations

from typing import Any

from analysis.analyze import (
    CircuitLimits,
    CircuitRequest,
    PreparedCircuit,
    analyze,
    prepare,
)
from analysis.attribution import CircuitResult, CircuitSettings
from analysis.errors import NotFound
from analysis.models import LoadedModel
from app.schemas import AttributeRequest, prompt_spec
from app.services.index_readers import IndexReaders
from app.services.model_manager import ModelManager
from app.settings import Settings
from app.store.labels import LabelStore
from app.store.runs import RunStore
from app.store.tables import Run


def label_model(lm: LoadedModel) -> str:
    """Labels belong to the base model, so they follow a neuron into fine-tuned variants."""
    return lm.spec.base or lm.spec.name  # the one rule; label_owner looks the spec up


def circuit_request(body: AttributeRequest) -> CircuitRequest:
    return CircuitRequest(prompt=prompt_spec(body), answer_a=body.answer_a,
                          answer_b=body.answer_b, settings=CircuitSettings.of(body))


def run_payload(run: Run, cached: bool) -> dict[str, Any]:
    return {"run_id": run.id, "cached": cached, "created_at": run.created_at.isoformat(),
            "result": run.result}


def prepared_circuit(lm: LoadedModel, req: CircuitRequest, limits: CircuitLimits,
                     readers: IndexReaders | None) -> PreparedCircuit:
    """The request resolved against the model, with the always-on flags of its complete
    exemplar index (when the readers know one): one rule for the server's runs and the
    CLI's, so a prompt keeps the same circuit from either."""
    known = readers.known_always_on(lm.name, lm.spec.base) if readers is not None else None
    return prepare(lm, req, limits, known)


def compute_or_reuse(lm: LoadedModel, req: CircuitRequest, use_cache: bool,
                     settings: Settings, runs: RunStore, labels: LabelStore,
                     readers: IndexReaders | None = None) -> tuple[Run, bool]:
    """Runs in the model thread: a stored identical run is returned as is. With the
    index readers, a complete exemplar index's always-on flags join the prompt's."""
    prep = prepared_circuit(lm, req, settings.circuit_limits, readers)
    if use_cache and (hit := runs.by_key(prep.key)) is not None:
        return hit, True
    result = analyze(lm, req, settings.circuit_limits, prepared=prep)
    names = labels.many(label_model(lm), [(n.layer, n.neuron) for n in result.nodes])
    for node in result.nodes:
        node.label = names.get((node.layer, node.neuron))
    for neuron in result.neurons:
        neuron.label = names.get((neuron.layer, neuron.neuron))
    run = Run(
        kind="attribution", model=lm.name, model_revision=lm.revision,
        prompt=req.prompt.prompt, answer_a=req.answer_a, answer_b=req.answer_b,
        method=req.settings.method,
        # The prompt settings ride along so a permalink can refill the Analyze form.
        params={**result.params.model_dump(mode="json"),
                "prompt_spec": req.prompt.model_dump(mode="json")},
        cache_key=prep.key if use_cache else None, metric=result.m,
        influence_sum=result.influence_sum, result=result.model_dump(mode="json"),
    )
    return runs.add(run), False


def stored_run(runs: RunStore, run_id: str) -> Run:
    run = runs.get(run_id) if len(run_id) <= 32 else None
    if run is None:
        raise NotFound(f"no run with id {run_id!r}")
    return run


def label_owner(manager: ModelManager, model: str) -> str:
    """Labels are stored under the base model (see label_model), found by name here."""
    try:
        spec = manager.registry.get(model)
    except Exception:  # a run of a model that is no longer registered keeps its name
        return model
    return spec.base or spec.name


def load_result(run: Run, manager: ModelManager, labels: LabelStore) -> CircuitResult:
    """A stored run with today's labels: a label saved after the run shows on it too."""
    result = CircuitResult.model_validate(run.result)
    names = labels.many(label_owner(manager, run.model),
                        [(n.layer, n.neuron) for n in result.nodes])
    for node in result.nodes:
        node.label = names.get((node.layer, node.neuron))
    for total in result.neurons:
        total.label = names.get((total.layer, total.neuron))
    return result


def tau_floor(result: CircuitResult) -> float:
    """The smallest tau that still shows every stored node (the slider's lower end)."""
    if not result.nodes or abs(result.m) < 1e-12:
        return result.params.tau
    lowest = min(abs(n.influence) for n in result.nodes) / abs(result.m)
    return max(0.001, min(1.0, int(lowest * 1000) / 1000))
