"""Prompt formatting and answer-token resolution on tiny real tokenizers."""

from __future__ import annotations

import pytest

from analysis.answers import resolve_answer, resolve_contrast
from analysis.errors import InputError, LimitExceeded
from analysis.prompts import PromptSpec, format_prompt


@pytest.fixture(scope="module")
def tok(tiny_lms):  # type: ignore[no-untyped-def]
    return tiny_lms["llama"].tokenizer


def test_raw_prompt_gets_bos_and_answer_prefix(tok) -> None:  # type: ignore[no-untyped-def]
    f = format_prompt(tok, PromptSpec(prompt="The capital of France is", answer_prefix=" Answer:"))
    assert f.text == "The capital of France is Answer:"
    assert f.input_ids[0] == tok.bos_token_id
    assert not f.used_chat_template
    # Tokens shown to the user decode back to the formatted text.
    assert "".join(t.text for t in f.tokens[1:]) == f.text
    assert [t.index for t in f.tokens] == list(range(len(f.input_ids)))


def test_chat_template_prefills_the_assistant_turn(tok) -> None:  # type: ignore[no-untyped-def]
    spec = PromptSpec(prompt="The capital of France is", chat_template=True,
                      system_prompt="Be brief.", answer_prefix=" Answer:")
    f = format_prompt(tok, spec)
    assert f.text.startswith("<bos><|system|>Be brief.<|end|><|user|>The capital")
    # continue_final_message: the text ends in the prefix, with no end-of-turn after it.
    assert f.text.endswith("<|assistant|> Answer:")
    # The template writes BOS itself; it must not be doubled.
    assert f.input_ids.count(tok.bos_token_id) == 1


def test_chat_template_without_prefix_opens_the_assistant_turn(tok) -> None:  # type: ignore[no-untyped-def]
    f = format_prompt(tok, PromptSpec(prompt="hi", chat_template=True))
    assert f.text.endswith("<|user|>hi<|end|><|assistant|>")


def test_missing_chat_template_is_a_clear_error(tiny_lms) -> None:  # type: ignore[no-untyped-def]
    import copy

    tok = copy.deepcopy(tiny_lms["qwen3"].tokenizer)
    tok.chat_template = None
    with pytest.raises(InputError) as err:
        format_prompt(tok, PromptSpec(prompt="hi", chat_template=True))
    assert err.value.field == "chat_template"
    assert "no chat template" in err.value.message


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt(tok, prompt: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as err:
        format_prompt(tok, PromptSpec(prompt=prompt))
    assert err.value.field == "prompt"


def test_token_cap_names_the_limit(tok) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LimitExceeded) as err:
        format_prompt(tok, PromptSpec(prompt="blood pressure " * 50), max_tokens=20)
    assert "max_prompt_tokens" in err.value.message and "20" in err.value.message
    assert err.value.status == 413


def test_single_and_multi_token_answers(tok) -> None:  # type: ignore[no-untyped-def]
    ids = tok(" aldosterone", add_special_tokens=False)["input_ids"]
    a = resolve_answer(tok, " aldosterone")
    assert a.token_id == ids[0]
    assert a.n_tokens == len(ids)
    # A word the tiny BPE never saw splits into pieces: the first is used, and we say so.
    b = resolve_answer(tok, " xylophonequartz")
    assert b.n_tokens > 1 and b.multi_token
    assert b.note is not None and "first-token" in b.note and repr(b.token_text) in b.note
    assert "whole-answer" in b.note and b.token_ids == tok(" xylophonequartz",
                                                            add_special_tokens=False)["input_ids"]
    c = resolve_answer(tok, "renin")
    assert c.note is not None and "leading space" in c.note


@pytest.mark.parametrize("answer", ["", "  "])
def test_empty_answer(tok, answer: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as err:
        resolve_answer(tok, answer, field="answer_a")
    assert err.value.field == "answer_a"


def test_contrast_rejects_same_token(tok) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as err:
        resolve_contrast(tok, " renin", " renin")
    assert err.value.field == "answer_b" and "same token" in err.value.message
    a, b = resolve_contrast(tok, " aldosterone", " renin")
    assert b is not None and a.token_id != b.token_id
