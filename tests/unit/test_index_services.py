"""The index services' caches on the planted tiny Llama's index: a reader is cached per
version of its row, so an index that finishes is read afresh (its last snapshot lands
after its last progress report, with the same token count); a complete index's always-on
flags and the neurons table's gists are cached, and a new description clears the gists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from analysis.neurons.index import Cancelled, NeuronIndex, build_index
from app.services.index_readers import IndexReaders
from app.services.neuron_meanings import NeuronMeanings
from app.store.indexes import BUILDING, READY, IndexStore
from app.store.tables import init_db
from tests.unit.test_neuron_index import (  # noqa: F401  (the planted model fixture)
    DENSE_NEURON,
    SETTINGS,
    X_NEURON,
    planted,
)

MODEL = "tiny-planted"


def _stop_after(n: int) -> Any:
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= n

    return stop


def test_a_finished_index_is_read_afresh(planted: dict[str, Any],  # noqa: F811
                                         tmp_path: Path) -> None:
    store = IndexStore(init_db(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    readers = IndexReaders(store, tmp_path)
    corpus = planted["corpus"]
    row = store.create(model=MODEL, revision="planted0", corpus_key=corpus.key,
                       corpus_name=corpus.name, path="index", meta={})
    assert readers.reader(MODEL) is None and readers.index_for(MODEL, None) == (None, None)
    with pytest.raises(Cancelled):
        build_index(planted["lm"], corpus, tmp_path / "index", SETTINGS,
                    should_stop=_stop_after(3))
    total = NeuronIndex.open(tmp_path / "index").meta.tokens_total
    # The job reports the last batch's tokens before that batch's snapshot is written.
    store.update(row.id, state=BUILDING, tokens_done=total, tokens_total=total)
    growing = readers.reader(MODEL)
    assert growing is not None and not growing.meta.complete
    assert readers.reader(MODEL) is growing  # one open per version
    assert readers.known_always_on(MODEL, None) is None  # counts still growing

    build_index(planted["lm"], corpus, tmp_path / "index", SETTINGS)
    store.update(row.id, state=READY)  # the same token count, a new version
    done = readers.reader(MODEL)
    assert done is not None and done is not growing and done.meta.complete
    known = readers.known_always_on("a-variant", MODEL)  # read through its base
    assert known is not None and f"L{DENSE_NEURON[0]}/N{DENSE_NEURON[1]}" in known.reasons
    assert known.source.startswith(f"index {row.id[:8]} of {MODEL}")
    assert readers.known_always_on(MODEL, None) is known  # a complete index never changes


def test_gists_are_cached_until_a_description_is_written(
        planted: dict[str, Any], tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.llm_describe import LLMEndpoint

    store = IndexStore(init_db(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    readers = IndexReaders(store, tmp_path)
    meanings = NeuronMeanings(store, readers)
    corpus = planted["corpus"]
    build_index(planted["lm"], corpus, tmp_path / "index", SETTINGS)
    row = store.create(model=MODEL, revision="planted0", corpus_key=corpus.key,
                       corpus_name=corpus.name, path="index", meta={})
    store.update(row.id, state=READY, tokens_done=1)
    built: list[tuple[int, int, dict[str, str], bool]] = []

    def gist(reader: NeuronIndex, layer: int, neuron: int, stored: dict[str, str],
             always_on: bool) -> str:
        built.append((layer, neuron, stored, always_on))
        return f"L{layer}/N{neuron} {stored.get('llm', '')}".strip()

    keys = [X_NEURON, DENSE_NEURON, (99, 0)]  # a neuron the index lacks is left out
    first = meanings.gists(MODEL, None, keys, gist)
    assert first == {X_NEURON: "L0/N7", DENSE_NEURON: "L1/N3"}
    assert [b[3] for b in built] == [False, True]  # the dense neuron is flagged
    assert meanings.gists(MODEL, None, keys, gist) == first and len(built) == 2

    monkeypatch.setattr("app.services.neuron_meanings.llm_describe",
                        lambda endpoint, prompt: "fires on dopamine")
    described = meanings.llm_description(MODEL, None, *X_NEURON,
                                         LLMEndpoint(url="http://127.0.0.1:9/v1", model="m"),
                                         promotes=[])
    assert described.id == row.id
    again = meanings.gists(MODEL, None, keys, gist)
    assert again[X_NEURON] == "L0/N7 fires on dopamine" and len(built) == 4
    assert meanings.description_meta(MODEL, *X_NEURON)["model"] == "m"
