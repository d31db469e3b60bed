"""Predictions and screening over JSON: thin routes that validate, then call analysis/ on
the resident model."""

from __future__ import annotations

from fastapi import APIRouter

from analysis.predict import Prediction, predict
from analysis.screening import ScreenOptions, ScreenResult, screen
from app.deps import ManagerDep, SettingsDep
from app.schemas import PredictRequest, ScreenRequest, prompt_spec

router = APIRouter(prefix="/api/v1", tags=["predict"])


@router.post("/predict")
async def predict_route(body: PredictRequest, manager: ManagerDep,
                        settings: SettingsDep) -> Prediction:
    spec = prompt_spec(body)
    return await manager.run(
        body.model or settings.default_model,
        lambda lm: predict(lm, spec, body.answers, body.top_k, settings.limits),
    )


@router.post("/screen")
async def screen_route(body: ScreenRequest, manager: ManagerDep,
                       settings: SettingsDep) -> ScreenResult:
    settings.limits.check_batch(len(body.items))
    options = ScreenOptions(top_k=body.top_k, skip_filler=body.skip_filler,
                            filler_rule=body.filler_rule, chat_template=body.chat_template,
                            system_prompt=body.system_prompt,
                            answer_prefix=body.answer_prefix)
    if body.filler_tokens is not None:  # the user's own list overrides the model rule
        options.filler_tokens = body.filler_tokens
        options.filler_rule = "list"
    return await manager.run(
        body.model or settings.default_model,
        lambda lm: screen(lm, body.items, options, settings.limits),
    )
