"""Supernodes: named groups of a run's nodes, edited as one, and automatic suggestions.

A group's members are ``{layer, neuron, position}``; ``position`` None means the neuron
at every position where the run kept it. Every member must be a node the run kept, so a
group always means something on that run's graph.

Suggestions are communities of the run's graph found by Louvain modularity
(``networkx.community.louvain_communities``) over the kept nodes joined by their edges.
An edge weighs its share of the target's input, |w_st| / sum_s |w_st| (circuit-tracer
normalises its adjacency the same way before computing influence): raw weights are
heavy-tailed, and on the seed prompt the few first-position neurons with massive
activations otherwise pull 162 of 168 nodes into one community. Modularity needs
non-negative weights, so the sign (which answer an edge helps) is left out. Edges into
the metric are left out too: every node has one, and that hub would join everything.
A fixed seed makes the suggestions the same on every call.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Literal

import networkx as nx
from pydantic import BaseModel, Field, field_validator

from analysis.attribution.patching import NeuronEdit
from analysis.attribution.results import CircuitResult, Edge, Node
from analysis.errors import InputError
from analysis.neuron_ref import neuron_name

MAX_MEMBERS = 200
MAX_NAME = 80


class GroupMember(BaseModel):
    layer: int = Field(ge=0)
    neuron: int = Field(ge=0)
    position: int | None = Field(None, ge=0, description="None: every kept position.")

    def __str__(self) -> str:
        where = "every kept position" if self.position is None else f"position {self.position}"
        return f"{neuron_name(self.layer, self.neuron)} at {where}"


class GroupSpec(BaseModel):
    """A supernode as a user asks for it: a name and the run's nodes it groups."""

    name: str = Field(min_length=1, max_length=MAX_NAME)
    members: list[GroupMember] = Field(min_length=1, max_length=MAX_MEMBERS)

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the name is empty")
        return value


class GroupScale(BaseModel):
    """Zero the whole group, or multiply every member's activation by ``factor``."""

    mode: Literal["zero", "scale"] = "zero"
    factor: float = Field(0.0, ge=-100, le=100, allow_inf_nan=False)

    @property
    def scale(self) -> float:
        return 0.0 if self.mode == "zero" else self.factor


class SuggestedGroup(BaseModel):
    name: str
    members: list[GroupMember]
    influence: float = Field(description="Sum of the members' influence on m.")
    towards: Literal["A", "B"]
    internal_weight: float = Field(description="Sum of |weight| of the edges inside the group.")


def member_nodes(result: CircuitResult, members: list[GroupMember]) -> list[Node]:
    """The run's kept nodes the members name; a member that names none is an InputError
    that says which one."""
    by_neuron: dict[tuple[int, int], list[Node]] = defaultdict(list)
    for node in result.nodes:
        by_neuron[(node.layer, node.neuron)].append(node)
    found: dict[str, Node] = {}
    for i, member in enumerate(members):
        kept = by_neuron.get((member.layer, member.neuron), [])
        if member.position is not None:
            kept = [n for n in kept if n.position == member.position]
        if not kept:
            raise InputError(f"member {i + 1} ({member}) is not a node this run kept",
                             field=f"members.{i}")
        found.update((n.node_id, n) for n in kept)
    return list(found.values())


def group_edits(result: CircuitResult, members: list[GroupMember],
                scale: float) -> list[NeuronEdit]:
    """One edit per neuron, at the positions of its member nodes."""
    positions: dict[tuple[int, int], set[int]] = defaultdict(set)
    for node in member_nodes(result, members):
        positions[(node.layer, node.neuron)].add(node.position)
    return [NeuronEdit(layer=layer, neuron=neuron, scale=scale, positions=sorted(where))
            for (layer, neuron), where in sorted(positions.items())]


def _inner_edges(result: CircuitResult) -> list[Edge]:
    """Edges between two different kept nodes (the metric left out)."""
    kept = {n.node_id for n in result.nodes}
    return [e for e in result.edges
            if e.source in kept and e.target in kept and e.source != e.target]


def run_graph(result: CircuitResult) -> nx.Graph:
    """The kept nodes joined by each edge's share of its target's input |weight| (both
    directions summed)."""
    edges = _inner_edges(result)
    inputs: dict[str, float] = defaultdict(float)
    for edge in edges:
        inputs[edge.target] += abs(edge.weight)
    shares: dict[tuple[str, str], float] = defaultdict(float)
    for edge in edges:
        if inputs[edge.target] > 0:
            pair = (min(edge.source, edge.target), max(edge.source, edge.target))
            shares[pair] += abs(edge.weight) / inputs[edge.target]
    graph = nx.Graph()
    graph.add_nodes_from(n.node_id for n in result.nodes)
    graph.add_weighted_edges_from((s, t, w) for (s, t), w in shares.items())
    return graph


def _describe(nodes: list[Node], tokens: dict[int, str], towards: str) -> str:
    """e.g. ``L20-L29 at 'is' → B, led by L29/N1126`` (nodes strongest first)."""
    layers = sorted({n.layer for n in nodes})
    span = f"L{layers[0]}" if len(layers) == 1 else f"L{layers[0]}-L{layers[-1]}"
    position, _ = Counter(n.position for n in nodes).most_common(1)[0]
    token = tokens.get(position, str(position)).strip() or repr(tokens.get(position, ""))
    return f"{span} at '{token}' → {towards}, led by {nodes[0].name}"[:MAX_NAME]


def suggest_groups(result: CircuitResult, max_groups: int = 8, min_size: int = 2,
                   seed: int = 0) -> list[SuggestedGroup]:
    """Communities of the run's graph with at least ``min_size`` nodes, strongest
    |influence| first."""
    graph = run_graph(result)
    if graph.number_of_edges() == 0:
        return []
    communities = nx.community.louvain_communities(graph, weight="weight", seed=seed)
    by_id = {n.node_id: n for n in result.nodes}
    tokens = {t.position: t.text or str(t.id) for t in result.tokens}
    inner = _inner_edges(result)
    groups = []
    for community in communities:
        if len(community) < min_size:
            continue
        nodes = sorted((by_id[i] for i in community), key=lambda n: -abs(n.influence))
        influence = float(sum(n.influence for n in nodes))
        towards: Literal["A", "B"] = "A" if influence > 0 else "B"
        inside = sum(abs(e.weight) for e in inner
                     if e.source in community and e.target in community)
        groups.append(SuggestedGroup(
            name=_describe(nodes, tokens, towards),
            members=[GroupMember(layer=n.layer, neuron=n.neuron, position=n.position)
                     for n in nodes[:MAX_MEMBERS]],
            influence=influence, towards=towards, internal_weight=float(inside)))
    groups.sort(key=lambda g: -abs(g.influence))
    seen: Counter[str] = Counter()
    for group in groups[:max_groups]:  # names must be unique within a run
        seen[group.name] += 1
        if seen[group.name] > 1:
            group.name = f"{group.name} ({seen[group.name]})"[:MAX_NAME]
    return groups[:max_groups]
