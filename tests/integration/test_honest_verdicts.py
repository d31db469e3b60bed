"""Issue 15's done-when on the seed prompt and the embedded SmolLM2: a variant whose
target moves (m crosses zero) while a third token takes the top-1 is reported the same way
- 'improved', never 'corrected' - on the job page, Experiments, Compare and the CLI's
report; the comparison cuts both graphs at one threshold. Plus the shared trained v4
variant (tests/conftest.py) in the seeds' chat format, where the top-1 is a third token
(" The" / end of turn) both before and after: its outcome is the same on every surface
and never 'corrected'.

The first variant is the issue's case built exactly: two unembedding rows of the base
(SmolLM2 ties them to the input embeddings; neither token is in the prompt) are moved
along the prompt's final hidden state so logit(" al") ends 0.5 above logit(" ren") and a
third token 1.0 above both - the reported job's "no -> yes fixed" with " sodium" on top.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from analysis.correction.config import CorrectionTarget, TrainingConfig
from analysis.evaluation import CORRECTED_RULE, EvalItem, evaluate_items
from analysis.models import ModelSpec, embedded_spec, load_model
from analysis.prompts import PromptSpec, format_prompt, in_format
from app.jobs.job_evaluation import evaluate_variant
from app.jobs.job_settings import JobSettings
from app.jobs.runner import _comparison_saver
from app.main import create_app
from app.services.compare import load_comparison, stored_comparison
from app.settings import Settings
from app.store.jobs import EVALUATING, SUCCEEDED, JobStore
from tests.conftest import CACHE_DIR, DEFAULT_MODEL, SEED_PROMPT

pytestmark = pytest.mark.integration

THIRD = " sodium"


def _moved_variant(out: Path) -> Path:
    """The base with " al" lifted to 0.5 over " ren" and a third token 1.0 over both, at
    the last position of the plain seed prompt (see the module docstring)."""
    lm = load_model(embedded_spec(DEFAULT_MODEL).model_copy(update={"dtype": "float32"}),
                    CACHE_DIR)
    tok, model = lm.tokenizer, lm.model
    ids = format_prompt(tok, PromptSpec(prompt=SEED_PROMPT)).input_ids
    al, ren = (tok(w, add_special_tokens=False)["input_ids"][0] for w in (" al", " ren"))
    third = tok(THIRD, add_special_tokens=False)["input_ids"][0]
    assert not {al, ren, third} & set(ids)
    with torch.no_grad():
        # The final hidden state after the norm is what the unembedding reads.
        captured: dict[str, torch.Tensor] = {}
        def keep(_m: object, args: tuple[torch.Tensor, ...], _o: object) -> None:
            captured["h"] = args[0][0, -1].detach()  # returns None: the output stays

        hook = model.lm_head.register_forward_hook(keep)
        logits = model(torch.tensor([ids])).logits[0, -1]
        hook.remove()
        h = captured["h"]
        w = model.lm_head.weight
        top = float(logits.max())
        for token, want in ((al, float(logits[ren]) + 0.5), (third, top + 1.0)):
            w[token] += (want - float(logits[token])) * h / h.dot(h)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory,
               v4_full_variant: Path) -> Iterator[tuple[TestClient, Settings]]:
    root = tmp_path_factory.mktemp("verdicts")
    moved = _moved_variant(root / "moved")
    base = DEFAULT_MODEL
    settings = Settings(
        data_dir=root / "data", cache_dir=CACHE_DIR, load_on_start=False,
        models=[ModelSpec(name="seed-moved", source="local", path=moved, kind="full",
                          base=base, device="cpu"),
                ModelSpec(name="seed-v4", source="local", path=v4_full_variant, kind="full",
                          base=base, device="cpu")],
        jobs=JobSettings(start_worker=False))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c, settings


def _job(client: TestClient, settings: Settings, variant: str, spec: PromptSpec) -> str:
    """A finished job for ``variant``, evaluated by the job runner's own code."""
    sessions = client.app.state.sessions  # type: ignore[attr-defined]
    cfg = TrainingConfig(name=variant, base_model=DEFAULT_MODEL, texts=["x"],
                         target=CorrectionTarget(prompt=SEED_PROMPT, answer_a=" aldosterone",
                                                 answer_b=" renin",
                                                 **spec.model_dump(exclude={"prompt"})))
    by_name = {s.name: s for s in settings.all_models()}
    evaluation = evaluate_variant(cfg, by_name[DEFAULT_MODEL], by_name[variant], CACHE_DIR,
                                  print, lambda: None,
                                  _comparison_saver(sessions, DEFAULT_MODEL, variant))
    store = JobStore(sessions)
    job = store.create(name=variant, base_model=DEFAULT_MODEL,
                       config=cfg.model_dump(mode="json"), target_key=variant)
    store.claim_next("test")
    store.transition(job.id, EVALUATING)
    store.transition(job.id, SUCCEEDED, variant=variant,
                     evaluation=evaluation.model_dump(mode="json"))
    return job.id


