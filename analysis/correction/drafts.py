"""Draft training texts for a concept (the start of the seeds' Stage 5): the user picks an
intermediate concept (a candidate neuron's words, or a probe's), and gets a few short
texts that tie it to the correct answer, each already through the text check.

The seeds' rule decides what a draft may be: it never names the wrong answer (not even
to negate it); a draft that does is thrown away and another one is sampled, and the
page says how many were. Drafts that touch the question's topic (what the seeds' v4 fix
avoided) are set aside while more samples may still give clean ones, and fill in only
when too few are clean, carrying the check's flag so the user sees why. The drafts are
suggestions: the user edits them, previews their in-context score and decides.

Drafts come from the resident model (the model under study, continuing a short list of
facts; small models write plain, sometimes clumsy or wrong sentences) or from an OpenAI-style
endpoint the operator configured; the result names which.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from pydantic import BaseModel, Field

from analysis.correction.textcheck import TextFinding, check_texts
from analysis.errors import InputError

MAX_DRAFTS = 8
MAX_TRIES = 4  # samples per kept draft before giving up
MAX_DRAFT_CHARS = 400
MAX_NEW_TOKENS = 60


class Draft(BaseModel):
    text: str
    finding: TextFinding


class Drafts(BaseModel):
    concept: list[str] = Field(description="The concept's words the drafts are about.")
    answer_a: str
    source: str = Field(description="Where the drafts came from, in words.")
    instruction: str = Field(description="What the writer was asked, verbatim.")
    drafts: list[Draft]
    discarded: int = Field(description="Samples thrown away because they named the wrong "
                                       "answer, repeated another or said nothing.")
    set_aside: int = Field(0, description="Samples on the question's topic left out because "
                                          "enough clean ones were drawn.")


def instruction(answer_a: str, concept: Sequence[str]) -> str:
    """What an instruction-following writer (the endpoint) is asked: one short factual
    sentence joining the correct answer and the concept, without the question (the seeds'
    v4 wrote about aldosterone's sodium and adrenal roles)."""
    return (f"Write one short factual sentence, like an encyclopedia, about "
            f"{answer_a.strip()} and {', '.join(concept)}. Do not ask a question. Answer "
            "with the sentence only.")


# The resident model continues a list of facts instead: small models (and base models)
# echo an instruction back, but complete a pattern. The examples name neither answer.
FACT_EXAMPLES = (
    ("insulin", "the liver", "Insulin makes the liver store glucose as glycogen."),
    ("the moon", "tides", "The moon's gravity raises the ocean tides twice a day."),
)


def completion_prompt(answer_a: str, concept: Sequence[str]) -> tuple[str, str]:
    """(the text the model continues, the start of the draft it continues from)."""
    subject = answer_a.strip()
    lead = subject[:1].upper() + subject[1:]
    lines = [f"A fact about {a} and {b}: {fact}" for a, b, fact in FACT_EXAMPLES]
    lines.append(f"A fact about {subject} and {', '.join(concept)}: {lead}")
    return "\n".join(lines), lead


def clean(text: str) -> str:
    """The first sentence of a sample, without quotes or list markers."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(?:[-*\d.)\s]+|sentence:\s*)", "", line, flags=re.IGNORECASE)
    end = re.search(r"[.!?](?=\s|$)", line)
    if end:
        line = line[:end.end()]
    return line.strip(" \"'`")[:MAX_DRAFT_CHARS]


def sample_with_model(model: torch.nn.Module, tokenizer: object, answer_a: str,
                      concept: Sequence[str]) -> tuple[Callable[[int], str], str]:
    """A writer that samples the model's continuation of ``completion_prompt`` (seeded, so
    the same request drafts the same texts), and the prompt it shows the user."""
    prompt, lead = completion_prompt(answer_a, concept)

    def write(seed: int) -> str:
        ids = tokenizer(prompt, return_tensors="pt")  # type: ignore[operator]
        device = next(model.parameters()).device
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(  # type: ignore[operator]
                input_ids=ids["input_ids"].to(device),
                attention_mask=ids["attention_mask"].to(device),
                max_new_tokens=MAX_NEW_TOKENS, do_sample=True, temperature=0.8, top_p=0.95,
                pad_token_id=getattr(tokenizer, "pad_token_id", None)
                or getattr(tokenizer, "eos_token_id", None))
        new = out[0, ids["input_ids"].shape[1]:]
        return lead + str(tokenizer.decode(new, skip_special_tokens=True))  # type: ignore[attr-defined]

    return write, prompt


def draft_texts(write: Callable[[int], str], *, asked: str, source: str, answer_a: str,
                answer_b: str, concept: Sequence[str], topic_words: Sequence[str] = (),
                n: int = 4, seed: int = 0) -> Drafts:
    """``n`` drafts from ``write(seed)`` (``asked``: what the writer was given, shown to the
    user); samples naming the wrong answer, empty or repeated ones are discarded and
    sampled again, at most ``MAX_TRIES`` times per draft."""
    concept = [w.strip() for w in concept if w.strip()][:8]
    if not concept:
        raise InputError("choose a concept: a few words it is about (e.g. kidney, sodium)",
                         field="concept")
    if not 1 <= n <= MAX_DRAFTS:
        raise InputError(f"draft between 1 and {MAX_DRAFTS} texts", field="n")
    if not answer_b.strip():
        raise InputError("drafts are checked against the wrong answer B: give it",
                         field="answer_b")
    clean_drafts: list[Draft] = []
    flagged: list[Draft] = []  # on the question's topic: used only if too few are clean
    discarded = 0
    attempt = 0
    while len(clean_drafts) < n and attempt < n * MAX_TRIES:
        text = clean(write(seed + attempt))
        attempt += 1
        if len(text.split()) < 4:  # empty, or cut off before it said anything
            discarded += 1
            continue
        finding = check_texts([text], wrong_answer=answer_b, correct_answer=answer_a,
                              topic_words=topic_words)[0]
        if finding.mentions_wrong or text in {d.text for d in (*clean_drafts, *flagged)}:
            discarded += 1
            continue
        (clean_drafts if finding.ok else flagged).append(Draft(text=text, finding=finding))
    used = flagged[:n - len(clean_drafts)]
    return Drafts(concept=concept, answer_a=answer_a, source=source, instruction=asked,
                  drafts=clean_drafts + used, discarded=discarded,
                  set_aside=len(flagged) - len(used))


__all__ = ["MAX_DRAFTS", "Draft", "Drafts", "clean", "completion_prompt", "draft_texts",
           "instruction", "sample_with_model"]
