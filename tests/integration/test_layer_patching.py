"""Circuit-free layer patching (POST /api/v1/patching) on the real default model and the
seeds' v4 correction: the numbers agree with plain forward hooks written here, and bad
pairs are refused before any model work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from analysis.models import ModelSpec, load_model
from analysis.prompts import PromptSpec, format_prompt
from app.jobs.job_settings import JobSettings
from app.main import create_app
from app.settings import Settings
from tests.conftest import CACHE_DIR, DEFAULT_MODEL, GEMMA, SEED_PROMPT

LAYER = 20


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory,
           v4_full_variant: Path) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("patching")
    settings = Settings(
        data_dir=root / "data", cache_dir=CACHE_DIR, load_on_start=False,
        models=[ModelSpec(name="seed-v4", source="local", path=v4_full_variant, kind="full",
                          base=DEFAULT_MODEL, device="cpu")],
        jobs=JobSettings(start_worker=False))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _hooked_m(base: torch.nn.Module, ids: list[int], module_of, value: torch.Tensor,  # type: ignore[no-untyped-def]
              a: int, b: int) -> float:
    """m of the base with one module's output replaced, by a plain forward hook."""
    def replace(module, args, output):  # type: ignore[no-untyped-def]
        if isinstance(output, tuple):
            return (value.unsqueeze(0), *output[1:])
        return value.unsqueeze(0)

    handle = module_of(base).register_forward_hook(replace)
    try:
        with torch.no_grad():
            logits = base(torch.tensor([ids])).logits[0, -1]
    finally:
        handle.remove()
    return float(logits[a] - logits[b])


def _recorded(model: torch.nn.Module, ids: list[int], module_of) -> torch.Tensor:  # type: ignore[no-untyped-def]
    seen: list[torch.Tensor] = []

    def keep(module, args, output):  # type: ignore[no-untyped-def]
        seen.append((output[0] if isinstance(output, tuple) else output)[0].clone())

    handle = module_of(model).register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        handle.remove()
    return seen[0]


def test_layer_patching_matches_plain_hooks(client: TestClient, embedded_lm,  # type: ignore[no-untyped-def]
                                            v4_full_variant: Path) -> None:
    resp = client.post("/api/v1/patching", json={
        "base": DEFAULT_MODEL, "variant": "seed-v4", "prompt": SEED_PROMPT,
        "answer_a": " aldosterone", "answer_b": " renin"})
    assert resp.status_code == 200, resp.text
    rows = resp.json()
    assert [r["layer"] for r in rows] == list(range(30))

    variant = load_model(ModelSpec(name="v4", source="local", path=v4_full_variant,
                                   device="cpu"), CACHE_DIR).model
    base = embedded_lm.model
    tok = embedded_lm.tokenizer
    ids = list(format_prompt(tok, PromptSpec(prompt=SEED_PROMPT)).input_ids)
    a, b = (tok.encode(" aldosterone")[0], tok.encode(" renin")[0])
    for where, module_of in (("mlp", lambda m: m.model.layers[LAYER].mlp),
                             ("residual", lambda m: m.model.layers[LAYER])):
        ref = _hooked_m(base, ids, module_of, _recorded(variant, ids, module_of), a, b)
        assert rows[LAYER][f"m_{where}"] == pytest.approx(ref, abs=2e-3), where
    # The v4 tune moved m, so shares are defined; patching the whole last residual
    # stream carries nearly all of it (only the final norm's own update is left out).
    assert rows[-1]["residual_share"] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"base": DEFAULT_MODEL, "variant": DEFAULT_MODEL}, 422, "variant"),
    ({"base": DEFAULT_MODEL, "variant": "no-such-model"}, 404, "variant"),
    ({"base": DEFAULT_MODEL, "variant": GEMMA}, 422, "variant"),
])
def test_pairs_that_cannot_be_patched_are_refused(client: TestClient, body: dict[str, str],
                                                  status: int, field: str) -> None:
    resp = client.post("/api/v1/patching", json={
        **body, "prompt": SEED_PROMPT, "answer_a": " aldosterone", "answer_b": " renin"})
    assert resp.status_code == status, resp.text
    assert field in resp.text