def _surfaces(client: TestClient, job_id: str, target_key: str) -> dict[str, str]:
    """The target's outcome word as each surface prints it."""
    status = client.get(f"/jobs/{job_id}/status").text
    experiments = client.get(f"/experiments?target={target_key}").text
    comparison_id = re.search(r'id="eval-comparison" href="/compare/([^"]+)"', status)
    assert comparison_id, status
    compare = client.get(f"/compare/{comparison_id.group(1)}").text
    runs = client.app.state.runs  # type: ignore[attr-defined]
    report = load_comparison(stored_comparison(runs, comparison_id.group(1)), runs).summary()

    def word(html: str, where: str) -> str:
        found = re.search(where + r'.*?class="outcome outcome-[^"]*"[^>]*>([^<]+)<', html,
                          re.S)
        assert found, html[:2000]
        return found.group(1)

    cli = re.search(r"^  target\s.*?(CORRECTED|STILL RIGHT|BROKEN|IMPROVED|NO CHANGE|WORSE)",
                    report, re.M)
    assert cli, report
    assert CORRECTED_RULE in report and "Corrected = the expected answer" in status
    assert "same cut on both sides" in report
    return {"job": word(status, 'id="eval-target-outcome"'),
            "experiments": word(experiments, 'class="experiment-outcome"'),
            "compare": word(compare, 'id="target-outcome"'),
            "cli": cli.group(1).lower()}


def test_a_moved_target_under_a_third_top1_is_improved_everywhere(app_client) -> None:  # type: ignore[no-untyped-def]
    client, settings = app_client
    spec = PromptSpec(prompt=SEED_PROMPT)
    job_id = _job(client, settings, "seed-moved", spec)
    seen = _surfaces(client, job_id, "seed-moved")
    print("surfaces", seen)
    assert set(seen.values()) == {"improved"}, seen
    status = client.get(f"/jobs/{job_id}/status").text
    assert repr(THIRD)[1:-1] in status  # the third token is shown as the new top-1
    # The numbers behind it: m crossed zero, the top-1 is neither answer.
    base = load_model(embedded_spec(DEFAULT_MODEL), CACHE_DIR)
    moved = load_model(next(s for s in settings.all_models() if s.name == "seed-moved"),
                       CACHE_DIR)
    row = evaluate_items(base, moved, [EvalItem(kind="target", prompt=SEED_PROMPT,
                                                expected=" aldosterone", wrong=" renin")])[0]
    print(f"moved: m {row.before.m:+.3f} -> {row.after.m:+.3f}, top-1 "
          f"{row.before.top1.text!r} -> {row.after.top1.text!r}")
    assert row.before.m < 0 < row.after.m
    assert row.after.top1.text == THIRD[:len(row.after.top1.text)]
    assert row.outcome == "improved"


def test_the_trained_v4_in_the_chat_format_reads_the_same_everywhere(app_client) -> None:  # type: ignore[no-untyped-def]
    client, settings = app_client
    spec = in_format(PromptSpec(prompt=SEED_PROMPT), "seeds_chat")
    job_id = _job(client, settings, "seed-v4", spec)
    seen = _surfaces(client, job_id, "seed-v4")
    print("surfaces", seen)
    assert len(set(seen.values())) == 1 and "corrected" not in seen.values(), seen
    compare_id = re.search(r'id="eval-comparison" href="/compare/([^"]+)"',
                           client.get(f"/jobs/{job_id}/status").text)
    assert compare_id
    page = client.get(f"/compare/{compare_id.group(1)}").text
    assert 'id="compare-threshold"' in page and "same cut on both sides" in page
