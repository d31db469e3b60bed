"""WordNet glosses as text: the parser behind the default exemplar corpus.

Debian's ``wordnet-base`` puts the WordNet 3.0 database in ``/usr/share/wordnet``. Each
``data.<pos>`` line is one synset: a byte offset, the lexicographer file it came from
(``noun.body``, ``noun.substance``, ...), its words, pointers, and after ``|`` the gloss
(a definition, then example sentences in quotes). Only the words and the gloss are read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
POS_FILES = ("noun", "verb", "adj", "adv")

# The lexicographer files by number (WordNet's lexnames(5WN); fixed since WordNet 1.5).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
    "noun.artifact", "noun.attribute", "noun.body", "noun.cognition", "noun.communication",
    "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
    "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)

_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # adjective position markers: "big(a)"


@dataclass(frozen=True)
class Synset:
    pos: str
    offset: int
    lexname: str
    words: tuple[str, ...]
    gloss: str

    @property
    def text(self) -> str:
        """"renin: a proteolytic enzyme secreted by the kidneys; catalyzes ..." (up to
        three of the synset's words, then the gloss with its example sentences)."""
        return f"{', '.join(self.words[:3])}: {self.gloss}"


def parse_line(pos: str, line: str) -> Synset | None:
    """One ``data.<pos>`` line, or None for the licence header and malformed lines."""
    if not line or line.startswith(" ") or " | " not in line:
        return None
    head, gloss = line.split(" | ", 1)
    parts = head.split()
    try:
        offset, lexnum, count = int(parts[0]), int(parts[1]), int(parts[3], 16)
    except (IndexError, ValueError):
        return None
    words = tuple(_ADJ_MARKER.sub("", w).replace("_", " ")
                  for w in parts[4:4 + 2 * count:2])
    gloss = gloss.strip()
    if not words or not gloss or not 0 <= lexnum < len(LEXNAMES):
        return None
    return Synset(pos, offset, LEXNAMES[lexnum], words, gloss)


def synsets(directory: Path = WORDNET_DIR) -> Iterator[Synset]:
    """Every synset with a gloss, file by file (noun, verb, adj, adv)."""
    for pos in POS_FILES:
        path = directory / f"data.{pos}"
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                synset = parse_line(pos, line.rstrip("\n"))
                if synset is not None:
                    yield synset


def available(directory: Path = WORDNET_DIR) -> bool:
    return all((directory / f"data.{pos}").is_file() for pos in POS_FILES)


# The default corpus. Biomedical lexicographer files are taken whole (organs, hormones,
# enzymes, diseases, bodily processes: what the seeds' users analyse); taxonomy-heavy
# files (plants, animals: mostly "genus of ...") and the general files are sampled, so
# the model's general-purpose neurons still see ordinary definitional English.
DEFAULT_NAME = "wordnet-glosses"
DEFAULT_WEIGHTS: dict[str, float] = {
    "noun.body": 1.0, "noun.substance": 1.0, "noun.process": 1.0, "noun.state": 1.0,
    "noun.phenomenon": 1.0, "verb.body": 1.0, "noun.food": 0.3, "noun.plant": 0.1,
    "noun.animal": 0.1,
}
DEFAULT_GENERAL_WEIGHT = 0.06


def _draw(synset: Synset) -> float:
    """A uniform number in [0, 1) fixed by the synset's identity (not by file order)."""
    digest = hashlib.sha256(f"{synset.pos}:{synset.offset}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def default_sample(directory: Path = WORDNET_DIR,
                   weights: dict[str, float] | None = None,
                   general: float = DEFAULT_GENERAL_WEIGHT) -> list[str]:
    """The default corpus's texts: each synset kept with its lexicographer file's weight,
    decided by a hash of its identity. The files taken whole (the biomedical ones) come
    first, then the sampled rest, each part ordered by a second hash: a growing index
    knows organs, hormones and diseases within its first minutes (the seeds' prompts),
    and its general-purpose neurons see ordinary English after."""
    weights = DEFAULT_WEIGHTS if weights is None else weights
    kept = [(weights.get(s.lexname, general) < 1.0, s.text) for s in synsets(directory)
            if _draw(s) < weights.get(s.lexname, general)]
    kept.sort(key=lambda pair: (pair[0], hashlib.sha256(pair[1].encode()).digest()))
    return [text for _, text in kept]
