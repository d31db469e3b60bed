"""View models for what a neuron responds to: exemplars from an exemplar index
(analysis.neurons), its activation statistics and histogram, and its description.

``reader`` is an opened analysis.neurons.index.NeuronIndex; everything here is plain data
for the templates and the JSON API."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from analysis.neuron_ref import neuron_name

MAX_CONTEXT_CHARS = 80


@dataclass
class ExemplarRow:
    left: str
    token: str
    right: str
    activation: float
    strength: float  # |activation| / the neuron's max |activation| (0..1), for colour
    quantile: float | None = None


@dataclass
class NeuronMeaning:
    layer: int
    neuron: int
    index_id: str
    index_model: str
    corpus: str
    tokens_seen: int
    complete: bool
    description: str
    description_source: str  # "label" | "llm" | "data"
    exemplars: list[ExemplarRow]
    quantiles: list[ExemplarRow]
    stats: dict[str, Any]
    always_on: bool
    always_on_reason: str | None
    histogram: dict[str, Any] | None = None
    other_descriptions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NeuronGist:
    """One line of what a neuron responds to, for the neurons table: its strongest
    exemplar (the firing token marked) and its description, with the index's flag."""

    description: str
    source: str  # "llm" | "data"
    left: str
    token: str
    right: str
    always_on: bool


GIST_CONTEXT_CHARS = 18


def neuron_gist(reader: Any, layer: int, neuron: int, stored: dict[str, str],
                always_on: bool) -> NeuronGist:
    from analysis.neurons.data_description import data_description

    top = reader.exemplars(layer, neuron, 1)
    e = top[0] if top else None
    llm = stored.get("llm")
    return NeuronGist(
        description=llm or data_description(reader, layer, neuron),
        source="llm" if llm else "data",
        left=e.left[-GIST_CONTEXT_CHARS:].replace("\n", " ") if e else "",
        token=e.token if e else "", right=e.right[:GIST_CONTEXT_CHARS].replace("\n", " ")
        if e else "", always_on=always_on)


def _rows(items: list[Any], peak: float) -> list[ExemplarRow]:
    peak = peak or 1.0
    return [ExemplarRow(left=e.left[-MAX_CONTEXT_CHARS:], token=e.token,
                        right=e.right[:MAX_CONTEXT_CHARS], activation=float(e.activation),
                        strength=min(1.0, abs(float(e.activation)) / peak),
                        quantile=getattr(e, "quantile", None)) for e in items]


def histogram_figure(edges: list[float], counts: list[int], name: str) -> dict[str, Any]:
    """A bar chart of the activation distribution (log-scaled counts: the tail matters)."""
    centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    widths = [b - a for a, b in itertools.pairwise(edges)]
    return {
        "data": [{"type": "bar", "x": centers, "y": counts, "width": widths,
                  "marker": {"color": "#6b7fa8"}, "name": name,
                  "hovertemplate": "activation %{x:.3g}: %{y} tokens<extra></extra>"}],
        "layout": {"height": 180, "margin": {"l": 48, "r": 10, "t": 10, "b": 36},
                   "xaxis": {"title": {"text": "activation"}},
                   "yaxis": {"title": {"text": "tokens"}, "type": "log"},
                   "bargap": 0, "showlegend": False},
    }


def neuron_meaning(reader: Any, row: Any, layer: int, neuron: int, *,
                   label: str | None = None, stored: dict[str, str] | None = None,
                   k: int = 12) -> NeuronMeaning:
    """What one neuron responds to, from an opened index (``row`` is its database row).
    The description shown is the human label if there is one, else an LLM description if
    the operator made one, else the data-only description from the exemplars."""
    from analysis.neurons.data_description import data_description

    exemplars = reader.exemplars(layer, neuron, k)
    stats = reader.stats(layer, neuron)
    peak = max((abs(e.activation) for e in exemplars), default=1.0)
    data_text = data_description(reader, layer, neuron)
    descriptions = {"data": data_text, **(stored or {})}
    if label:
        text, source = label, "label"
    elif descriptions.get("llm"):
        text, source = descriptions["llm"], "llm"
    else:
        text, source = data_text, "data"
    edges, counts = reader.histogram(layer, neuron)
    stats_json = stats.model_dump(mode="json") if hasattr(stats, "model_dump") else dict(stats)
    return NeuronMeaning(
        layer=layer, neuron=neuron, index_id=row.id, index_model=row.model,
        corpus=row.corpus_name, tokens_seen=int(row.tokens_done),
        complete=row.state == "ready", description=text, description_source=source,
        exemplars=_rows(exemplars, peak),
        quantiles=_rows(reader.quantile_samples(layer, neuron), peak),
        stats=stats_json, always_on=bool(stats_json.get("always_on")),
        always_on_reason=stats_json.get("always_on_reason"),
        histogram=histogram_figure(list(edges), list(counts), neuron_name(layer, neuron))
        if len(counts) else None,
        other_descriptions={k: v for k, v in descriptions.items() if v and v != text},
    )
