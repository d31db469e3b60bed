"""The server and its models: health (the resident model, the queue) and the registry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from analysis.models import describe
from app.access import no_token
from app.deps import ManagerDep, SettingsDep

router = APIRouter(prefix="/api/v1", tags=["models"])

@router.get("/health")
@no_token  # monitors read it even when reads are protected
async def health(manager: ManagerDep, settings: SettingsDep) -> dict[str, Any]:
    loaded = [
        {"name": lm.name, "device": lm.device, "dtype": lm.dtype, "revision": lm.revision,
         "memory_mb": round(lm.memory_bytes() / 2**20, 1),
         "load_seconds": round(lm.load_seconds, 2)}
        for lm in manager.loaded()
    ]
    default_loaded = manager.is_loaded(settings.default_model)
    first = next((m for m in loaded if m["name"] == settings.default_model), None)
    return {
        "status": "ok" if default_loaded else ("loading" if manager.loading else "degraded"),
        "model_loaded": default_loaded,
        "default_model": settings.default_model,
        "device": first["device"] if first else None,
        "dtype": first["dtype"] if first else None,
        "loading": manager.loading,
        "last_error": manager.last_error,
        "loaded": loaded,
        "model_queue": manager.queue_status(),
    }


@router.get("/models")
async def models(manager: ManagerDep, settings: SettingsDep) -> dict[str, Any]:
    return {
        "default": settings.default_model,
        "models": [
            {**describe(spec, settings.cache_dir), "loaded": manager.is_loaded(spec.name)}
            for spec in manager.registry.specs()
        ],
    }
