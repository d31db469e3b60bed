"""What a neuron responds to, for the pages and the API: from the model's (or its base
model's) exemplar index, its exemplars, statistics and descriptions, the neurons table's
one-line gists, an LLM-written description, a search over the index, a run's concept
candidates and a neuron's logit lens.

The view layer's builders (``frontend.neurons``) are passed in by the routes, so this
service returns whatever they build without importing them."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from analysis.attribution import CircuitResult
from analysis.attribution.logit_lens import check_model_neuron, describe_neuron
from analysis.concepts import ConceptCandidate, concept_candidates
from analysis.errors import InputError, NotFound
from analysis.llm_describe import LLMEndpoint, describe_prompt, llm_describe
from analysis.models import LoadedModel
from analysis.neurons.data_description import data_description
from analysis.neurons.index import Exemplar, NeuronIndex, SearchHit
from analysis.neurons.search import search as search_index
from app.services.effects import effects_for
from app.services.index_readers import IndexReaders, IndexVersion
from app.store.indexes import IndexStore
from app.store.tables import IndexRecord

GIST_CACHE = 50_000  # table lines kept (a few hundred bytes each)

Gist = TypeVar("Gist")
Meaning = TypeVar("Meaning")
# frontend.neurons.neuron_gist: (reader, layer, neuron, stored descriptions, always-on)
GistBuilder = Callable[[NeuronIndex, int, int, dict[str, str], bool], Gist]


class NeuronMeanings:
    def __init__(self, store: IndexStore, readers: IndexReaders) -> None:
        self.store, self.readers = store, readers
        # Per index version and neuron: the table re-renders on every filter. Cleared
        # when a description is written (the table shows it).
        self._gist = lru_cache(maxsize=GIST_CACHE)(self._gist_of)

    def gists(self, model: str, base: str | None, keys: list[tuple[int, int]],
              neuron_gist: GistBuilder[Gist]) -> dict[tuple[int, int], Gist]:
        """A one-line "responds to" per neuron for the neurons table (empty without an
        index), built by the view layer's ``neuron_gist``."""
        row, reader = self.readers.index_for(model, base)
        if row is None or reader is None:
            return {}
        version = IndexVersion.of(row)
        flagged = reader.always_on()
        out = {}
        for layer, neuron in keys:
            if not (0 <= layer < reader.meta.n_layers and 0 <= neuron < reader.meta.n_neurons):
                continue
            out[(layer, neuron)] = self._gist(version, layer, neuron,
                                              (layer, neuron) in flagged, neuron_gist)
        return out

    def _gist_of(self, version: IndexVersion, layer: int, neuron: int, always_on: bool,
                 neuron_gist: GistBuilder[Gist]) -> Gist:
        return neuron_gist(self.readers.at(version), layer, neuron,
                           self.store.descriptions(version.model, layer, neuron), always_on)

    def meaning(self, model: str, base: str | None, layer: int, neuron: int,
                label: str | None, neuron_meaning: Callable[..., Meaning],
                k: int = 12) -> Meaning | None:
        """What the neuron responds to, as the view layer's ``neuron_meaning`` builds it
        from the model's (or its base's) index; None without one."""
        row, reader = self.readers.index_for(model, base)
        if row is None or reader is None:
            return None
        check_neuron(reader, layer, neuron)
        stored = self.store.descriptions(row.model, layer, neuron)
        return neuron_meaning(reader, row, layer, neuron, label=label, stored=stored, k=k)

    def llm_description(self, model: str, base: str | None, layer: int, neuron: int,
                        endpoint: LLMEndpoint, promotes: list[str]) -> IndexRecord:
        """Ask the operator's LLM endpoint for a description and store it (source "llm",
        with the prompt used); a human label still wins when shown. Returns the index it
        was written from (its model owns the description)."""

        row, reader = self.readers.index_for(model, base)
        if row is None or reader is None:
            raise NotFound(f"no exemplar index for {model} yet: an LLM description is "
                           "written from the exemplars; build an index on /indexes")
        check_neuron(reader, layer, neuron)
        prompt = describe_prompt(layer, neuron, reader.exemplars(layer, neuron, 15), promotes)
        text = llm_describe(endpoint, prompt)
        self.store.describe(row.model, layer, neuron, "llm", text, index_id=row.id,
                            meta={"prompt": prompt, "endpoint": endpoint.url,
                                  "model": endpoint.model})
        self._gist.cache_clear()  # the table shows the new description
        return row

    def descriptions(self, model: str, layer: int, neuron: int) -> dict[str, str]:
        """Source -> text of the neuron's stored descriptions ("data", "llm")."""
        return self.store.descriptions(model, layer, neuron)

    def description_meta(self, model: str, layer: int, neuron: int) -> dict[str, Any]:
        """What the LLM description was written with (its prompt, endpoint, model)."""
        return self.store.description_meta(model, layer, neuron, "llm")

    def search(self, model: str, base: str | None, query: str,
               limit: int = 50) -> tuple[IndexRecord, list[SearchHit]]:
        query = query.strip()
        if not query:
            raise InputError("type a word to search for, e.g. kidney", field="q")
        row, reader = self.readers.index_for(model, base)
        if row is None or reader is None:
            raise NotFound(f"no exemplar index for {model} yet; build one on /indexes")
        return row, search_index(reader, query, limit)


def check_neuron(reader: NeuronIndex, layer: int, neuron: int) -> None:
    n_layers, n_neurons = reader.meta.n_layers, reader.meta.n_neurons
    if not 0 <= layer < n_layers:
        raise InputError(f"layer must be between 0 and {n_layers - 1}", field="layer")
    if not 0 <= neuron < n_neurons:
        raise InputError(f"neuron must be between 0 and {n_neurons - 1}", field="neuron")


def run_candidates(result: CircuitResult, lm: LoadedModel, readers: IndexReaders,
                   limit: int = 15) -> tuple[list[ConceptCandidate], IndexRecord | None]:
    """Concept candidates of a run (analysis/concepts.py) with the model's logit lens and,
    when the model (or its base) has an index, its exemplars and data description."""
    row, reader = readers.index_for(lm.name, lm.spec.base)

    def lens(layer: int, neuron: int) -> tuple[list[str], list[str]]:
        d = describe_neuron(lm.model, lm.tokenizer, layer, neuron, top_k=10)
        return ([t.token or "" for t in d.promotes], [t.token or "" for t in d.suppresses])

    exemplars = describe = always_on = None
    if reader is not None:

        flagged = reader.always_on()

        def always_on(layer: int, neuron: int) -> str | None:
            if (layer, neuron) not in flagged:
                return None
            return reader.stats(layer, neuron).always_on_reason

        def exemplars(layer: int, neuron: int) -> list[Exemplar]:
            return list(reader.exemplars(layer, neuron, 12))

        def describe(layer: int, neuron: int) -> str:
            return str(data_description(reader, layer, neuron))

    n_layers = int(lm.model.config.get_text_config().num_hidden_layers)
    found = concept_candidates(result, n_layers, logit_lens=lens, exemplars=exemplars,
                               describe=describe, always_on=always_on,
                               effects=effects_for(result, lm), limit=limit)
    return found, row


def promoted_tokens(lm: LoadedModel, layer: int, neuron: int) -> list[str]:
    """The tokens a neuron's output promotes (logit lens), best first."""

    check_model_neuron(lm.model, layer, neuron)
    return [t.token or "" for t in describe_neuron(lm.model, lm.tokenizer, layer, neuron,
                                                    top_k=10).promotes]
