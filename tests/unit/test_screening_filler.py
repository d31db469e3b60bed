"""The filler rule asks the model: a top token is filler - a lead-in - only when the model,
with it appended, goes on to the *expected* answer - so the same token is filler in one
prompt and the (clearly wrong) answer in another. A token after which the model goes on to
a wrong candidate (" cell" -> " membrane" after "The powerhouse of the cell is the") is
the start of a wrong answer, not filler. Every token skipped - above the top-1 or not
counted in the expected answer's rank - is listed with its reason.

The model is a tiny Llama made into a bigram model by hand: attention and MLP outputs are
zeroed, so the last position's residual is its token's embedding, and the unembedding is
set so that each of a few tokens is followed by chosen next tokens with chosen logits.
What follows a prompt then depends only on its last token, and we know exactly what the
model does next after any appended token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis.models import LoadedModel, ModelSpec, load_model
from analysis.screening import ScreenItem, ScreenOptions, screen

# last token -> {next token: logit}; every other next token gets logit 0.
BIGRAMS = {
    " is": {" a": 6.0, " dopamine": 4.0},
    " a": {" dopamine": 6.0},
    " in": {" a": 6.0, " constipation": 4.0, " dopamine": -6.0},
    " of": {" the": 6.0, " hormone": 4.0, " dopamine": 3.0},
    " the": {" hormone": 6.0},
    " an": {" hormone": 6.0, " a": 5.0, " dopamine": 4.0},
}
LEAD_IN = ScreenItem(prompt="The neurotransmitter associated with reward is",
                     answer="dopamine")          # " a" -> " dopamine": a lead-in
ANSWER = ScreenItem(prompt="The side effect seen in", answer="constipation")
# " a" -> " dopamine", which is not a candidate after " in": " a" is the model's answer.
CANDIDATE = ScreenItem(prompt="The hormone of", answer="dopamine")
# " the" -> " hormone", a wrong candidate the model had after " of": the start of a wrong
# answer (the powerhouse case), not a lead-in.
BELOW = ScreenItem(prompt="The reward is signalled by an", answer="dopamine")
# top-1 " hormone" (wrong); " a" at rank 2 -> " dopamine" is a lead-in ranked below the
# top-1 but above the answer: not counted in its rank, so it must be listed too.


@pytest.fixture(scope="module")
def bigram(tiny_dirs: dict[str, Path]) -> LoadedModel:
    lm = load_model(ModelSpec(name="tiny-bigram", source="local", path=tiny_dirs["llama"],
                              device="cpu"), tiny_dirs["llama"].parent)
    tok, model = lm.tokenizer, lm.model
    ids = {w: tok(w, add_special_tokens=False)["input_ids"] for w in
           {w for row in BIGRAMS.values() for w in row} | set(BIGRAMS)}
    assert all(len(v) == 1 for v in ids.values()), ids
    one = {w: v[0] for w, v in ids.items()}
    hidden = model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.zero_()
        head.zero_()
        for slot, (last, nexts) in enumerate(BIGRAMS.items()):
            emb[one[last], slot] = 1.0  # RMSNorm makes this sqrt(hidden) at slot
            for word, logit in nexts.items():
                head[one[word], slot] = logit / hidden ** 0.5
    return lm


def _row(lm: LoadedModel, item: ScreenItem, **options: object):  # type: ignore[no-untyped-def]
    options.setdefault("top_k", 5)
    return screen(lm, [item], ScreenOptions(**options)).rows[0]  # type: ignore[arg-type]


def test_the_bigram_model_does_what_the_table_says(bigram: LoadedModel) -> None:
    row = _row(bigram, ANSWER, skip_filler=False)
    assert [t.text for t in row.top[:2]] == [" a", " constipation"]
    assert row.top[0].logit == pytest.approx(6.0, abs=1e-3)


def test_a_lead_in_to_the_expected_answer_is_filler(bigram: LoadedModel) -> None:
    row = _row(bigram, LEAD_IN)
    assert [s.text for s in row.skipped] == [" a"]
    assert "followed by ' dopamine'" in row.skip_reasons[0]
    assert "expected answer" in row.skip_reasons[0]
    assert row.top1.text == " dopamine" and not row.wrong and not row.target


def test_the_same_token_is_the_answer_where_the_model_stops_there(bigram: LoadedModel) -> None:
    row = _row(bigram, ANSWER)
    assert row.skipped == []
    assert row.top1.text == " a"  # a clearly wrong answer, not filler
    assert row.top1_reason is not None and "an answer" in row.top1_reason
    assert row.wrong and row.target and row.rank_excluding_filler == 2


def test_a_token_leading_to_a_wrong_candidate_is_the_answer_not_a_lead_in(
        bigram: LoadedModel) -> None:
    # The powerhouse case: the old rule skipped " the" because the model goes on to
    # " hormone", one of its own (wrong) candidates, and so counted the answer at rank 2.
    row = _row(bigram, CANDIDATE)
    assert row.skipped == [] and row.skip_reasons == []
    assert row.top1.text == " the" and row.wrong
    assert row.top1_reason is not None and "' hormone'" in row.top1_reason
    assert "not the expected answer" in row.top1_reason
    assert (row.correct_rank, row.rank_excluding_filler) == (3, 3)
    narrow = screen(bigram, [CANDIDATE], ScreenOptions(top_k=2)).rows[0]
    assert not narrow.target  # raw rank 3 is outside the top-2: no hidden discount


def test_every_token_not_counted_in_the_rank_is_listed_with_its_reason(
        bigram: LoadedModel) -> None:
    row = _row(bigram, BELOW, top_k=2)
    assert row.top1.text == " hormone" and row.wrong
    assert (row.correct_rank, row.rank_excluding_filler) == (3, 2)
    assert row.target
    # " a" is skipped in the rank although it sits below the top-1: it is listed.
    assert [s.text for s in row.skipped] == [" a"]
    assert len(row.skip_reasons) == 1
    assert "followed by ' dopamine'" in row.skip_reasons[0]
    assert "expected answer" in row.skip_reasons[0]
    assert "below the top-1" in row.skip_reasons[0]


def test_the_fixed_list_stays_as_an_override_and_hides_the_target(bigram: LoadedModel) -> None:
    # The list skips " a" everywhere: the target case in ANSWER disappears - the reason
    # the default asks the model.
    listed = _row(bigram, ANSWER, filler_rule="list")
    assert [s.text for s in listed.skipped] == [" a"]
    assert listed.skip_reasons == ["' a' is on the filler list"]
    assert not listed.target
    result = screen(bigram, [ANSWER], ScreenOptions(filler_rule="list"))
    assert "fixed list" in result.filler_text
    assert "model" in screen(bigram, [ANSWER]).filler_text


def test_the_page_and_the_api_list_every_skip_with_its_reason(
        bigram: LoadedModel, tmp_path: Path) -> None:
    """The screening page promises every skipped token with its reason: the one below the
    top-1 that the rank leaves out is shown there and in the API, served from disk."""
    import json

    from fastapi.testclient import TestClient

    from app.jobs.job_settings import JobSettings
    from app.main import create_app
    from app.settings import Settings

    saved = tmp_path / "bigram"
    bigram.model.save_pretrained(saved)
    bigram.tokenizer.save_pretrained(saved)
    settings = Settings(jobs=JobSettings(start_worker=False), data_dir=tmp_path / "data",
                        include_embedded=False, default_model="tiny-bigram",
                        models=[ModelSpec(name="tiny-bigram", source="local", path=saved,
                                          device="cpu")])
    items = [BELOW.model_dump()]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        api = client.post("/api/v1/screen", json={"items": items, "top_k": 2})
        assert api.status_code == 200, api.text
        row = api.json()["rows"][0]
        assert [s["text"] for s in row["skipped"]] == [" a"]
        assert "below the top-1" in row["skip_reasons"][0]
        page = client.post("/screen/run", data={"items_json": json.dumps(items), "top_k": "2",
                                                "skip_filler": "true"})
        assert page.status_code == 200, page.text
        assert 'class="note skipped"' in page.text
        assert "below the top-1: not counted in the expected answer&#39;s rank" in page.text
