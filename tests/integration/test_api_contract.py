"""schemathesis over the whole OpenAPI (issue 16), in the suite: against the app on tiny
checkpoints, every phase the CLI runs (examples, coverage, fuzzing, stateful), all checks:
no 5xx, and every answer keeps the contract (documented status, content type, headers and
schema; schema-valid data accepted, schema-violating data refused; 405 with Allow).

Job-queueing routes run too: the worker is off, so a queued job stays queued and nothing
trains. Two documented allowances, both limits the schema cannot state:
- a schema-valid request may be refused 413 or 429/503 (the prompt's length in *tokens*
  depends on the model's tokenizer; the model's queue may be full), and 422 on
  ``/intervene``, whose edits name layers and neurons of the chosen model;
- ``/jobs/import-yaml`` takes the seeds' YAML file, whose rules (a mapping with known keys)
  are not one JSON Schema, so it is not held to "schema-valid is accepted"; nor is
  ``/corpora``, whose file must be UTF-8 text with non-blank lines (or JSONL objects);
- ``/neurons/{layer}/{neuron}/describe`` answers 422 when the operator configured no LLM
  endpoint (this app has none).
Deterministic and bounded: about a minute on 2 cores."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev extra")

from app.main import create_app  # noqa: E402
from tests.unit.access_apps import tiny_settings  # noqa: E402

pytestmark = pytest.mark.integration

CONFIG = """
[generation]
deterministic = true
max-examples = 25
[checks]
positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "413", "429", "503"]
[[operations]]
include-path = "/api/v1/intervene"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "413", "422", "429", "503"]
[[operations]]
include-path = "/api/v1/jobs/import-yaml"
checks.positive_data_acceptance.enabled = false
[[operations]]
include-path = "/api/v1/corpora"
checks.positive_data_acceptance.enabled = false
[[operations]]
include-path-regex = "/describe$"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "413", "422", "429", "503"]
"""


def test_schemathesis_finds_no_server_error_and_no_contract_violation(
        tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    from schemathesis.engine import Status, events

    app = create_app(tiny_settings(tiny_dirs, tmp_path))
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=schemathesis.Config.from_str(CONFIG))
    requests = server_errors = 0
    operations: set[str] = set()
    violations: collections.Counter[tuple[str, str]] = collections.Counter()
    examples: dict[tuple[str, str], str] = {}
    errors: list[str] = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            operations.add(recorder.label)
            for interaction in recorder.interactions.values():
                requests += 1
                if interaction.response is not None and interaction.response.status_code >= 500:
                    server_errors += 1
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        key = (recorder.label, check.name)
                        violations[key] += 1
                        interaction = recorder.interactions.get(case_id)
                        examples.setdefault(key, repr(interaction.request.uri if interaction
                                                      else case_id)[:300])
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(event)[:500])
    print(f"\nschemathesis: {requests} requests over {len(operations)} operations, "
          f"{server_errors} with 5xx, {sum(violations.values())} contract violations")
    assert not errors, errors
    assert requests > 1000 and len(operations) >= 15
    assert server_errors == 0
    assert not violations, {k: (n, examples[k]) for k, n in violations.items()}
