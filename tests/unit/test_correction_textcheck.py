"""The text check: the seeds' failed texts are flagged, their successful v4 texts pass."""

from __future__ import annotations

import pytest

from analysis.correction.textcheck import check_texts, suggest_topic_words
from analysis.errors import InputError
from tests.seed_texts import (
    CONTROL_A_TEXTS,
    INSULIN_TEXTS,
    RENIN_TEXTS,
    SEED_PROMPT,
    V1_TEXT,
    V2_TEXT,
    V3_TEXT,
    V4_TEXTS,
)

ANSWERS = dict(wrong_answer=" renin", correct_answer=" aldosterone")
SUGGESTED = suggest_topic_words(SEED_PROMPT, [" aldosterone", " renin"])


def test_suggestion_for_the_seed_prompt() -> None:
    assert SUGGESTED == ["blood pressure", "regulation", "volume"]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("A common side effect of opioid analgesics is", ["opioid analgesics"]),
        ("The neurotransmitter associated with reward is", ["reward"]),
        ("The primary hormone regulating blood pressure is", ["blood pressure"]),
        ("Ground-glass hepatocytes is characteristic of", ["ground-glass hepatocytes"]),
    ],
)
def test_suggestions_drop_scaffolding_and_the_answer_class(
    prompt: str, expected: list[str]
) -> None:
    assert suggest_topic_words(prompt) == expected


def test_suggestions_leave_out_the_answers() -> None:
    words = suggest_topic_words("Aldosterone is secreted by the adrenal cortex in", ["cortex"])
    assert "aldosterone" in words and not any("cortex" in w for w in words)


@pytest.mark.parametrize("topics", [["blood pressure"], SUGGESTED])
def test_the_v4_texts_pass(topics: list[str]) -> None:
    findings = check_texts(V4_TEXTS, topic_words=topics, wrong_token_forms=[" Ren"], **ANSWERS)
    assert [f.index for f in findings] == [0, 1, 2, 3]
    assert all(f.ok for f in findings), [f.why for f in findings]
    # The correct answer is found (and is fine on its own): v4 names aldosterone throughout.
    assert all(any(m.kind == "correct" for m in f.matches) for f in findings)


def test_the_renin_texts_are_flagged_with_the_words() -> None:
    findings = check_texts(RENIN_TEXTS, topic_words=SUGGESTED, wrong_token_forms=[" Ren"],
                           **ANSWERS)
    assert all(f.mentions_wrong for f in findings)
    for f, text in zip(findings, RENIN_TEXTS, strict=True):
        wrong = [m for m in f.matches if m.kind == "wrong"]
        assert wrong
        for m in wrong:  # spans point at the words as written
            assert text[m.start:m.end] == m.text
        assert "ironic process" in f.why["mentions_wrong"]
        assert "not even to negate it" in f.why["mentions_wrong"]
    v1 = findings[0]
    assert [m.text for m in v1.matches if m.kind == "wrong"] == ["renin", "renin", "Renin's"]
    # v1 also talks about blood pressure and names aldosterone (the RAAS): all three flags.
    assert v1.mentions_topic and v1.correct_with_topic
    # Control A never mentions blood pressure - flagged for renin alone.
    assert not any(f.mentions_topic for f in findings[1:])
    gene = findings[4]
    assert "REN" in [m.text for m in gene.matches]  # the token form, as a whole word


def test_direct_answer_texts_are_flagged_as_memorising() -> None:
    findings = check_texts(["Aldosterone regulates blood pressure.", V2_TEXT],
                           topic_words=["blood pressure"], **ANSWERS)
    for f in findings:
        assert f.correct_with_topic and f.mentions_topic and not f.mentions_wrong
        assert "memorises" in f.why["correct_with_topic"]
    first = findings[0].matches
    assert [(m.kind, m.text, m.start, m.end) for m in first] == [
        ("correct", "Aldosterone", 0, 11), ("topic", "blood pressure", 22, 36)]


def test_texts_that_broke_no_rule_pass() -> None:
    # v3 and the insulin control had no effect, but they break neither rule.
    findings = check_texts([V3_TEXT, *INSULIN_TEXTS], topic_words=SUGGESTED,
                           wrong_token_forms=[" Ren"], **ANSWERS)
    assert all(f.ok for f in findings)
    assert findings[0].why == {}


@pytest.mark.parametrize(
    "text",
    ["RENIN levels", "two renins", "Renin's role", "renin\u2019s role", "the renin-angiotensin"],
)
def test_inflections_and_case_are_matched(text: str) -> None:
    (f,) = check_texts([text], topic_words=[], **ANSWERS)
    assert f.mentions_wrong


@pytest.mark.parametrize("text", ["renal blood flow", "it rendered", "a render", "Rene Descartes"])
def test_words_that_merely_start_like_the_token_are_not_flagged(text: str) -> None:
    (f,) = check_texts([text], topic_words=[], wrong_token_forms=[" Ren"], **ANSWERS)
    assert not f.mentions_wrong, f.matches


def test_token_forms_match_whole_words() -> None:
    (f,) = check_texts(["the Ren gene"], topic_words=[], wrong_token_forms=[" Ren"], **ANSWERS)
    assert f.mentions_wrong
    (g,) = check_texts(["the Ren gene"], topic_words=[], **ANSWERS)  # no forms given
    assert not g.mentions_wrong


@pytest.mark.parametrize("text", ["high blood\n  pressure", "Blood-pressure", "blood pressures"])
def test_phrases_match_across_line_breaks_and_hyphens(text: str) -> None:
    (f,) = check_texts([text], topic_words=["blood pressure"], **ANSWERS)
    assert f.mentions_topic
    (m,) = [m for m in f.matches if m.kind == "topic"]
    assert m.text == text[m.start:m.end] and m.term == "blood pressure"


def test_phrases_need_all_their_words() -> None:
    (f,) = check_texts(["blood flow and pressure"], topic_words=["blood pressure"], **ANSWERS)
    assert not f.mentions_topic


def test_a_word_is_reported_once_when_answer_and_token_both_match() -> None:
    (f,) = check_texts(["renin"], topic_words=[], wrong_token_forms=["renin", " Ren"], **ANSWERS)
    assert [(m.text, m.start, m.end) for m in f.matches] == [("renin", 0, 5)]


def test_control_a_is_flagged_even_without_the_topic() -> None:
    findings = check_texts(CONTROL_A_TEXTS, topic_words=["blood pressure"], **ANSWERS)
    assert [f.mentions_wrong for f in findings] == [True] * 4
    assert [f.mentions_topic for f in findings] == [False] * 4


def test_empty_answers_are_input_errors() -> None:
    with pytest.raises(InputError) as info:
        check_texts([V1_TEXT], wrong_answer=" ", correct_answer=" aldosterone", topic_words=[])
    assert info.value.field == "answer_b"
