"""The seeds' hardest-won rule, checked before any training: never mention the wrong
concept, and train the correct one away from the question's topic.

Seeds 000/001 tried it every way. Texts that mention the wrong answer - even only to
negate it ("renin is an enzyme, not a hormone") - made the model *worse* (v1, v6 and
Control A: renin 35% -> 50-56%), like ironic process theory's "don't think of a white
bear". Texts that put the correct answer next to the question's topic ("aldosterone
regulates blood pressure", v2) fixed the answer only by memorising it. What worked (v4)
strengthened the correct concept in unrelated contexts: aldosterone as a hormone of
sodium, potassium and the adrenal cortex, without blood pressure.

Matching is on whole words, case-insensitive, and forgiving of inflection: a term also
matches its plural, possessive and verb endings (renin, renins, Renin's, RENIN;
regulate -> regulates/regulated/regulating). That is a suffix rule, not a stemmer: a
word must *be* the term plus one of a few inflectional endings, so "renal" never matches
"renin" and "regulate" does not match "regulation" (a different word a user can list).
Multi-word terms ("blood pressure") match across any run of spaces, line breaks or a
hyphen ("blood-pressure"). Hyphenated compounds are split, so "renin-angiotensin" counts
as a mention of renin.

``wrong_token_forms`` are the wrong answer's first token as the model emits it (" Ren" for
" renin", the unit the contrast is scored on). They match only as a whole word (with the
same endings): "REN" (the renin gene) is flagged, while ordinary words that merely start
with those letters - "renal", "rendered", "render" - are not; flagging every word that
starts with "ren" would bury real mentions under false alarms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from analysis.errors import InputError

MatchKind = Literal["wrong", "topic", "correct"]

WHY_WRONG = (
    "Mentions the wrong answer ({found}). Don't, not even to negate it: in the seeds, "
    "every text that named renin made the model say renin more (v1 'renin is an enzyme': "
    "35% -> 56%; a plain 'renin is an enzyme' sentence: 52%; renin texts without blood "
    "pressure: 50%). Mentioning a concept strengthens it, like 'don't think of a white "
    "bear' (ironic process). Rewrite the text about the correct answer only."
)
WHY_TOPIC = (
    "Mentions the question's topic ({found}). Train the correct concept in other contexts "
    "instead: the seeds' fix (v4) wrote about aldosterone's sodium, potassium and adrenal "
    "roles without blood pressure, while texts about the topic either memorised the "
    "answer (v2) or did nothing (v5)."
)
WHY_CORRECT_WITH_TOPIC = (
    "Puts the correct answer next to the question's topic ({found}). That teaches the "
    "answer directly: the model memorises it instead of fixing the pathway (the seeds' v2 "
    "'aldosterone regulates blood pressure' moved the answer but taught nothing "
    "transferable). Keep the correct answer, drop the topic."
)


class TermMatch(BaseModel):
    kind: MatchKind
    term: str = Field(description="The listed term that matched.")
    text: str = Field(description="The words as written in the text.")
    start: int = Field(description="Character offset in the text (inclusive).")
    end: int = Field(description="Character offset in the text (exclusive).")


class TextFinding(BaseModel):
    """The check's verdict on one training text (one per text, clean ones included)."""

    index: int
    mentions_wrong: bool
    mentions_topic: bool
    correct_with_topic: bool
    matches: list[TermMatch]
    why: dict[str, str] = Field(
        default_factory=dict, description="Flag name -> the seeds' reason, per raised flag."
    )

    @property
    def ok(self) -> bool:
        return not (self.mentions_wrong or self.mentions_topic or self.correct_with_topic)


_WORD = r"[A-Za-z0-9]"
_APOS_CHARS = "'\u2019"
_APOSTROPHE = f"[{_APOS_CHARS}]"


def _normalise_term(term: str) -> list[str]:
    """A term as its lower-case words, possessive endings dropped ("Conn's" -> "conn")."""
    words = re.findall(rf"{_WORD}+(?:{_APOSTROPHE}{_WORD}+)*", term.lower())
    return [re.sub(rf"{_APOSTROPHE}s?$", "", w) for w in words if w]


