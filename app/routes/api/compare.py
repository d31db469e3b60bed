"""Comparisons over JSON: compare a variant with its base, read a stored comparison, and
list the variants with their memory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from analysis.comparison.layer_patching import LayerShare
from app.deps import IndexReadersDep, ManagerDep, RunsDep, SettingsDep
from app.schemas import CompareBody, PatchingBody
from app.services.compare import (
    run_comparison,
    run_patching,
    stored_comparison,
    variant_rows,
)
from app.store.runs import RunStore
from app.store.tables import Run

router = APIRouter(prefix="/api/v1", tags=["compare"])


def _payload(run: Run, runs: RunStore) -> dict[str, Any]:
    return {"comparison_id": run.id, "created_at": run.created_at.isoformat(),
            "base_run": run.params.get("base_run"), "tuned_run": run.params.get("tuned_run"),
            "result": run.result}


@router.post("/compare")
async def compare_api(body: CompareBody, manager: ManagerDep, settings: SettingsDep,
                      runs: RunsDep, readers: IndexReadersDep) -> dict[str, Any]:
    """Run base and variant on one prompt (and a prompt set): predictions, per-neuron
    categories, verdict with reasons, weight changes and layer patching. Both circuits
    are saved as runs (`base_run`, `tuned_run`)."""
    run = await run_in_threadpool(run_comparison, body, manager, settings, runs, readers)
    return _payload(run, runs)


@router.post("/patching")
async def patching_api(body: PatchingBody, manager: ManagerDep,
                       settings: SettingsDep) -> list[LayerShare]:
    """Layer patching between two models of one architecture, without a circuit: per
    layer, the base's m with that layer's MLP output (and, apart, its output residual)
    replaced by the variant's, and the share of m's change that carries. Runs on models
    NDIF hosts too (nothing needs gradients)."""
    return await run_in_threadpool(run_patching, body, manager, settings)


@router.get("/compare/{run_id}")
async def get_comparison(run_id: str, runs: RunsDep) -> dict[str, Any]:
    return _payload(stored_comparison(runs, run_id), runs)


@router.get("/variants")
async def variants_api(manager: ManagerDep) -> dict[str, Any]:
    """Every registered model with its kind (base, full, lora), base, and the memory it
    adds while loaded (a LoRA variant: its adapter matrices only)."""
    return {"models": variant_rows(manager)}
