"""Prompt formatting in the seeds' style.

Chat models: the user turn holds the prompt (after an optional system prompt), and the
assistant turn is pre-filled with an answer prefix such as " Answer:" so the next token is
the answer (``continue_final_message``). Base models without a template: the raw prompt,
with the answer prefix appended. The formatted text and its tokens are always returned so
the user sees exactly what the model saw.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from analysis.errors import InputError, LimitExceeded

MAX_PROMPT_CHARS = 4000
MAX_SYSTEM_CHARS = 4000
MAX_PREFIX_CHARS = 200


class PromptSpec(BaseModel):
    """A prompt and its format, declared once: every request, form and stored run that
    carries a prompt inherits or nests this class."""

    # The schema says what format_text enforces (not blank), in its words.
    prompt: str = Field(max_length=MAX_PROMPT_CHARS, json_schema_extra={"pattern": r"\S"},
                        description="The user's prompt (a completion stem or a question).")
    chat_template: bool = Field(False, description="Wrap in the model's chat template.")
    system_prompt: str | None = Field(
        None, max_length=MAX_SYSTEM_CHARS,
        description="System turn (chat template only). None: whatever the template "
        "does without one (SmolLM2's inserts a default persona); '': an empty system turn, "
        "the seeds' setting.")
    answer_prefix: str = Field("", max_length=MAX_PREFIX_CHARS,
                               description="Pre-filled start of the answer, e.g. ' Answer:'.")

    @classmethod
    def of(cls, source: BaseModel) -> PromptSpec:
        """The prompt part of a request or form that inherits these fields."""
        return cls.model_validate(source.model_dump(include=set(cls.model_fields)))


class TokenView(BaseModel):
    index: int
    id: int
    text: str


class FormattedPrompt(BaseModel):
    text: str
    input_ids: list[int]
    tokens: list[TokenView]
    used_chat_template: bool


def token_text(tokenizer: Any, token_id: int) -> str:
    return str(tokenizer.decode([int(token_id)], skip_special_tokens=False))


def token_views(tokenizer: Any, ids: list[int]) -> list[TokenView]:
    return [TokenView(index=i, id=t, text=token_text(tokenizer, t)) for i, t in enumerate(ids)]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_text(tokenizer: Any, spec: PromptSpec) -> str:
    """The formatted prompt as text (what gets tokenized)."""
    if not spec.prompt.strip():
        raise InputError("the prompt is empty; type the text the model should continue",
                         field="prompt")
    if not spec.chat_template:
        return spec.prompt + spec.answer_prefix
    if not has_chat_template(tokenizer):
        raise InputError(
            "this model has no chat template; untick 'chat template' to use the raw prompt "
            "(base models), or register the model with a chat_template",
            field="chat_template",
        )
    messages: list[dict[str, str]] = []
    if spec.system_prompt is not None:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages.append({"role": "user", "content": spec.prompt})
    if spec.answer_prefix:
        messages.append({"role": "assistant", "content": spec.answer_prefix})
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, continue_final_message=True
        )
    else:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
    return str(text)


def format_prompt(
    tokenizer: Any, spec: PromptSpec, max_tokens: int | None = None
) -> FormattedPrompt:
    text = format_text(tokenizer, spec)
    # A chat template writes its own BOS; raw prompts get the tokenizer's special tokens.
    ids = list(tokenizer(text, add_special_tokens=not spec.chat_template)["input_ids"])
    if not ids:
        raise InputError("the prompt produced no tokens", field="prompt")
    if max_tokens is not None and len(ids) > max_tokens:
        raise LimitExceeded(
            f"the formatted prompt has {len(ids)} tokens; the limit (max_prompt_tokens) "
            f"is {max_tokens}. Shorten the prompt or system prompt.",
            field="prompt",
        )
    return FormattedPrompt(
        text=text,
        input_ids=ids,
        tokens=token_views(tokenizer, ids),
        used_chat_template=spec.chat_template,
    )


# The two formats a user switches between (one click on every page that scores a prompt).
# On a small instruct model they give different answers - SmolLM2-135M-Instruct shows the
# seeds' error in the plain completion and puts " The" first in the chat format - so every
# result says which format it used, and Predict shows both side by side.
class PromptFormat(NamedTuple):
    label: str
    hint: str
    settings: dict[str, Any]


PROMPT_FORMATS: dict[str, PromptFormat] = {
    "plain": PromptFormat("Plain completion", "the prompt as it is, no template",
                          {"chat_template": False, "system_prompt": None,
                           "answer_prefix": ""}),
    "seeds_chat": PromptFormat("Seeds' chat format",
                               "chat template, an empty system turn, the assistant turn "
                               "pre-filled with \" Answer:\" (the seeds' Stage 3 and 7)",
                               {"chat_template": True, "system_prompt": "",
                                "answer_prefix": " Answer:"}),
}


def in_format(spec: PromptSpec, name: str) -> PromptSpec:
    """The same prompt in one of the PROMPT_FORMATS."""
    return spec.model_copy(update=PROMPT_FORMATS[name].settings)


def format_label(spec: PromptSpec) -> str:
    """What to call a spec's format on a result: one of the named formats, or custom.
    Without a chat template the system prompt plays no part."""
    if not spec.chat_template:
        if not spec.answer_prefix:
            return PROMPT_FORMATS["plain"].label
        return f"Plain completion + answer prefix {spec.answer_prefix!r}"
    for fmt in PROMPT_FORMATS.values():
        if all(getattr(spec, key) == value for key, value in fmt.settings.items()):
            return fmt.label
    system = "template default" if spec.system_prompt is None else repr(spec.system_prompt)
    return f"Chat template (system {system}, answer prefix {spec.answer_prefix!r})"