def _endings(word: str, inflect: bool = True) -> str:
    """Regex for `word` with its inflectional endings (a suffix rule, not a stemmer).
    Without `inflect` only plural and possessive endings ("Ren", "REN's", "Rens")."""
    stem = re.escape(word)
    if not inflect:
        return rf"{stem}s?(?:{_APOSTROPHE}s?)?"
    forms = [rf"{stem}(?:s|es|ed|ing|d)?"]
    if word.endswith("e") and len(word) > 3:  # regulate -> regulating
        forms.append(rf"{re.escape(word[:-1])}(?:ing|ed)")
    if word.endswith("y") and len(word) > 3:  # artery -> arteries
        forms.append(rf"{re.escape(word[:-1])}(?:ies|ied)")
    # Possessives: renin's, renins', Renin’s.
    return rf"(?:{'|'.join(forms)})(?:{_APOSTROPHE}s?)?"


def term_pattern(term: str, inflect: bool = True) -> re.Pattern[str] | None:
    """A case-insensitive whole-word pattern for a term (None if it has no letters)."""
    words = _normalise_term(term)
    if not words:
        return None
    # Any words: inflected (plurals and possessives inside phrases are common: "Conn's
    # syndrome"), separated by whitespace incl. line breaks or a hyphen.
    body = r"(?:\s+|\s*-\s*)".join(_endings(w, inflect) for w in words)
    return re.compile(rf"(?<!{_WORD}){body}(?!{_WORD})", re.IGNORECASE)


def find_terms(
    text: str, terms: Iterable[str], kind: MatchKind, inflect: bool = True
) -> list[TermMatch]:
    found: list[TermMatch] = []
    for term in terms:
        pattern = term_pattern(term, inflect)
        if pattern is None:
            continue
        for m in pattern.finditer(text):
            found.append(TermMatch(kind=kind, term=term.strip(), text=m.group(0),
                                   start=m.start(), end=m.end()))
    return found


def _quoted(matches: Sequence[TermMatch]) -> str:
    seen: list[str] = []
    for m in matches:
        shown = " ".join(m.text.split())
        if shown not in seen:
            seen.append(shown)
    return ", ".join(f"'{s}'" for s in seen)


def check_texts(
    texts: Sequence[str],
    *,
    wrong_answer: str,
    correct_answer: str,
    topic_words: Sequence[str],
    wrong_token_forms: Sequence[str] = (),
) -> list[TextFinding]:
    """One finding per text, in order: which of the seeds' rules it breaks, with the words
    and their character spans, and why each rule matters.

    * ``mentions_wrong`` - the wrong answer or one of its token forms appears;
    * ``mentions_topic`` - a topic word/phrase appears;
    * ``correct_with_topic`` - the correct answer and a topic word appear in the same text
      (a text is one training example, so that is the unit the model learns from).
    """
    if not wrong_answer.strip():
        raise InputError("the wrong answer is empty", field="answer_b")
    if not correct_answer.strip():
        raise InputError("the correct answer is empty", field="answer_a")
    # A token form shorter than two letters (" R") would match initials everywhere.
    forms = [f for f in wrong_token_forms if len("".join(_normalise_term(f))) >= 2]
    topics = [t for t in topic_words if t.strip()]
    findings: list[TextFinding] = []
    for index, text in enumerate(texts):
        # Token forms are word pieces ("Ren"): no verb endings, so "rend"/"rened" stay out.
        wrong = _dedupe(find_terms(text, [wrong_answer], "wrong")
                        + find_terms(text, forms, "wrong", inflect=False))
        topic = _dedupe(find_terms(text, topics, "topic"))
        correct = _dedupe(find_terms(text, [correct_answer], "correct"))
        why: dict[str, str] = {}
        if wrong:
            why["mentions_wrong"] = WHY_WRONG.format(found=_quoted(wrong))
        if topic:
            why["mentions_topic"] = WHY_TOPIC.format(found=_quoted(topic))
        if correct and topic:
            why["correct_with_topic"] = WHY_CORRECT_WITH_TOPIC.format(
                found=f"{_quoted(correct)} with {_quoted(topic)}")
        findings.append(TextFinding(
            index=index,
            mentions_wrong=bool(wrong),
            mentions_topic=bool(topic),
            correct_with_topic=bool(correct and topic),
            matches=sorted([*wrong, *topic, *correct], key=lambda m: (m.start, m.end)),
            why=why,
        ))
    return findings


