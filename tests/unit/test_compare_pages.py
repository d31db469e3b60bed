"""The Compare page, its API and exports on a tiny 4-layer model: a full variant registered
by the operator, a LoRA variant registered at run time in the database (as a finished
job would), and the mistakes a user can make."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from analysis.models import ModelSpec
from app.jobs.job_settings import JobSettings
from app.main import create_app
from app.settings import Settings
from tests.tiny_checkpoints import save_tiny_checkpoint

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
BODY = {"base": "tiny4", "variant": "tiny4-full", "prompt": PROMPT,
        "answer_a": " aldosterone", "answer_b": " renin", "tau": 0.05, "max_nodes": 60}
FORM = {**BODY, "tau": "0.05", "max_nodes": "60",
        "prompt_set": "generalization | The hormone made by the adrenal cortex is | "
                      "aldosterone | renin\nside_effect | The capital of France is | Paris"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models cache with a base, a full fine-tune (one layer edited) and a LoRA."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("models")
    base = save_tiny_checkpoint("llama", root / "tiny4", seed=2, layers=4, strong=True)
    full = root / "variants" / "tiny4-full"
    shutil.copytree(base, full)
    model = AutoModelForCausalLM.from_pretrained(full)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[:, :8] *= 2.5
    model.save_pretrained(full)
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, lora_alpha=4,
                                                           target_modules=["up_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    lora.save_pretrained(root / "variants" / "tiny4-lora")
    return root


@pytest.fixture(scope="module")
def client(cache: Path, tiny_dirs: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        jobs=JobSettings(start_worker=False),  # these tests queue no jobs
        data_dir=tmp_path_factory.mktemp("data"), cache_dir=cache, include_embedded=False,
        default_model="tiny4",
        models=[ModelSpec(name="tiny4", source="local", path=Path("tiny4"), device="cpu"),
                ModelSpec(name="tiny4-full", source="local", path=Path("variants/tiny4-full"),
                          kind="full", base="tiny4", device="cpu"),
                ModelSpec(name="tiny-gemma", source="local", path=tiny_dirs["gemma3"],
                          device="cpu")],
    )
    app = create_app(settings)
    # Registered after start-up, in the database, as a finished correction job does.
    app.state.variants.add("tiny4-lora", "lora", "tiny4", cache / "variants" / "tiny4-lora")
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def figures(html: str) -> dict[str, dict]:
    found = re.findall(r'<script type="application/json" class="plotly-figure" '
                       r'data-target="([\w-]+)">(.*?)</script>', html, re.S)
    return {target: json.loads(text) for target, text in found}


def test_api_compares_a_full_variant(client: TestClient) -> None:
    r = client.post("/api/v1/compare", json=BODY)
    assert r.status_code == 200, r.text
    body = r.json()
    result = body["result"]
    assert result["weight_kind"] == "full"
    assert result["weight_changes"][0]["layer"] == 1
    assert result["weight_changes"][0]["module"] == "mlp.down_proj"
    assert [p["layer"] for p in result["patching"]] == [0, 1, 2, 3]
    assert result["patching"][0]["mlp_share"] == pytest.approx(0.0, abs=1e-4)
    assert result["patching"][1]["mlp_share"] == pytest.approx(1.0, abs=1e-4)
    assert result["comparison"]["verdict"] in ("pathway removed", "pathway weakened",
                                               "compensated", "diffuse", "no change",
                                               "made worse")
    assert result["comparison"]["reasons"]
    assert result["base"]["m"] != result["tuned"]["m"]
    for key, model in (("base_run", "tiny4"), ("tuned_run", "tiny4-full")):
        run = client.get(f"/api/v1/runs/{body[key]}").json()
        assert run["result"]["model_name"] == model
    again = client.get(f"/api/v1/compare/{body['comparison_id']}").json()
    assert again["result"]["comparison"] == result["comparison"]


def test_compare_page_shows_everything_and_reopens(client: TestClient) -> None:
    page = client.get("/compare?run=&base=tiny4&variant=tiny4-full")
    assert page.status_code == 200 and 'id="compare-form"' in page.text
    r = client.post("/compare/run", data=FORM)
    assert r.status_code == 200, r.text
    html = r.text
    cid = r.headers["HX-Push-Url"].rsplit("/", 1)[1]
    figs = figures(html)
    assert {"graph-base", "graph-tuned", "graph-diff", "weights-plot",
            "patching-plot"} <= set(figs)
    stored = client.get(f"/api/v1/compare/{cid}").json()["result"]
    assert html.count('class="sort-row') == len(stored["comparison"]["neurons"])
    assert html.count('<tr class="kind-') == 3  # target + the two lines of the set
    assert stored["comparison"]["verdict"] in html
    # Same layout: a node present in both graphs sits at the same x in each.
    xs = [{(round(x, 4), y) for t in figs[g]["data"] if t.get("name", "").startswith("towards")
           for x, y in zip(t["x"], t["y"], strict=True)} for g in ("graph-base", "graph-tuned")]
    assert xs[0] and xs[1]
    assert xs[0] & xs[1], "shared nodes land on the same spot"

    permalink = client.get(f"/compare/{cid}")
    assert permalink.status_code == 200
    assert 'id="verdict"' in permalink.text and "The capital of France is" in permalink.text
    data = client.get(f"/compare/{cid}/export/json").json()
    assert data["comparison"]["verdict"] == stored["comparison"]["verdict"]
    rows = list(csv.DictReader(io.StringIO(client.get(
        f"/compare/{cid}/export/neurons.csv").text)))
    assert len(rows) == len(stored["comparison"]["neurons"])
    prompts = list(csv.DictReader(io.StringIO(client.get(
        f"/compare/{cid}/export/prompts.csv").text)))
    assert [p["kind"] for p in prompts] == ["target", "generalization", "side_effect"]
    assert prompts[2]["expected"] == " Paris"
    assert client.get(f"/compare/{cid}/export/nope").status_code == 404


def test_lora_variant_from_the_database(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/api/v1/variants").json()["models"]}
    assert models["tiny4-lora"]["kind"] == "lora" and models["tiny4-lora"]["base"] == "tiny4"
    r = client.post("/api/v1/compare", json={**BODY, "variant": "tiny4-lora"})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["weight_kind"] == "lora"
    assert {w["module"] for w in result["weight_changes"]} == {"mlp.up_proj"}
    assert result["tuned"]["memory_mb"] < result["base"]["memory_mb"]
    models = {m["name"]: m for m in client.get("/api/v1/variants").json()["models"]}
    assert models["tiny4-lora"]["loaded"] and models["tiny4-lora"]["memory_mb"] is not None
    # The base computes the base again after the variant ran (the overlay is detached).
    plain = client.post("/api/v1/predict", json={"model": "tiny4", "prompt": PROMPT,
                                                  "answers": [" aldosterone"]}).json()
    assert plain["answers"][0]["prob"] == pytest.approx(result["base"]["p_a"], rel=1e-5)


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"variant": "tiny4"}, "variant", "itself"),
    ({"variant": "nope"}, "variant", "unknown model"),
    ({"base": "tiny-gemma"}, "variant", "architecture"),
    ({"base": "tiny-gemma", "variant": "tiny4-lora"}, "base", "only be compared with"),
    ({"base": "tiny4-lora", "variant": "tiny4-full"}, "base", "LoRA adapter"),
])
def test_bad_pairs_are_clear_errors(client: TestClient, change: dict, field: str,
                                    message: str) -> None:
    r = client.post("/api/v1/compare", json={**BODY, **change})
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert error["field"] == field and message in error["message"]


@pytest.mark.parametrize(("change", "field"), [
    ({"prompt_set": "generalization | only two"}, "prompt_set"),
    ({"prompt_set": "sideways | p | a | b"}, "prompt_set"),
    ({"answer_a": ""}, "answer_a"),
    ({"variant": "tiny4"}, "variant"),
    ({"tau": "0"}, "tau"),
])
def test_form_errors_name_their_field(client: TestClient, change: dict, field: str) -> None:
    r = client.post("/compare/run", data={**FORM, **change})
    assert 400 <= r.status_code < 500, r.text
    assert f'data-field="{field}' in r.text, r.text


def test_unknown_comparison_is_404(client: TestClient) -> None:
    assert client.get("/compare/doesnotexist").status_code == 404
    assert client.get("/api/v1/compare/doesnotexist").status_code == 404


def test_cli_compare_prints_the_verdict_and_writes_exports(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from typer.testing import CliRunner

    from app.cli import cli

    config = tmp_path / "circuitlab.yaml"
    config.write_text(yaml.safe_dump({
        "include_embedded": False, "default_model": "tiny4", "cache_dir": str(cache),
        "data_dir": str(tmp_path / "data"),
        "models": [{"name": "tiny4", "source": "local", "path": "tiny4", "device": "cpu"},
                   {"name": "tiny4-full", "source": "local", "path": "variants/tiny4-full",
                    "kind": "full", "base": "tiny4", "device": "cpu"}]}))
    monkeypatch.setenv("CIRCUITLAB_CONFIG", str(config))
    sets = tmp_path / "set.txt"
    sets.write_text("side_effect | The capital of France is | Paris\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compare", PROMPT, "--base", "tiny4", "--variant",
                                 "tiny4-full", "--contrastive", " aldosterone", " renin",
                                 "--tau", "0.05", "--prompt-set", str(sets), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "verdict:" in r.output and "largest weight changes (full): L1 mlp.down_proj" \
        in r.output
    saved = json.loads((out / "comparison.json").read_text())
    assert len(saved["prompts"]) == 2
    assert (out / "neurons.csv").read_text().startswith("neuron,layer")
    bad = CliRunner().invoke(cli, ["compare", PROMPT, "--base", "tiny4", "--variant",
                                   "tiny4", "--contrastive", " aldosterone", " renin"])
    assert bad.exit_code == 2 and "itself" in bad.output


@pytest.mark.parametrize("band", ["0.0001", "50"])
def test_the_verdict_on_the_page_agrees_with_the_delta_m_it_shows(client: TestClient,
                                                                   band: str) -> None:
    """Issue 21.1: the verdict, its 'decided by' line and the Δm cell obey one band."""
    import html as html_lib

    page = client.post("/compare/run", data={**FORM, "min_delta_m": band}).text
    verdict = re.search(r'id="verdict">.*?<div class="v">(.*?)</div>', page, re.S).group(1)
    decided = html_lib.unescape(re.search(r'id="verdict-decided">(.*?)</li>', page,
                                          re.S).group(1))
    row = re.search(r"<td>m = logit\(A\).*?</tr>", page, re.S).group(0)
    delta = float(re.findall(r"<td[^>]*>([+-][0-9.]+)</td>", row)[-1])
    assert verdict in decided
    if abs(delta) <= float(band):
        assert verdict == "no change"
    else:
        assert verdict != "no change"
        assert verdict == ("made worse" if delta < 0 else verdict)
    # The prompts' outcomes use the same band: the target row's word agrees with the verdict.
    target = re.search(r'id="target-outcome">(.*?)</tr>', page, re.S).group(1)
    if verdict == "no change":
        assert "no change" in target or "corrected" in target or "still right" in target \
            or "broken" in target


def test_the_base_influence_sum_is_one_number_on_the_run_page_and_in_compare(
        client: TestClient) -> None:
    """Issue 21.4: the base's sum changed with the variant it was compared to; it is the
    base circuit's kept-node sum, the same as a run of the base with the same settings,
    and every page labels what it sums."""
    run = client.post("/api/v1/attribute", json={
        k: v for k, v in {**BODY, "model": "tiny4"}.items() if k not in ("base", "variant")})
    assert run.status_code == 200, run.text
    own = run.json()["result"]
    own_sum = sum(n["influence"] for n in own["nodes"])
    for variant in ("tiny4-full", "tiny4-lora"):
        result = client.post("/api/v1/compare", json={**BODY, "variant": variant}).json()
        base = result["result"]["base"]
        assert base["n_nodes"] == len(own["nodes"])
        assert base["influence_sum"] == pytest.approx(own_sum, abs=1e-6)
    page = client.get(f"/runs/{run.json()['run_id']}").text
    assert f"influence sum of the {len(own['nodes'])} kept nodes" in page
    assert f"{own_sum:+.3f}" in page.split('id="influence-sum"')[1][:80]
    total = own["completeness"]["influence_sum"]
    assert f"every neuron at every position: {total:+.3f}" in page
    compare = client.post("/compare/run", data=FORM).text
    row = compare.split('id="influence-sum-row"')[1].split("</tr>")[0]
    assert "influence sum of the kept nodes" in row and f"{own_sum:+.3f}" in row


def test_three_comparisons_of_one_base_store_one_base_run(client: TestClient) -> None:
    """Issue 21.8: each comparison stored its base circuit again, three rows with one cache
    key. A circuit run is stored with its cache key and an identical one is the stored run."""
    from sqlalchemy import select

    from app.store.tables import Run

    bodies = [client.post("/api/v1/compare", json={**BODY, "variant": v}).json()
              for v in ("tiny4-full", "tiny4-lora", "tiny4-full")]
    assert len({b["comparison_id"] for b in bodies}) == 3  # three comparisons
    assert len({b["base_run"] for b in bodies}) == 1
    assert bodies[0]["tuned_run"] == bodies[2]["tuned_run"] != bodies[1]["tuned_run"]
    base = client.get(f"/api/v1/runs/{bodies[0]['base_run']}").json()["result"]
    key = base["cache_key"]
    assert key
    runs = client.app.state.runs  # type: ignore[attr-defined]
    with runs.sessions() as s:
        stored = [r for r in s.scalars(select(Run).where(Run.kind == "attribution"))
                  if r.result.get("cache_key") == key]
    assert [(r.id, r.cache_key) for r in stored] == [(bodies[0]["base_run"], key)]
