"""Export to the circuit-tracer / Neuronpedia attribution-graph JSON.

Layout as written by ``circuit_tracer.utils.create_graph_files`` (graph_models.py):
``metadata`` (slug, scan, transcoder_list, prompt_tokens, prompt, node_threshold,
schema_version), ``qParams``, ``nodes`` and ``links`` (source, target, weight). Every
export validates against Neuronpedia's upload schema (tests/fixtures/conformance).

Mapping choices, so the field's viewers read our neuron graphs as we mean them and
neither circuit-tracer's viewer nor Neuronpedia's graph page crashes on them:

* neuron nodes use ``node_id = "{layer}_{neuron}_{pos}"`` and ``feature_type =
  "mlp neuron"`` (NEURON_TYPE). circuit-tracer's viewer fetches a node's examples only
  for ``"cross layer transcoder"`` (from ``huggingface.co/<scan>/...``); any other kind
  shows its label and no examples, so clicking one of our neurons fetches nothing.
  ``feature`` is the Cantor pairing of (layer, neuron) like circuit-tracer's; ``clerp``
  is the user's label or ``L{l}/N{n}``;
* ``influence`` is what circuit-tracer's viewer prunes on: the cumulative share of the
  exported nodes' total |influence| up to and including the node (nodes ranked by
  |influence|, so the strongest is smallest, the last is exactly 1). Our signed influence
  in logit units is kept in ``logit_influence``;
* ``metadata.node_threshold`` is 1.0, the viewer's default cut on that share, so it opens
  on every exported node and its slider prunes from there. Our own pruning (tau or
  cumulative mass, max nodes, edge threshold) is in ``metadata.pruning_settings`` and the
  model, method and metric in ``metadata.generation_settings``;
* ONE output node, for the metric: every kept neuron links into it with its effect on
  ``m``. For a contrast it reads ``m = logit difference "' A' − ' B'" (p=0.271)``: the
  viewers show the text between the first pair of double quotes as the output's name and
  parse the number after ``(p=``, which here is ``sigmoid(m)``, the probability that A
  beats B in a two-way choice between them (not A's softmax probability, which is in
  ``generation_settings.prob_a``). For one target it is the plain ``Output " A" (p=...)``
  with A's softmax probability and the links are effects on ``logit(A)``. (The viewers'
  own ``logitDiff`` query builds a node without ``(p=`` that crashes both of them, so
  the export neither needs nor suggests it);
* one remainder node (REMAINDER_TYPE, an "error" kind to both viewers) links into the
  output node with ``m`` minus the kept neurons' summed effects: everything the exported
  circuit leaves out (other neurons, attention, embeddings, biases, the method's own
  error), so the links into the output add up to ``m``. It is drawn in the model's last
  layer at the last position, which also gives Neuronpedia's formatter a nonzero layer
  when every kept neuron is in layer 0 (it throws "No layer found" otherwise);
* ``metadata.scan`` is ``circuitlab-neurons.<model>``: no hub id starts so, so nobody's
  examples are shown as our neurons'. The model's own name is in
  ``generation_settings.model``;
* every prompt position gets an embedding node ``E_{token}_{pos}`` (no links), as in
  circuit-tracer's files.
"""

from __future__ import annotations

import json
import math
import re
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from analysis.attribution.results import METRIC_NODE_ID, CircuitResult

# Neuronpedia refuses an upload whose scan or slug has other characters.
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_.-]+")
SCAN_PREFIX = "circuitlab-neurons."
# Not circuit-tracer's "cross layer transcoder": its viewer fetches examples from a model
# hub for that kind only, and ours are MLP neurons, not transcoder features.
NEURON_TYPE = "mlp neuron"
# An "error" kind to both viewers (they test feature_type for "error"), but not their own
# "mlp reconstruction error", whose label Neuronpedia overwrites with "Err: mlp ...".
REMAINDER_TYPE = "circuit remainder error"


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def _pp(token: str | None) -> str:
    """A token as circuit-tracer prints it; a double quote would end the viewer's parse of
    ``Output "tok"``, so it becomes a full-width one."""
    text = token or ""
    return (text.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")
            .replace('"', "＂"))


def safe_name(text: str) -> str:
    """``text`` with every character Neuronpedia's slug/scan rule refuses as ``-``."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text) or "graph"


def scan_id(model: str | None) -> str:
    return SCAN_PREFIX + safe_name(model or "model")


def generator() -> dict[str, str]:
    """Who wrote the file, as Neuronpedia's schema wants it (an object)."""
    try:
        version = package_metadata.version("circuitlab")
        urls = package_metadata.metadata("circuitlab").get_all("Project-URL") or []
    except package_metadata.PackageNotFoundError:  # running from a source tree
        version, urls = "unknown", []
    url = urls[0].split(",", 1)[-1].strip() if urls else ""
    return {"name": "circuitlab", "version": version, "url": url}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def metric_label(name_a: str, name_b: str | None) -> str:
    """The metric in words, with the actual tokens: ``logit(' al') − logit(' ren')``."""
    if name_b is None:
        return f"logit('{name_a}')"
    return f"logit('{name_a}') − logit('{name_b}')"


