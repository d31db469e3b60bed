"""Text corpora for exemplar indexes: a user's file or folder, an upload, or the default.

A corpus is a list of texts and a content key (sha256 of the normalised texts), so an
index is stored per (model, revision, corpus) and the same texts never need a second
build. Accepted formats: ``.txt`` (one text per non-empty line), ``.jsonl`` (one
``{"text": ...}`` object per line), or a folder of those (read in name order). Every
problem is a 4xx error naming the file, line and limit; loading writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

from pydantic import BaseModel, Field

from analysis.errors import InputError, LimitExceeded
from analysis.neurons import wordnet

SUFFIXES = (".txt", ".jsonl")
MAX_BYTES = 50_000_000
MAX_TEXTS = 500_000


class Corpus(BaseModel):
    name: str
    key: str = Field(description="sha256 of the normalised texts (hex).")
    texts: list[str]

    @classmethod
    def of(cls, name: str, texts: list[str]) -> Corpus:
        """A corpus of already normalised texts, keyed by their content."""
        return cls(name=name, key=corpus_key(texts), texts=texts)


def normalise(text: str) -> str:
    """NFC, surrounding whitespace stripped, inner newlines and tabs as spaces."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def corpus_key(texts: list[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: no separator games
        h.update(data)
    return h.hexdigest()


def _decode(label: str, data: bytes) -> str:
    if b"\x00" in data:
        raise InputError(f"{label} looks like a binary file (it contains NUL bytes); give "
                         "a UTF-8 .txt (one text per line) or .jsonl ({\"text\": ...} per "
                         "line) file", field="corpus")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{label} is not UTF-8 text (undecodable byte at line {line}); "
                         "save it as UTF-8", field="corpus") from exc


def _texts(label: str, suffix: str, content: str) -> list[str]:
    texts: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        if suffix == ".txt":
            texts.append(normalise(line))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{label} line {number}: not valid JSON ({exc.msg}); each "
                             "line must be an object like {\"text\": \"...\"}",
                             field="corpus") from exc
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise InputError(f"{label} line {number}: expected an object with a string "
                             "\"text\" field", field="corpus")
        if text.strip():
            texts.append(normalise(text))
    return texts


def _suffix(label: str, name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{label}: unsupported file type {suffix or '(none)'!r}; use .txt "
                         "(one text per line) or .jsonl ({\"text\": ...} per line)",
                         field="corpus")
    return suffix


def _finish(name: str, label: str, texts: list[str], max_texts: int) -> Corpus:
    if not texts:
        raise InputError(f"{label} holds no text (empty, or only blank lines); give at "
                         "least one non-empty line", field="corpus")
    if len(texts) > max_texts:
        raise LimitExceeded(f"{label} holds {len(texts):,} texts, more than the limit of "
                            f"{max_texts:,}; split it or sample it", field="corpus")
    return Corpus.of(name, texts)


def corpus_from_bytes(name: str, data: bytes, *, max_bytes: int = MAX_BYTES,
                      max_texts: int = MAX_TEXTS) -> Corpus:
    """An uploaded file (``name`` gives its type: .txt or .jsonl)."""
    label = repr(name)
    suffix = _suffix(label, name)
    if len(data) > max_bytes:
        raise LimitExceeded(f"{label} is {len(data):,} bytes, more than the limit of "
                            f"{max_bytes:,} bytes", field="corpus")
    return _finish(Path(name).stem or name, label,
                   _texts(label, suffix, _decode(label, data)), max_texts)


def load_corpus(path: Path, *, max_bytes: int = MAX_BYTES,
                max_texts: int = MAX_TEXTS) -> Corpus:
    """A .txt/.jsonl file or a folder of them (not recursive; other files are refused so
    nothing is silently left out)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(f"folder {str(path)!r} holds no .txt or .jsonl files",
                             field="corpus")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"corpus {str(path)!r} does not exist", field="corpus")
    for f in files:
        _suffix(repr(str(f)), f.name)
    total = sum(f.stat().st_size for f in files)
    if total > max_bytes:
        raise LimitExceeded(f"corpus {str(path)!r} is {total:,} bytes, more than the limit "
                            f"of {max_bytes:,} bytes", field="corpus")
    texts: list[str] = []
    for f in files:
        label = repr(str(f))
        texts += _texts(label, f.suffix.lower(), _decode(label, f.read_bytes()))
        if len(texts) > max_texts:
            break
    return _finish(path.stem if path.is_file() else path.name, repr(str(path)), texts,
                   max_texts)


def default_corpus(directory: Path = wordnet.WORDNET_DIR) -> Corpus:
    """The built-in corpus: a deterministic sample of WordNet glosses weighted towards
    biomedical lexicographer files (see ``wordnet.default_sample``)."""
    if not wordnet.available(directory):
        raise InputError(f"the default corpus needs WordNet in {directory}: install it with "
                         "`apt-get install wordnet-base` (./dev.sh does), or give your own "
                         "corpus (a .txt or .jsonl file)", field="corpus")
    texts = [normalise(t) for t in wordnet.default_sample(directory)]
    return Corpus.of(wordnet.DEFAULT_NAME, texts)
