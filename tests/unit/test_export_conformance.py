"""The circuit-tracer/Neuronpedia export validates against Neuronpedia's own upload schema
(tests/fixtures/conformance) for tau, cumulative and single-target runs, and reads the way
circuit-tracer's viewer and Neuronpedia's graph formatter read it: the default cut shows
every exported node, one output node carries m under its own name with a "(p=" both
parse, no logitDiff query (its node crashes both), neurons that make no viewer fetch
from a model hub, and a graph whose only neuron is in layer 0 formats (the formatter in
../shared/realclient runs in node)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from jsonschema import Draft7Validator

from analysis.attribution import CircuitResult, CircuitSettings, run_circuit
from analysis.attribution.export import (
    NEURON_TYPE,
    REMAINDER_TYPE,
    scan_id,
    to_circuit_tracer,
    write_viewer_files,
)
from tests.conftest import REALCLIENT
from tests.unit.tiny_models import build, random_ids

SCHEMA = Path(__file__).parents[1] / "fixtures" / "conformance" / "neuronpedia-graph-schema.json"
NAME = re.compile(r"[a-zA-Z0-9_.-]+")  # Neuronpedia's extra rule for scan and slug
A, B = 5, 17


class Tok:
    def decode(self, ids: list[int]) -> str:
        return f" w{ids[0]}"


RUNS = {
    "tau": (B, CircuitSettings(tau=0.02, max_nodes=30)),
    "cumulative": (B, CircuitSettings(mode="cumulative", mass=0.6, max_nodes=30)),
    "single-target": (None, CircuitSettings(tau=0.02, max_nodes=30)),
}


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="module", params=list(RUNS))
def run(request: pytest.FixtureRequest) -> CircuitResult:
    target_b, settings = RUNS[request.param]
    return run_circuit(build("llama", layers=3), Tok(), random_ids(8), A, target_b, settings,
                       model_name="tiny-llama", model_revision="r1", prompt="some prompt")


def errors(validator: Draft7Validator, graph: dict) -> list[str]:
    return sorted(f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(graph))


def test_export_validates_against_neuronpedias_schema(validator: Draft7Validator,
                                                      run: CircuitResult) -> None:
    graph = to_circuit_tracer(run, slug="run-1")
    assert errors(validator, graph) == []
    meta = graph["metadata"]
    assert NAME.fullmatch(meta["scan"]) and NAME.fullmatch(meta["slug"])
    assert set(meta["info"]["generator"]) == {"name", "version", "url"}
    assert isinstance(meta["node_threshold"], float) and 0 < meta["node_threshold"] <= 1


def test_the_schema_catches_what_the_old_export_wrote(validator: Draft7Validator,
                                                      run: CircuitResult) -> None:
    """The validator is not vacuous: the two faults Neuronpedia reported are refused."""
    graph = to_circuit_tracer(run)
    graph["metadata"]["info"]["generator"] = "circuitlab"
    graph["metadata"]["node_threshold"] = None
    assert errors(validator, graph) == [
        "/metadata/info/generator: 'circuitlab' is not of type 'object'",
        "/metadata/node_threshold: None is not of type 'number'",
    ]


def test_scan_and_slug_are_ours_and_legal_for_any_model_name(run: CircuitResult) -> None:
    hub_named = run.model_copy(update={"model_name": "meta-llama/Llama-3.1-8B-Instruct"})
    meta = to_circuit_tracer(hub_named, slug="a run/with spaces")["metadata"]
    assert meta["scan"] == "circuitlab-neurons.meta-llama-Llama-3.1-8B-Instruct"
    assert meta["scan"] == scan_id("meta-llama/Llama-3.1-8B-Instruct")
    assert meta["slug"] == "a-run-with-spaces"
    assert meta["generation_settings"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert NAME.fullmatch(to_circuit_tracer(hub_named)["metadata"]["slug"])


def test_viewer_default_cut_shows_every_exported_node(run: CircuitResult) -> None:
    """circuit-tracer's viewer keeps a feature node when influence <= node_threshold; the
    influence is a cumulative |influence| share, smallest for the strongest node."""
    graph = to_circuit_tracer(run)
    cut = graph["metadata"]["node_threshold"]
    features = [n for n in graph["nodes"] if n["feature_type"] == NEURON_TYPE]
    assert len(features) == len(run.nodes)
    assert all(n["influence"] <= cut for n in features)
    ranked = sorted(features, key=lambda n: n["influence"])
    shares = [n["influence"] for n in ranked]
    assert shares[-1] == 1.0 and shares[0] > 0
    strengths = [abs(n["logit_influence"]) for n in ranked]
    assert strengths == sorted(strengths, reverse=True)
    total = sum(strengths)
    assert shares[0] == pytest.approx(strengths[0] / total)
    # Our pruning lives in pruning_settings, in our own terms.
    pruning = graph["metadata"]["pruning_settings"]
    assert pruning["mode"] == run.params.mode and pruning["n_nodes"] == len(run.nodes)
    assert ("tau" in pruning) == (run.params.mode == "tau")
    assert pruning["drop_always_on"] is run.params.drop_always_on
    # The remainder node has no share, so no cut of the slider drops it.
    assert [n["influence"] for n in graph["nodes"] if n["feature_type"] == REMAINDER_TYPE] \
        == [None]


def _viewer_token(clerp: str) -> str:
    return clerp.split('"')[1].split('" k(p=')[0]  # the name both viewers show for an output


def _viewer_p(clerp: str) -> float:
    return float(clerp.split("(p=")[1].split(")")[0])  # as both viewers read logitPct


def test_one_output_node_carries_m(run: CircuitResult) -> None:
    """One output node for the metric, named for it with the actual tokens; every kept
    neuron's link into it is its effect on m, and the remainder node's link makes the sum
    exactly m. (Before: A's and B's nodes, `Output " w5"` carrying effects on m.)"""
    graph = to_circuit_tracer(run)
    outputs = [n for n in graph["nodes"] if n["feature_type"] == "logit"]
    assert len(outputs) == 1
    out = outputs[0]
    assert out["is_target_logit"] is True
    if run.target_b is None:
        assert _viewer_token(out["clerp"]) == f" w{A}"
        assert _viewer_p(out["clerp"]) == pytest.approx(run.prob_a, abs=5e-4)
    else:
        assert _viewer_token(out["clerp"]) == f"' w{A}' − ' w{B}'"
        assert out["clerp"].startswith('m = logit difference "')
        # sigmoid(m): the probability that A beats B in a two-way choice.
        assert _viewer_p(out["clerp"]) == pytest.approx(1 / (1 + math.exp(-run.m)), abs=5e-4)
        assert out["token_prob"] == pytest.approx(1 / (1 + math.exp(-run.m)))
        assert "sigmoid(m)" in graph["metadata"]["generation_settings"]["output_node"]
    into = {link["source"]: link["weight"] for link in graph["links"]
            if link["target"] == out["node_id"]}
    neurons = {f"{n.layer}_{n.neuron}_{n.position}": n.influence for n in run.nodes}
    remainder = [n for n in graph["nodes"] if n["feature_type"] == REMAINDER_TYPE]
    assert len(remainder) == 1 and "outside the kept neurons" in remainder[0]["clerp"]
    rest = into.pop(remainder[0]["node_id"])
    assert into == pytest.approx(neurons)
    assert rest == pytest.approx(run.m - run.influence_sum)
    assert sum(into.values()) + rest == pytest.approx(run.m)


def test_no_logit_diff_query(run: CircuitResult) -> None:
    """The viewers' logitDiff node has no "(p=" and crashes both; the export never asks
    for it: the documented query is the slug alone."""
    graph = to_circuit_tracer(run, slug="run-1")
    query = parse_qs(graph["metadata"]["generation_settings"]["viewer_query"])
    assert query == {"slug": ["run-1"]}
    assert "logitDiff" not in json.dumps(graph)


def test_neurons_are_not_transcoder_features(run: CircuitResult) -> None:
    """circuit-tracer's viewer fetches a node's examples from huggingface.co/<scan> only
    for "cross layer transcoder" nodes; ours are MLP neurons with no examples there."""
    graph = to_circuit_tracer(run)
    kinds = {n["feature_type"] for n in graph["nodes"]}
    assert kinds == {NEURON_TYPE, REMAINDER_TYPE, "embedding", "logit"}
    assert NEURON_TYPE == "mlp neuron"
    detail = REALCLIENT / "viewer" / "attribution_graph" / "init-cg-feature-detail.js"
    if detail.is_file():  # the viewer's own guard on its fetch, where the viewer is here
        source = detail.read_text()
        assert "d.feature_type == 'cross layer transcoder'" in source
        assert f"'{NEURON_TYPE}'" not in source


def layer0_only(run: CircuitResult) -> CircuitResult:
    """The run cut to its strongest layer-0 neuron: a graph whose only neuron is in
    layer 0 (Neuronpedia's formatter took max layer 0 for 'no layer')."""
    first = max((n for n in run.nodes if n.layer == 0), key=lambda n: abs(n.influence))
    return run.model_copy(update={"nodes": [first], "edges": []})


def neuronpedia_format(graph: dict, tmp_path: Path) -> dict:
    """Neuronpedia's own formatCLTGraphData on the file, with the logitDiff the export's
    viewer query asks for, if any (shared/realclient/npfmt, run in node)."""
    runner = REALCLIENT / "npfmt" / "run.js"
    node = shutil.which("node")
    if not runner.is_file() or node is None:
        pytest.skip(f"Neuronpedia's formatter needs {runner} and node (CI: ../shared)")
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    query = parse_qs(graph["metadata"]["generation_settings"].get("viewer_query", ""))
    done = subprocess.run([node, str(runner), str(path), *query.get("logitDiff", [])],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_neuronpedias_formatter_reads_the_export(run: CircuitResult, tmp_path: Path) -> None:
    graph = to_circuit_tracer(run)
    out = neuronpedia_format(graph, tmp_path)
    assert out["ok"] is True, out
    assert out["nodes"] == len(graph["nodes"]) and out["virtual"] == []


def test_neuronpedias_formatter_reads_a_layer0_only_graph(tmp_path: Path) -> None:
    """The single-target graph whose only neuron is in layer 0: the remainder node sits
    in the model's last layer, so the formatter finds a layer."""
    target_b, settings = RUNS["single-target"]
    run = run_circuit(build("llama", layers=3), Tok(), random_ids(8), A, target_b, settings,
                      model_name="tiny-llama", prompt="some prompt")
    graph = to_circuit_tracer(layer0_only(run))
    neurons = [n for n in graph["nodes"] if n["feature_type"] == NEURON_TYPE]
    assert [n["layer"] for n in neurons] == ["0"]
    remainder = next(n for n in graph["nodes"] if n["feature_type"] == REMAINDER_TYPE)
    assert remainder["layer"] == "2"  # the tiny model's last layer
    out = neuronpedia_format(graph, tmp_path)
    assert out == {"ok": True, "nodes": len(graph["nodes"]), "links": 2,
                   "features": len(graph["nodes"]), "virtual": [], "virtual_links": 0}


def test_viewer_files_layout(run: CircuitResult, tmp_path: Path) -> None:
    first = write_viewer_files(to_circuit_tracer(run, slug="one"), tmp_path)
    write_viewer_files(to_circuit_tracer(run, slug="two"), tmp_path)
    write_viewer_files(to_circuit_tracer(run, slug="one"), tmp_path)  # replaces, no repeat
    index = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["two", "one"]
    assert json.loads(first.read_text())["metadata"]["slug"] == "one"
    assert index["graphs"][0]["node_threshold"] == 1.0