def output_name(name_a: str, name_b: str | None) -> str:
    """The output node's name in the viewers (short: it is drawn at -45° above the graph):
    ``' al' − ' ren'`` for a contrast, the token itself for one target."""
    return name_a if name_b is None else f"'{name_a}' − '{name_b}'"


def _output_node(result: CircuitResult, name_a: str, name_b: str | None, layer: int,
                 pos: int) -> dict[str, Any]:
    """The one output node. The viewers name it by the text between the first pair of
    double quotes and read the number after ``(p=``: for a contrast that is sigmoid(m),
    the probability that A beats B in a two-way choice; for one target, A's softmax
    probability."""
    if name_b is None:
        p = result.prob_a if result.prob_a is not None else 0.0
        clerp = f'Output "{name_a}" (p={p:.3f})'
    else:
        p = _sigmoid(result.m)
        clerp = f'm = logit difference "{output_name(name_a, name_b)}" (p={p:.3f})'
    token_id = result.target_a
    return {
        "node_id": f"{layer}_{token_id}_{pos}",
        "jsNodeId": f"L_{token_id}-{pos}",
        "feature": token_id,
        "layer": str(layer),
        "ctx_idx": pos,
        "feature_type": "logit",
        "token_prob": p,
        "is_target_logit": True,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "clerp": clerp,
        "influence": None,
        "activation": None,
    }


def _remainder_node(result: CircuitResult, n_layers: int, pos: int,
                    metric: str) -> tuple[dict[str, Any], float]:
    """The part of m the kept neurons do not carry, and its weight into the output."""
    rest = result.m - result.influence_sum
    layer = max(n_layers - 1, 0)
    node = {
        "node_id": f"R_{layer}_{pos}",
        "jsNodeId": f"R_{layer}-{pos}",
        "feature": -1,
        "layer": str(layer),
        "ctx_idx": pos,
        "feature_type": REMAINDER_TYPE,
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "clerp": f"Rest of {metric} outside the kept neurons ({rest:+.3f}): other neurons, "
                 "attention, embeddings, biases, attribution error; all layers, drawn "
                 "in the last",
        "influence": None,
        "activation": None,
    }
    return node, rest


