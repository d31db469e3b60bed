"""The circuit-tracer/Neuronpedia export validates against Neuronpedia's own upload schema
(tests/fixtures/conformance) for tau, cumulative and single-target runs, and reads the way
circuit-tracer's viewer reads it: its default cut shows every exported node, the answers'
labels parse, and its logitDiff node carries our metric."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from jsonschema import Draft7Validator

from analysis.attribution import CircuitResult, CircuitSettings, run_circuit
from analysis.attribution.export import scan_id, to_circuit_tracer, write_viewer_files
from analysis.attribution.results import METRIC_NODE_ID
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
    features = [n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"]
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


def _viewer_token(clerp: str) -> str:
    return clerp.split('"')[1].split('" k(p=')[0]  # as the viewer's addVirtualDiff reads it


def test_answers_are_plain_logit_nodes_the_viewer_names(run: CircuitResult) -> None:
    graph = to_circuit_tracer(run)
    logits = [n for n in graph["nodes"] if n["feature_type"] == "logit"]
    expected = [(f" w{A}", run.prob_a)] + ([(f" w{B}", run.prob_b)] if run.target_b else [])
    assert [(_viewer_token(n["clerp"]), float(n["clerp"].split("(p=")[1].split(")")[0]))
            for n in logits] == [(tok, pytest.approx(p, abs=5e-4)) for tok, p in expected]
    assert [n["is_target_logit"] for n in logits] == [True] + [False] * (len(logits) - 1)


def test_logit_diff_rebuilds_our_metric(run: CircuitResult) -> None:
    """What the viewer's logitDiff=A__vs__B node shows: link into A minus link into B for
    each source, which must be each node's effect on m."""
    graph = to_circuit_tracer(run)
    settings = graph["metadata"]["generation_settings"]
    query = parse_qs(settings["viewer_query"])
    assert query["slug"] == [graph["metadata"]["slug"]]
    if run.target_b is None:
        assert "logitDiff" not in query and settings["metric"] == f'logit(" w{A}")'
        return
    token_a, token_b = query["logitDiff"][0].split("__vs__")
    by_token = {_viewer_token(n["clerp"]): n["node_id"] for n in graph["nodes"]
                if n["feature_type"] == "logit"}
    a_id, b_id = by_token[token_a], by_token[token_b]
    into = {}
    for link in graph["links"]:
        if link["target"] in (a_id, b_id):
            sign = 1 if link["target"] == a_id else -1
            into[link["source"]] = into.get(link["source"], 0.0) + sign * link["weight"]
    ours = {f"{n.layer}_{n.neuron}_{n.position}": e.weight for e in run.edges
            if e.target == METRIC_NODE_ID for n in run.nodes if n.node_id == e.source}
    assert into == pytest.approx(ours) and len(ours) == len(run.nodes)


def test_viewer_files_layout(run: CircuitResult, tmp_path: Path) -> None:
    first = write_viewer_files(to_circuit_tracer(run, slug="one"), tmp_path)
    write_viewer_files(to_circuit_tracer(run, slug="two"), tmp_path)
    write_viewer_files(to_circuit_tracer(run, slug="one"), tmp_path)  # replaces, no repeat
    index = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["two", "one"]
    assert json.loads(first.read_text())["metadata"]["slug"] == "one"
    assert index["graphs"][0]["node_threshold"] == 1.0
