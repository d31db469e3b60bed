"""Neuron-level circuit attribution for Hugging Face causal LMs (plain PyTorch hooks).

A *node* is one MLP neuron at one token position (the input of the MLP's down
projection). The *metric* is ``m = logit[A] - logit[B]`` at the last position, or
``logit[A]`` when ``target_b`` is None. Influences are in logit units; positive pushes
toward A. Supported families: Llama, Mistral, Qwen2/3, Gemma 1/2/3 text, GPT-2
(`adapters.register_adapter` adds one).

Public API (``model`` is a ``*ForCausalLM`` in eval mode; ``tokenizer`` may be None
everywhere and only labels tokens; user mistakes raise ``analysis.errors.InputError``
naming the field)::

    attribute(model, tokenizer, input_ids, target_a, target_b=None, *,
              method="relp" | "grad_x_act" | "integrated_gradients",
              ig_steps=32, ig_batch_size=16, ig_baseline="auto") -> Attribution
        Dense ``influence``/``activation`` tensors [layers, positions, neurons] (CPU
        float32), ``neuron_totals()`` [layers, neurons], ``completeness`` (sum vs m).

    prune(attr, *, tau=0.15, per_layer_top_k=300, mode="tau" | "cumulative",
          mass=0.8, max_nodes=None) -> list[Node]
    neuron_totals(attr, nodes) -> list[NeuronTotal]   (kept neurons, summed over positions)

    compute_edges(model, attr, nodes, *, normalization="none" | "flow",
                  threshold=0.0, batch_size=32, strategy="sweep") -> list[Edge]
        Direct effects ``a_s * d a_t / d a_s`` (MLPs in between stopped), one sweep of batched
        VJPs down the layers;
        plus one edge per node to ``"metric"`` (weight = influence, raw = direct effect).

    faithfulness(model, attr, nodes, *, mode="zero" | "mean") -> Faithfulness
    ablated_metric(model, input_ids, target_a, target_b, [(layer, pos, neuron)]) -> float
    intervene(model, tokenizer, input_ids, edits: list[NeuronEdit], target_a=None,
              target_b=None, *, top_k=10) -> InterventionResult
    describe_neuron(model, tokenizer, layer, neuron, input_ids=None, *, top_k=10)
        -> NeuronDescription (logit-lens promoted/suppressed tokens, activations)

    CircuitSettings(method=..., tau=..., ...)   every setting of a circuit, declared once
    run_circuit(model, tokenizer, input_ids, target_a, target_b=None, settings=None, *,
                model_name=None, model_revision=None, prompt=None, labels=None)
        -> CircuitResult   (attribution + prune + edges + faithfulness, timed)
    CircuitResult.save(path) / CircuitResult.load(path)
    readout.render_summary(result) / export.to_circuit_tracer(result)  (circuit-tracer /
        Neuronpedia graph JSON): the data and its writers are kept apart
    render_summary(result) -> str
    cache_key(model_name, revision, input_ids, target_a, target_b, settings) -> str
        (computable before running; settings are normalized first)

Hooks modify the model's modules while a call runs: do not run another forward on the
same model object concurrently.
"""

from analysis.attribution.adapters import (
    ArchAdapter,
    get_adapter,
    register_adapter,
    supported_model_types,
)
from analysis.attribution.circuit_settings import CircuitSettings
from analysis.attribution.core import METHODS, Attribution, attribute
from analysis.attribution.edges import EdgeMatrix, compute_edges, edge_matrix
from analysis.attribution.export import to_circuit_tracer
from analysis.attribution.logit_lens import NeuronDescription, describe_neuron, logit_lens
from analysis.attribution.patching import (
    InterventionResult,
    NeuronEdit,
    ablated_metric,
    faithfulness,
    intervene,
)
from analysis.attribution.pipeline import run_circuit
from analysis.attribution.prune import neuron_totals, prune, top_neurons
from analysis.attribution.readout import render_summary
from analysis.attribution.results import (
    CircuitResult,
    Completeness,
    Edge,
    Faithfulness,
    NeuronTotal,
    Node,
    Timing,
    TokenInfo,
    TokenProb,
    TokenScore,
    cache_key,
)

__all__ = [
    "METHODS",
    "ArchAdapter",
    "Attribution",
    "CircuitResult",
    "CircuitSettings",
    "Completeness",
    "Edge",
    "EdgeMatrix",
    "Faithfulness",
    "InterventionResult",
    "NeuronDescription",
    "NeuronEdit",
    "NeuronTotal",
    "Node",
    "Timing",
    "TokenInfo",
    "TokenProb",
    "TokenScore",
    "ablated_metric",
    "attribute",
    "cache_key",
    "compute_edges",
    "describe_neuron",
    "edge_matrix",
    "faithfulness",
    "get_adapter",
    "intervene",
    "logit_lens",
    "neuron_totals",
    "prune",
    "register_adapter",
    "render_summary",
    "run_circuit",
    "supported_model_types",
    "to_circuit_tracer",
    "top_neurons",
]
