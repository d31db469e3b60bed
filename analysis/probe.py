"""The concept probe: does the model use concept X on this prompt, and which way does it
push? (Stage 4 of the seeds' method, by hypothesis.)

The ranked concept candidates only see the neurons the circuit kept. A researcher who
suspects "kidney" asks about neurons the exemplar index knows for it, wherever they are:
for each one the probe reports

* its **activation** at every position of the prompt (and, with an index, as a share of
  its peak over the corpus), so "inactive here" is a number, not a guess;
* its **attributed influence** on m, from a fresh dense attribution of the run's prompt
  with the run's method (the stored run keeps only the nodes it kept);
* whether the **circuit kept** it, and if not why: below the run's cut, dropped as
  always-on, beyond a node cap, or inactive;
* the **measured effect of the group**: every probed neuron scaled (0 = zeroed) at every
  position together, m, P(A) and P(B) before -> after (one intervention forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, Field

from analysis.attribution.core import Attribution
from analysis.attribution.patching import InterventionResult, NeuronEdit, intervene
from analysis.attribution.prune import threshold
from analysis.attribution.results import CircuitResult
from analysis.errors import InputError
from analysis.evaluation import MIN_DELTA_M
from analysis.neuron_ref import NeuronRef, neuron_name

MAX_PROBED = 32
Status = Literal["in circuit", "pruned", "always-on", "inactive"]


class ProbedNeuron(BaseModel):
    layer: int
    neuron: int
    name: str
    status: Status
    why: str = Field(description="The status in words, with the number that decided it.")
    influence: float = Field(description="Attributed influence on m, summed over positions.")
    by_position: list[float] = Field(description="Attributed influence at each position.")
    activations: list[float] = Field(description="Activation at each position.")
    peak_position: int
    peak_share: float | None = Field(
        None, description="max |activation| here / its top activation over the index corpus.")
    description: str | None = None
    example: str | None = None
    score: float | None = Field(None, description="The search's match score.")

    @property
    def towards(self) -> str:
        return "A" if self.influence > 0 else "B"


class GroupReading(BaseModel):
    """What the group intervention says, in words decided by its own numbers."""

    delta_m: float
    direction: Literal["A", "B", "none"] = Field(
        description="Which answer the group pushes, read from the sign of delta_m and "
                    "whether the factor weakened (< 1) or strengthened (> 1) the neurons.")
    text: str


def read_group(group: InterventionResult, factor: float,
               band: float = MIN_DELTA_M) -> GroupReading | None:
    """A move of m within ``band`` (the verdicts' no-change band) is no change. Weakening
    the group (factor < 1) that raises m means it was pushing B; strengthening it
    (factor > 1) that raises m means it pushes A."""
    if group.m_before is None or group.m_after is None or factor == 1:
        return None
    dm = group.m_after - group.m_before
    if abs(dm) < band:
        return GroupReading(delta_m=dm, direction="none",
                            text=f"no change: |Δm| {abs(dm):.3f} is under {band:g}")
    weakened = factor < 1
    pushes: Literal["A", "B"] = ("B" if dm > 0 else "A") if weakened else (
        "A" if dm > 0 else "B")
    verb = "weakening" if weakened else "strengthening"
    return GroupReading(delta_m=dm, direction=pushes,
                        text=f"together they push {pushes}: {verb} them moves m towards "
                             f"{'A' if dm > 0 else 'B'}")


class ProbeResult(BaseModel):
    query: str | None
    tokens: list[str]
    cut: float | None = Field(description="The run's |influence| cut (tau mode), if any.")
    neurons: list[ProbedNeuron]
    group: InterventionResult | None = None
    reading: GroupReading | None = None
    factor: float
    rule: str


RULE = ("in circuit: the run kept it at some position · always-on: flagged and dropped by "
        "the run · inactive: its largest |activation| after the first position is below "
        "the layer's scale on this prompt (the RMS over neurons and positions) · pruned: "
        "active, but its |influence| at every position is below the run's cut (or a node "
        "cap kept larger ones)")


def parse_neurons(text: str) -> list[tuple[int, int]]:
    """``"L6/N1284, L8/N787"`` -> [(6, 1284), (8, 787)], in order, without repeats."""
    return [(r.layer, r.neuron) for r in NeuronRef.parse_many(text)]


def layer_scale(activation: torch.Tensor) -> torch.Tensor:
    """``[L]``: each layer's activation scale on the prompt, the RMS over neurons and the
    positions after the first (the index measures 'active' against the same kind of
    number over its corpus)."""
    later = activation[:, 1:] if activation.shape[1] > 1 else activation
    return later.float().pow(2).mean(dim=(1, 2)).sqrt()


def probe_neurons(result: CircuitResult, attr: Attribution,
                  neurons: Sequence[tuple[int, int]], *,
                  peaks: dict[tuple[int, int], float] | None = None,
                  ) -> list[ProbedNeuron]:
    """Each neuron's activation, attributed influence and circuit status on the run's
    prompt (module docstring). ``attr``: a dense attribution of the run's prompt;
    ``peaks``: each neuron's top activation over an index corpus."""
    peaks = peaks or {}
    kept = {(n.layer, n.neuron) for n in result.nodes}
    dropped = {(f.layer, f.neuron): f.why for f in result.always_on if f.dropped}
    p = result.params
    cut = _cut(result)
    if cut is None:  # cumulative mode: the smallest kept node is the cut it drew
        cut = min((abs(n.influence) for n in result.nodes), default=None)
    scale = layer_scale(attr.activation)
    n_layers, _, n_neurons = attr.influence.shape
    out: list[ProbedNeuron] = []
    for layer, neuron in neurons:
        if not (0 <= layer < n_layers and 0 <= neuron < n_neurons):
            raise InputError(f"{neuron_name(layer, neuron)} is not in this model ({n_layers} "
                             f"layers of {n_neurons} neurons)", field="neurons")
        acts = attr.activation[layer, :, neuron].float()
        infl = attr.influence[layer, :, neuron].float()
        later = acts[1:] if acts.numel() > 1 else acts
        top = float(later.abs().max())
        peak_pos = int(acts.abs().argmax())
        largest = float(infl.abs().max())
        key = (layer, neuron)
        if key in kept:
            status: Status = "in circuit"
            positions = [n.position for n in result.nodes if (n.layer, n.neuron) == key]
            why = f"kept at position(s) {', '.join(map(str, positions))}"
        elif key in dropped:
            status, why = "always-on", f"dropped as always-on: {dropped[key]}"
        elif top < float(scale[layer]):
            status = "inactive"
            why = (f"largest |activation| {top:.3g} is below layer {layer}'s scale "
                   f"{float(scale[layer]):.3g} on this prompt")
        else:
            status = "pruned"
            why = (f"largest |influence| {largest:.3g} < the cut {cut:.3g}"
                   if cut is not None and largest < cut else
                   f"largest |influence| {largest:.3g} reaches the cut, but a node cap "
                   f"(max_nodes {p.max_nodes}, per layer {p.per_layer_top_k}) kept others")
        peak = peaks.get(key)
        out.append(ProbedNeuron(
            layer=layer, neuron=neuron, name=neuron_name(layer, neuron), status=status, why=why,
            influence=float(infl.sum()), by_position=infl.tolist(), activations=acts.tolist(),
            peak_position=peak_pos,
            peak_share=float(acts.abs().max()) / abs(peak) if peak else None))
    return out


def group_effect(model: torch.nn.Module, tokenizer: object | None, result: CircuitResult,
                 neurons: Sequence[tuple[int, int]], factor: float) -> InterventionResult:
    """Every neuron of the group scaled by ``factor`` at every position together (one
    forward): m, P(A) and P(B) before -> after."""
    edits = [NeuronEdit(layer=layer, neuron=neuron, scale=factor) for layer, neuron in neurons]
    return intervene(model, tokenizer, result.input_ids, edits, result.target_a,
                     result.target_b, top_k=5)


def probe(model: torch.nn.Module, tokenizer: object | None, result: CircuitResult,
          attr: Attribution, neurons: Sequence[tuple[int, int]], *, factor: float = 0.0,
          query: str | None = None, peaks: dict[tuple[int, int], float] | None = None,
          found: dict[tuple[int, int], dict[str, object]] | None = None) -> ProbeResult:
    """The whole probe of ``neurons`` on the run's prompt (module docstring); ``found``:
    what a search said of each neuron (score, description, example), shown beside it."""
    if not neurons:
        return ProbeResult(query=query, tokens=attr.tokens or [], cut=_cut(result),
                           neurons=[], factor=factor, rule=RULE)
    probed = [p.model_copy(update=(found or {}).get((p.layer, p.neuron), {}))
              for p in probe_neurons(result, attr, neurons, peaks=peaks)]
    group = group_effect(model, tokenizer, result, neurons, factor)
    return ProbeResult(query=query, tokens=attr.tokens or [], cut=_cut(result),
                       neurons=probed, factor=factor, rule=RULE, group=group,
                       reading=read_group(group, factor))


def _cut(result: CircuitResult) -> float | None:
    p = result.params
    return threshold(result.m, p.tau, p.min_influence) if p.mode == "tau" else None


__all__ = ["MAX_PROBED", "RULE", "GroupReading", "ProbeResult", "ProbedNeuron", "group_effect",
           "layer_scale", "parse_neurons", "probe", "probe_neurons", "read_group"]