def _dedupe(matches: list[TermMatch]) -> list[TermMatch]:
    """One match per span (" Ren" and "renin" can both hit the same word): keep the longest
    match at each start, drop matches inside another."""
    kept: list[TermMatch] = []
    for m in sorted(matches, key=lambda m: (m.start, -(m.end - m.start))):
        if kept and m.start < kept[-1].end:
            continue
        kept.append(m)
    return kept


# --------------------------------------------------------------------------------------
# Suggested topic words
# --------------------------------------------------------------------------------------

_STOPWORD_LIST = """
a an the this that these those is are was were be been being am do does did has have had
of in on at to for from by with without into onto over under about as than then and or
nor but not no so if it its it's they them their there here what which who whom whose
when where why how all any both each few more most other some such only own same too very
can could will would shall should may might must also usually often typically generally
commonly one two first second i you he she we his her our your my me us
"""
_STOPWORDS = frozenset(_STOPWORD_LIST.split())
# Question scaffolding: words that frame a completion prompt without naming its topic.
_SCAFFOLD_LIST = """
primary main principal chief key leading predominant dominant common most least
best classic typical characteristic important major minor usual well known called named
termed referred involved associated responsible related linked used found seen located
caused answer question example type kind class form
involves causes affects produces regulates controls includes contains leads results means
refers occurs acts binds inhibits stimulates activates secretes treats increases decreases
"""
_SCAFFOLD = frozenset(_SCAFFOLD_LIST.split())
_DETERMINERS = frozenset({"a", "an", "the"})


def suggest_topic_words(prompt: str, answers: Sequence[str] = ()) -> list[str]:
    """Topic words for a prompt, as a starting point the user edits.

    Content words of the prompt (not stopwords, not scaffolding such as "primary",
    "involved", "called", "causes") are grouped into phrases of adjacent words ("blood
    pressure"); a participle ("regulating") ends a phrase and is not suggested.
    Left out: the answers themselves and the answer's *class* - the first phrase after a
    leading article ("The primary **hormone** involved in ..."), which names what kind of
    thing the answer is and belongs in good training texts ("aldosterone is a hormone").
    Multi-word phrases come first, then single words, each in prompt order.
    """
    words = re.findall(rf"{_WORD}+(?:[-{_APOS_CHARS}]{_WORD}+)*", prompt)
    answer_words = {w for a in answers for w in _normalise_term(a)}
    runs: list[list[str]] = []
    current: list[str] = []
    for word in words:
        low = word.lower()
        norm = _normalise_term(low)
        content = (
            low not in _STOPWORDS and low not in _SCAFFOLD and len(low) > 2
            and not low.isdigit() and bool(norm) and norm[0] not in answer_words
        )
        # A participle ("regulating", "produced") ends a noun phrase and is left out: as a
        # topic word it would flag every text that "produced" or "regulated" anything.
        verb_form = content and "-" not in low and len(low) > 4 and low.endswith(("ing", "ed"))
        if current and (not content or verb_form):
            runs.append(current)
            current = []
        if content and not verb_form:
            current.append(low)
    if current:
        runs.append(current)
    # "The primary hormone ...": the first run after a leading article is the answer's class.
    if words and words[0].lower() in _DETERMINERS and runs:
        first_content = next(
            (w.lower() for w in words[1:] if w.lower() not in _SCAFFOLD), None)
        if first_content is not None and runs[0][0] == first_content:
            runs = runs[1:]
    phrases: list[str] = []
    for run in runs:
        phrase = " ".join(run)
        if phrase not in phrases:
            phrases.append(phrase)
    return [p for p in phrases if " " in p] + [p for p in phrases if " " not in p]
