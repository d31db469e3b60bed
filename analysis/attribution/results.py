"""Typed, JSON-serialisable results of circuit analyses (pydantic v2).

Compute lives elsewhere; these are the wire format shared by the CLI, the HTTP API and
saved runs. ``CircuitResult.save``/``load`` round-trip a run; ``cache_key`` identifies a
run by everything that determines its numbers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, computed_field

from analysis.attribution.always_on import AlwaysOnNeuron
from analysis.attribution.circuit_settings import CircuitSettings
from analysis.attribution.completeness import Completeness
from analysis.neuron_ref import neuron_name, node_name

SCHEMA_VERSION = 1
METRIC_NODE_ID = "metric"


class TokenInfo(BaseModel):
    position: int
    id: int
    text: str | None = None


class Node(BaseModel):
    """One MLP neuron at one position, with its influence on the metric (logit units)."""

    layer: int
    position: int
    neuron: int
    influence: float
    activation: float
    token: str | None = None
    token_id: int | None = None
    direct_effect: float | None = Field(
        None, description="Effect on m through residual+attention only (set by edges)."
    )
    label: str | None = None
    always_on: bool = Field(False, description="Flagged always-on in this prompt (kept "
                                               "because drop_always_on was off).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        """The neuron, as the lab notes write it: ``L31/N589``."""
        return neuron_name(self.layer, self.neuron)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def node_id(self) -> str:
        return node_name(self.layer, self.neuron, self.position)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def towards(self) -> Literal["A", "B"]:
        """Which answer this node pushes: m = logit A - logit B, so positive -> A."""
        return "A" if self.influence > 0 else "B"

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.layer, self.position, self.neuron)


class NeuronTotal(BaseModel):
    """A kept neuron's influence summed over every position of the prompt."""

    layer: int
    neuron: int
    influence: float
    positions: list[int] = Field(description="Positions where this neuron is a kept node.")
    label: str | None = None
    by_position: list[float] = Field(
        default_factory=list, description="Influence at every position of the prompt."
    )
    activations: list[float] = Field(
        default_factory=list, description="Activation at every position of the prompt."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        return neuron_name(self.layer, self.neuron)


class Edge(BaseModel):
    """Direct effect of ``source`` on ``target`` (a node id, or ``metric``)."""

    source: str
    target: str
    weight: float = Field(description="The reported weight (raw, flow, or influence).")
    raw: float = Field(description="a_s * d a_t / d a_s with MLPs in between stopped.")


class Faithfulness(BaseModel):
    """How m moves when nodes are ablated (zero, or mean over the prompt's positions)."""

    mode: Literal["zero", "mean"]
    m_clean: float
    m_without_circuit: float = Field(description="All kept nodes ablated.")
    m_without_towards_a: float = Field(description="Kept nodes pushing A ablated.")
    m_without_towards_b: float = Field(description="Kept nodes pushing B ablated.")
    m_circuit_only: float = Field(description="Every MLP activation except the kept ones ablated.")
    m_all_ablated: float = Field(description="Every MLP activation ablated.")
    recovered: float | None = Field(
        description="(m_circuit_only - m_all_ablated) / (m_clean - m_all_ablated)."
    )
    n_nodes: int
    n_towards_a: int
    n_towards_b: int
    influence_towards_a: float
    influence_towards_b: float


class TokenScore(BaseModel):
    id: int
    token: str | None = None
    score: float


class TokenProb(BaseModel):
    id: int
    token: str | None = None
    logit: float
    prob: float


class Timing(BaseModel):
    attribution_s: float = 0.0
    prune_s: float = 0.0
    edges_s: float = 0.0
    faithfulness_s: float = 0.0
    total_s: float = 0.0


class CircuitResult(BaseModel):
    """One analysed prompt: metric, kept nodes, edges, faithfulness and timing."""

    schema_version: int = SCHEMA_VERSION
    model_name: str | None = None
    model_revision: str | None = None
    prompt: str | None = None
    input_ids: list[int]
    tokens: list[TokenInfo]
    target_a: int
    target_b: int | None
    target_a_text: str | None = None
    target_b_text: str | None = None
    m: float
    logit_a: float
    logit_b: float | None
    prob_a: float | None = None
    prob_b: float | None = None
    rank_a: int | None = Field(None, description="1-based rank of A's token.")
    rank_b: int | None = None
    top: list[TokenProb] = Field(default_factory=list, description="Top next tokens.")
    params: CircuitSettings = Field(description="The settings, normalized.")
    completeness: Completeness
    nodes: list[Node]
    neurons: list[NeuronTotal] = Field(
        default_factory=list, description="Kept neurons, influence summed over positions."
    )
    edges: list[Edge] = Field(default_factory=list)
    always_on: list[AlwaysOnNeuron] = Field(
        default_factory=list, description="Always-on neurons flagged in this prompt "
                                          "(dropped from the nodes unless the setting is off).")
    always_on_source: str | None = Field(
        None, description="The exemplar index whose always-on flags joined the prompt's.")
    faithfulness: Faithfulness | None = None
    timing: Timing = Field(default_factory=Timing)
    cache_key: str | None = None

    # The dense Attribution (tensors) stays in memory only; it is never serialised.
    _attribution: Any = PrivateAttr(default=None)

    @property
    def attribution(self) -> Any:
        return self._attribution

    @property
    def influence_sum(self) -> float:
        return float(sum(n.influence for n in self.nodes))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)  # never leave a half-written result behind
        return path

    @classmethod
    def load(cls, path: str | Path) -> CircuitResult:
        return cls.model_validate_json(Path(path).read_text())


def cache_key(
    model_name: str,
    model_revision: str | None,
    input_ids: list[int],
    target_a: int,
    target_b: int | None,
    params: CircuitSettings | dict[str, Any],
    always_on_source: str | None = None,
) -> str:
    """Stable id of a run: same model weights, token ids, answers, (normalized)
    settings and, when an index's always-on flags were used, which index."""
    if isinstance(params, CircuitSettings):
        params = params.normalized().model_dump(mode="json")
    if params.get("min_influence") is None:  # keys of runs from before it existed stay
        params = {k: v for k, v in params.items() if k != "min_influence"}
    payload = {
        "schema": SCHEMA_VERSION,
        "model": model_name,
        "revision": model_revision,
        "input_ids": [int(i) for i in input_ids],
        "target_a": int(target_a),
        "target_b": None if target_b is None else int(target_b),
        "params": params,
    }
    if always_on_source is not None:  # keys of runs without index flags stay as they were
        payload["always_on_source"] = always_on_source
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
