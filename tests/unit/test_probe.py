"""The concept probe (issue 22.1): every status it gives a neuron, and the words it puts on
the group intervention, follow from the numbers it shows beside them."""

from __future__ import annotations

import pytest

from analysis.analyze import CircuitRequest, analyze
from analysis.attribution import CircuitSettings
from analysis.attribution.core import attribute
from analysis.attribution.patching import InterventionResult, ablated_metric
from analysis.errors import InputError
from analysis.probe import layer_scale, parse_neurons, probe, read_group
from analysis.prompts import PromptSpec
from tests.unit.access_apps import client_with_run

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"


def test_neuron_names_are_read_in_order_and_a_typo_is_named() -> None:
    assert parse_neurons("L6/N1284, l8/n787 L6/N1284") == [(6, 1284), (8, 787)]
    assert parse_neurons("  ") == []
    with pytest.raises(InputError, match="'6/1284'"):
        parse_neurons("L1/N2, 6/1284")


def _group(before: float, after: float) -> InterventionResult:
    return InterventionResult(edits=[], m_before=before, m_after=after, top_before=[],
                              top_after=[])


def test_the_group_reading_follows_the_sign_the_factor_and_the_band() -> None:
    zeroed_up = read_group(_group(-1.0, -0.5), 0.0)
    assert zeroed_up is not None and zeroed_up.direction == "B"  # removing them helped A
    assert "push B" in zeroed_up.text and "towards A" in zeroed_up.text
    zeroed_down = read_group(_group(-1.0, -1.6), 0.0)
    assert zeroed_down is not None and zeroed_down.direction == "A"
    doubled_up = read_group(_group(-1.0, -0.5), 2.0)  # strengthening them helped A
    assert doubled_up is not None and doubled_up.direction == "A"
    small = read_group(_group(-1.0, -0.95), 0.0)
    assert small is not None and small.direction == "none" and "no change" in small.text
    assert read_group(_group(-1.0, -1.0), 1.0) is None  # scaling by 1 changes nothing


@pytest.fixture(scope="module")
def run(tiny_lms):  # type: ignore[no-untyped-def]
    lm = tiny_lms["llama"]
    req = CircuitRequest(prompt=PromptSpec(prompt=PROMPT), answer_a=" aldosterone",
                         answer_b=" renin",
                         settings=CircuitSettings(tau=0.05, max_nodes=15, ablation=None))
    result = analyze(lm, req)
    attr = attribute(lm.model, lm.tokenizer, result.input_ids, result.target_a,
                     result.target_b, method=result.params.method)
    return lm, result, attr


def test_each_status_agrees_with_the_numbers_beside_it(run) -> None:  # type: ignore[no-untyped-def]
    lm, result, attr = run
    kept = {(n.layer, n.neuron) for n in result.nodes}
    totals = attr.influence.abs().amax(dim=1)  # [L, N]: each neuron's largest |influence|
    # Kept neurons, the strongest ones the circuit left out, and the weakest of all.
    strongest_left = [divmod(int(i), totals.shape[1]) for i in totals.flatten().argsort(
        descending=True) if divmod(int(i), totals.shape[1]) not in kept][:6]
    weakest = [divmod(int(i), totals.shape[1]) for i in totals.flatten().argsort()[:4]]
    chosen = [*list(kept)[:4], *strongest_left, *weakest]
    found = probe(lm.model, lm.tokenizer, result, attr, chosen)
    assert [(p.layer, p.neuron) for p in found.neurons] == chosen
    scale = layer_scale(attr.activation)
    statuses = set()
    for p in found.neurons:
        statuses.add(p.status)
        infl = attr.influence[p.layer, :, p.neuron]
        acts = attr.activation[p.layer, :, p.neuron]
        assert p.influence == pytest.approx(float(infl.sum()), abs=1e-6)
        assert p.activations == pytest.approx(acts.tolist())
        assert p.peak_position == int(acts.abs().argmax())
        largest = float(infl.abs().max())
        if p.status == "in circuit":
            assert (p.layer, p.neuron) in kept
        elif p.status == "inactive":
            assert (p.layer, p.neuron) not in kept
            assert float(acts[1:].abs().max()) < float(scale[p.layer])
            assert f"{float(acts[1:].abs().max()):.3g}" in p.why
        elif p.status == "pruned":
            assert (p.layer, p.neuron) not in kept
            assert float(acts[1:].abs().max()) >= float(scale[p.layer])
            if found.cut is not None and largest < found.cut:
                assert f"< the cut {found.cut:.3g}" in p.why
            else:  # it reaches the cut: only a node cap can have left it out
                assert len(result.nodes) == result.params.max_nodes and "node cap" in p.why
    assert "in circuit" in statuses and statuses - {"in circuit"}
    # The group: every probed neuron zeroed at every position, one forward.
    group = found.group
    assert group is not None and group.m_before == pytest.approx(result.m, abs=1e-4)
    seq = len(result.input_ids)
    zeroed = ablated_metric(lm.model, result.input_ids, result.target_a, result.target_b,
                            [(la, pos, n) for la, n in chosen for pos in range(seq)])
    assert group.m_after == pytest.approx(zeroed, abs=1e-4)
    reading = read_group(group, 0.0)
    assert found.reading == reading


