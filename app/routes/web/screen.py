"""The Screening page: a prompt list in (pasted or uploaded), a results table out, and a
link from every target case to the Analyze page with its answers filled in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse

from analysis.errors import InputError, LimitExceeded
from analysis.screening import FillerRule, ScreenOptions, parse_screen_json, screen
from app.deps import ManagerDep, SettingsDep, templates_of
from frontend.views import analyze_link

router = APIRouter(include_in_schema=False)

MAX_UPLOAD_BYTES = 2_000_000
EXAMPLE = """[
  {"prompt": "The primary hormone involved in the regulation of blood pressure and volume is",
   "answer": "aldosterone"},
  {"prompt": "The capital of France is", "answer": "Paris"}
]"""


@router.get("/screen", response_class=HTMLResponse)
async def screen_page(request: Request, manager: ManagerDep,
                      settings: SettingsDep) -> HTMLResponse:
    return templates_of(request).TemplateResponse(request, "screen.html", {
        "models": manager.registry.names(), "default_model": settings.default_model,
        "example": EXAMPLE, "limits": settings.limits})


@router.post("/screen/run", response_class=HTMLResponse)
async def screen_run(
    request: Request, manager: ManagerDep, settings: SettingsDep,
    items_json: Annotated[str, Form(max_length=MAX_UPLOAD_BYTES)] = "",
    upload: Annotated[UploadFile | None, File()] = None,
    model: Annotated[str, Form(max_length=64)] = "",
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
    skip_filler: Annotated[bool, Form()] = False,
    filler_rule: Annotated[FillerRule, Form()] = "model",
    chat_template: Annotated[bool, Form()] = False,
    system_prompt: Annotated[str, Form(max_length=4000)] = "",
    answer_prefix: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    """Screen a pasted or uploaded list; an uploaded file wins over the text box."""
    text = items_json
    field = "items_json"
    if upload is not None and upload.filename:
        raw = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(raw) > MAX_UPLOAD_BYTES:
            raise LimitExceeded(f"the file is over {MAX_UPLOAD_BYTES // 1_000_000} MB",
                                field="upload")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError("the file is not UTF-8 text; upload the JSON prompt list",
                             field="upload") from exc
        field = "upload"
    if not text.strip():
        raise InputError("paste a JSON prompt list or choose a file", field="items_json")
    try:
        items = parse_screen_json(text)
    except InputError as exc:
        raise InputError(exc.message, field=field) from exc
    options = ScreenOptions(top_k=top_k, skip_filler=skip_filler, filler_rule=filler_rule,
                            chat_template=chat_template,
                            system_prompt=system_prompt, answer_prefix=answer_prefix)
    name = model or settings.default_model
    result = await manager.run(name, lambda lm: screen(lm, items, options, settings.limits))
    # A is the whole expected answer (its first token is what m contrasts; the whole
    # answer's probability is shown beside it); B is the wrong top-1 token.
    links = [analyze_link(r.prompt, r.answer_emitted or r.answer_token, r.top1.text,
                          answer_prefix=answer_prefix, chat_template=chat_template,
                          system_prompt=system_prompt if chat_template else None)
             for r in result.rows]
    return templates_of(request).TemplateResponse(request, "_screen_results.html", {
        "result": result, "links": links})
