"""Neurons over JSON: what one writes and where it fires, and its label."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from analysis.analyze import describe
from analysis.attribution.logit_lens import check_model_neuron
from analysis.errors import InputError, NotFound
from analysis.models import LoadedModel
from analysis.prompts import PromptSpec
from app.access import computes
from app.deps import LabelsDep, ManagerDep, NeuronMeaningsDep, SettingsDep
from app.schemas import NAME_PATTERN, LabelRequest
from app.services.runs import label_model
from frontend.neurons import neuron_meaning

router = APIRouter(prefix="/api/v1", tags=["neurons"])
Index = Annotated[int, Path(ge=0, le=1_000_000)]


def _existing(lm: LoadedModel, layer: int, neuron: int) -> None:
    """A layer or neuron the model does not have is a path that names nothing: 404."""
    try:
        check_model_neuron(lm.model, layer, neuron)
    except InputError as exc:
        raise NotFound(exc.message, field=exc.field) from exc

@router.get("/neurons/{layer}/{neuron}")
@computes
async def neuron_route(
    layer: Index, neuron: Index, manager: ManagerDep, settings: SettingsDep,
    labels: LabelsDep, meanings: NeuronMeaningsDep,
    model: Annotated[str | None, Query(max_length=64, pattern=NAME_PATTERN)] = None,
    prompt: Annotated[str | None, Query(max_length=4000)] = None,
    chat_template: bool = False,
    system_prompt: Annotated[str | None, Query(max_length=4000)] = None,
    answer_prefix: Annotated[str, Query(max_length=200)] = "",
    top_k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """What a neuron promotes/suppresses (logit lens: only the ranking means anything),
    where it fires in a prompt, its user label, and - once an exemplar index of the model
    (or its base) exists - its top exemplars, quantile samples, activation statistics and
    description (``meaning``; null without an index)."""
    spec = (PromptSpec(prompt=prompt, chat_template=chat_template,
                       system_prompt=system_prompt, answer_prefix=answer_prefix)
            if prompt else None)

    def work(lm: LoadedModel) -> dict[str, Any]:
        _existing(lm, layer, neuron)
        desc = describe(lm, layer, neuron, spec, top_k, settings.circuit_limits)
        label = labels.get(label_model(lm), layer, neuron)
        meaning = meanings.meaning(lm.name, lm.spec.base, layer, neuron, label, neuron_meaning)
        return {**desc.model_dump(mode="json"), "model": lm.name, "label": label,
                "meaning": meaning.to_json() if meaning else None}

    return await manager.run(model or settings.default_model, work)


@router.put("/neurons/{layer}/{neuron}/label")
async def label_route(layer: Index, neuron: Index, body: LabelRequest, manager: ManagerDep,
                      settings: SettingsDep, labels: LabelsDep) -> dict[str, Any]:
    """Save (or, with an empty label, delete) a user's label for a neuron."""
    name = body.model or settings.default_model
    lm = await manager.run(name, lambda lm: lm)
    _existing(lm, layer, neuron)
    labels.set(label_model(lm), layer, neuron, body.label)
    return {"model": label_model(lm), "layer": layer, "neuron": neuron,
            "label": labels.get(label_model(lm), layer, neuron)}
