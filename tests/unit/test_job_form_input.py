"""The Jobs form keeps what the user typed: importing the seeds' YAML (which carries no
target) keeps the prompt, answers and topic words, and checking texts needs no name yet."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.seed_texts import RENIN_TEXTS, SEED_PROMPT, V4_SEED_YAML, V4_TEXTS

TYPED = {"prompt": SEED_PROMPT, "answer_a": " aldosterone", "answer_b": " renin",
         "topic_words": "blood pressure", "base_model": "tiny-llama", "chat_template": "true",
         "answer_prefix": " Answer:"}


def test_importing_yaml_keeps_the_typed_target(client: TestClient) -> None:
    r = client.post("/jobs/import", data={**TYPED, "yaml_text": V4_SEED_YAML})
    assert r.status_code == 200, r.text
    html = r.text
    assert SEED_PROMPT in html  # the target survived the import
    assert 'value=" aldosterone"' in html and 'value=" renin"' in html
    assert 'value="blood pressure"' in html and 'value=" Answer:"' in html
    assert 'id="chat_template" name="chat_template" value="true" checked' in html
    assert V4_TEXTS[0].split("\n")[0] in html  # ...and the YAML's texts came in


def test_checking_texts_needs_no_name(client: TestClient) -> None:
    r = client.post("/jobs/check", data={**TYPED, "name": "",
                                         "texts": [V4_TEXTS[0], RENIN_TEXTS[0]]})
    assert r.status_code == 200, r.text
    assert "findings" in r.text
    # Queueing still needs the name (it names the variant).
    r = client.post("/jobs", data={**TYPED, "name": "", "texts": [V4_TEXTS[0]]})
    assert r.status_code == 422 and 'data-field="name"' in r.text