def _neuron_nodes(result: CircuitResult) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Neuron nodes with their cumulative |influence| share, and our id -> theirs."""
    ranked = sorted(result.nodes, key=lambda n: -abs(n.influence))
    total = sum(abs(n.influence) for n in ranked)
    running = 0.0
    nodes: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    for i, node in enumerate(ranked):
        running += abs(node.influence)
        # The last share is exactly 1 so a cut at 1.0 never drops it to rounding.
        share = 1.0 if i == len(ranked) - 1 or total == 0 else min(1.0, running / total)
        nid = f"{node.layer}_{node.neuron}_{node.position}"
        ids[node.node_id] = nid
        nodes.append({
            "node_id": nid,
            "jsNodeId": f"{node.layer}_{node.neuron}-0",
            "feature": _cantor(node.layer, node.neuron),
            "layer": str(node.layer),
            "ctx_idx": node.position,
            "feature_type": NEURON_TYPE,
            "token_prob": 0.0,
            "is_target_logit": False,
            "run_idx": 0,
            "reverse_ctx_idx": 0,
            "clerp": node.label or node.name,
            "influence": share,
            "activation": node.activation,
            "logit_influence": node.influence,
        })
    return nodes, ids


def _embedding_nodes(result: CircuitResult) -> list[dict[str, Any]]:
    return [{
        "node_id": f"E_{tok.id}_{pos}",
        "jsNodeId": f"E_{tok.id}-{pos}",
        "feature": pos,
        "layer": "E",
        "ctx_idx": pos,
        "feature_type": "embedding",
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "clerp": "",
        "influence": None,
        "activation": None,
    } for pos, tok in enumerate(result.tokens)]


def _settings(result: CircuitResult, slug: str, name_a: str,
              name_b: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """generation_settings and pruning_settings: what made this graph, in our terms."""
    p = result.params
    metric = metric_label(name_a, name_b)
    generation: dict[str, Any] = {
        "model": result.model_name or "",
        "model_revision": result.model_revision or "",
        "node_kind": "mlp neuron (input of down_proj) at one position",
        "method": p.method,
        "metric": metric,
        "m": result.m,
        "influence_sum": result.influence_sum,
        "prob_a": result.prob_a,
        "prob_b": result.prob_b,
        "output_node": (
            f"one node for {metric}; its links are each node's effect on it, plus one "
            "remainder node carrying the rest of it, so they add up to m; "
            + ("(p=) is sigmoid(m), the probability that A beats B in a two-way choice"
               if name_b is not None else "(p=) is A's softmax probability")),
        "viewer_query": f"slug={quote(slug)}",
    }
    pruning: dict[str, Any] = {"mode": p.mode, "per_layer_top_k": p.per_layer_top_k,
                               "n_nodes": len(result.nodes),
                               "drop_always_on": p.drop_always_on,
                               "n_always_on": len(result.always_on)}
    if p.mode == "tau":
        pruning["tau"] = p.tau  # keep |influence| >= tau * |m|
    else:
        pruning["mass"] = p.mass  # keep up to this share of |influence|
    if p.max_nodes is not None:
        pruning["max_nodes"] = p.max_nodes
    if p.edges:
        # Ours is an absolute |weight| cut, not circuit-tracer's cumulative edge_threshold.
        pruning["min_edge_weight"] = p.edge_threshold
        pruning["edge_normalization"] = p.edge_normalization
    return generation, pruning


def to_circuit_tracer(result: CircuitResult, slug: str | None = None) -> dict[str, Any]:
    """The graph as a JSON-ready dict in circuit-tracer's format."""
    n_layers = _n_layers(result)
    last = len(result.input_ids) - 1
    logit_layer = n_layers + 1
    tokens = [t.text if t.text is not None else str(t.id) for t in result.tokens]
    model = result.model_name or "model"
    slug = safe_name(slug or f"{model}-{(result.cache_key or 'graph')[:12]}")

    nodes, node_ids = _neuron_nodes(result)
    nodes += _embedding_nodes(result)
    name_a = _pp(result.target_a_text) or str(result.target_a)
    name_b = None
    if result.target_b is not None:
        name_b = _pp(result.target_b_text) or str(result.target_b)
    out = _output_node(result, name_a, name_b, logit_layer, last)
    remainder, rest = _remainder_node(result, n_layers, last, metric_label(name_a, name_b))
    nodes += [remainder, out]

    # Every kept neuron's link into the output is its effect on m (its influence), kept
    # whatever the edge threshold; the neuron-to-neuron edges follow the run's.
    links = [{"source": node_ids[n.node_id], "target": out["node_id"],
              "weight": n.influence} for n in result.nodes]
    links += [
        {"source": node_ids[e.source], "target": node_ids[e.target], "weight": e.weight}
        for e in result.edges
        if e.target != METRIC_NODE_ID and e.source in node_ids and e.target in node_ids
    ]
    links.append({"source": remainder["node_id"], "target": out["node_id"], "weight": rest})

    generation, pruning = _settings(result, slug, name_a, name_b)
    contrast = f'"{name_a}" vs "{name_b}"' if name_b is not None else f'"{name_a}"'
    return {
        "metadata": {
            "slug": slug,
            "scan": scan_id(result.model_name),
            "transcoder_list": [],
            "prompt_tokens": [_pp(t) for t in tokens],
            "prompt": result.prompt or "".join(tokens),
            "node_threshold": 1.0,
            "schema_version": 1,
            "info": {
                "description": f"MLP-neuron circuit of {model} for {contrast}, "
                               f"{generation['metric']} = {result.m:+.3f} "
                               f"({result.params.method}). Open with "
                               f"index.html?{generation['viewer_query']}",
                "generator": generator(),
            },
            "generation_settings": generation,
            "pruning_settings": pruning,
        },
        "qParams": {
            "pinnedIds": [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }


def write_viewer_files(graph: dict[str, Any], directory: str | Path) -> Path:
    """Write ``<slug>.json`` and add it to ``graph-metadata.json`` in ``directory``: the
    layout circuit-tracer's local server reads (``circuit-tracer start-server
    --graph_file_dir directory``). Returns the graph file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = graph["metadata"]
    path = directory / f"{meta['slug']}.json"
    path.write_text(json.dumps(graph))
    index_path = directory / "graph-metadata.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"graphs": []}
    entry = {k: meta[k] for k in ("slug", "scan", "transcoder_list", "prompt_tokens",
                                  "prompt", "node_threshold", "schema_version")}
    index["graphs"] = [g for g in index["graphs"] if g.get("slug") != entry["slug"]] + [entry]
    index_path.write_text(json.dumps(index, indent=1))
    return path


def _n_layers(result: CircuitResult) -> int:
    if result.completeness.layer_sums:
        return len(result.completeness.layer_sums)
    return max((n.layer for n in result.nodes), default=0) + 1