@pytest.fixture(scope="module")
def client_run(tiny_dirs, tmp_path_factory):  # type: ignore[no-untyped-def]
    with client_with_run(tiny_dirs, tmp_path_factory.mktemp("data"), tau=0.05,
                         max_nodes=15) as (client, run):
        yield client, run["run_id"], run["result"]


def test_the_api_and_the_page_say_the_same(client_run) -> None:  # type: ignore[no-untyped-def]
    client, run_id, result = client_run
    node = result["nodes"][0]
    names = [f"L{node['layer']}/N{node['neuron']}", "L0/N1", "L1/N2"]
    r = client.post(f"/api/v1/runs/{run_id}/probe", json={"neurons": names})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["name"] for p in body["neurons"]] == list(dict.fromkeys(names))
    assert body["neurons"][0]["status"] == "in circuit"
    g = body["group"]
    assert g["m_before"] == pytest.approx(result["m"], abs=1e-4)
    page = client.post(f"/runs/{run_id}/probe", data={"neurons": ", ".join(names)}).text
    assert f"{g['m_before']:+.3f} → {g['m_after']:+.3f}" in page
    assert body["reading"] is None or body["reading"]["text"] in page
    for p in body["neurons"]:
        row = page.split(f'data-neuron="{p["name"]}"')[1].split("</tr>")[0]
        assert f'data-status="{p["status"]}"' in row and f"{p['influence']:+.3f}" in row
        assert 'data-action="open-neuron"' in row  # the name opens its panel


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"query": "kidney"}, 422, "build one on /indexes"),
    ({}, 422, "type a concept"),
    ({"neurons": ["L1/N99999"]}, 422, "not in this model"),
    ({"neurons": ["kidney"]}, 422, "L<layer>/N<neuron>"),
    ({"neurons": ["L0/N1"], "factor": 1e9}, 422, "factor"),
    ({"neurons": [f"L0/N{i}" for i in range(33)]}, 422, "neurons"),
])
def test_bad_probes_are_refused_with_a_reason(client_run, body, status, words) -> None:  # type: ignore[no-untyped-def]
    client, run_id, _ = client_run
    r = client.post(f"/api/v1/runs/{run_id}/probe", json=body)
    assert r.status_code == status, r.text
    assert words in r.text
    assert client.post("/api/v1/runs/nope/probe", json={"neurons": ["L0/N1"]}).status_code == 404



def test_a_run_page_says_an_index_is_building_with_its_progress(client_run) -> None:  # type: ignore[no-untyped-def]
    """Issue 22.4: while the model's index is queued or builds, the concept candidates
    say so with tokens, share and ETA (from the build job's progress) and poll for more."""
    from analysis.neurons.corpus import Corpus
    from app.store.indexes import BUILDING
    from app.store.tables import Job

    client, run_id, _ = client_run
    builds = client.app.state.index_builds
    corpus = Corpus.of("kidney-glosses", ["the kidneys filter the blood"])
    row = builds.build("tiny-llama", "rev", corpus, {"kind": "default"}, {})
    queued = client.get(f"/runs/{run_id}/concepts").text
    assert 'id="index-status" data-state="queued"' in queued and "queued" in queued
    assert 'hx-trigger="every 15s"' in queued and "No exemplar index" not in queued
    builds.store.update(row.id, state=BUILDING, tokens_done=5_000, tokens_total=20_000)
    with builds.queue.store.sessions() as s:
        job = s.get(Job, row.job_id)
        job.progress = {"tokens_per_s": 250.0, "eta_s": 60.0}
        s.commit()
    page = client.get(f"/runs/{run_id}/concepts").text
    assert "5,000 of 20,000 tokens (25%)" in page
    assert "about 1.0 min left at 250 tokens/s" in page
    assert "fill in as it grows" in page
