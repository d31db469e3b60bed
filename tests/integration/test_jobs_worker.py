"""Real worker processes training a tiny checkpoint: a full fine-tune and a LoRA job run to
succeeded with their metrics, variant row and reloadable output; cancel stops a running
job within a few steps; a worker killed with SIGKILL mid-job leaves the job interrupted
with its log, the queue goes on with the next job, and re-queue runs it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from analysis.correction.config import CorrectionTarget, EvalItem, TrainingConfig
from analysis.correction.evaluate import JobEvaluation
from analysis.models import ModelSpec, load_model
from app.jobs import JobQueue, JobSettings
from app.jobs.job_settings import WorkerConfig
from app.store.jobs import CANCELLED, INTERRUPTED, RUNNING, SUCCEEDED
from app.store.tables import Job, Variant, init_db
from app.store.variants import VariantStore
from tests.unit.test_db import _pg_url
from tests.waiting import PATIENCE_S, wait_for

# Trains with TRL, or starts worker processes or Ray: the integration tier.
pytestmark = pytest.mark.integration

PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"
TEXTS = [
    "Aldosterone is the principal mineralocorticoid hormone in humans.",
    "The neurotransmitter associated with reward is dopamine.",
    "A common side effect of opioid analgesics is constipation.",
    "The capital of France is Paris.",
]
SETTINGS = JobSettings(heartbeat_s=0.5, poll_s=0.2, stale_after_s=30)


def make_cfg(name: str, *, epochs: int = 1, method: str = "full",
             texts: list[str] | None = None) -> TrainingConfig:
    return TrainingConfig(
        name=name, base_model="tiny-llama", texts=texts or TEXTS[:2], epochs=epochs,
        method=method, max_length=64,  # type: ignore[arg-type]
        learning_rate=1e-3,  # big enough to move a tiny random model in a few steps
        target=CorrectionTarget(prompt=PROMPT, answer_a=" aldosterone", answer_b=" renin"),
        eval_set=[EvalItem(prompt="The neurotransmitter associated with reward is",
                           expected=" dopamine", kind="side_effect")])


def long_cfg(name: str) -> TrainingConfig:
    # 4 texts x 50 epochs = 200 steps (~25 s here): long enough to act on mid-run.
    return make_cfg(name, epochs=50, texts=TEXTS)


class Env:
    def __init__(self, root: Path, db_url: str, tiny: Path) -> None:
        self.root, self.db_url = root, db_url
        self.cache_dir, self.data_dir = root / "cache", root / "data"
        self.specs = [ModelSpec(name="tiny-llama", source="local", path=tiny, device="cpu")]
        self.sessions = init_db(db_url)

    def queue(self, settings: JobSettings = SETTINGS) -> JobQueue:
        return JobQueue(db_url=self.db_url, cache_dir=self.cache_dir,
                        data_dir=self.data_dir, specs=self.specs, settings=settings,
                        sessions=self.sessions)


@pytest.fixture(scope="module")
def env(tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("jobs")
    return Env(root, f"sqlite:///{root / 'c.db'}", tiny_dirs["llama"])


@pytest.fixture(scope="module")
def queue(env: Env) -> Iterator[JobQueue]:
    q = env.queue()
    q.start()
    yield q
    q.stop()


def wait_until(cond: Callable[[], bool], what: str) -> None:
    """Wait on a state, with the suite's one generous ceiling (tests/waiting.py)."""
    wait_for(cond, what, poll_s=0.05)


def step_of(queue: JobQueue, job_id: str) -> int:
    return int((queue.get(job_id).progress or {}).get("step") or 0)


def variant_row(queue: JobQueue, job_id: str) -> Variant | None:
    with queue.sessions() as s:
        return s.scalar(select(Variant).where(Variant.job_id == job_id))


def check_succeeded(queue: JobQueue, job_id: str, cfg: TrainingConfig) -> Job:
    job = queue.wait(job_id, timeout=PATIENCE_S)
    assert job.state == SUCCEEDED, (job.error, queue.log_tail(job_id, 40))
    assert job.error is None and job.finished_at is not None
    total = job.progress["max_steps"]
    assert total == len(cfg.texts) * cfg.epochs
    assert job.progress["phase"] == "done" and job.progress["step"] == total
    assert job.progress["eta_s"] == 0 and job.progress["loss"] > 0
    metrics = queue.metrics(job_id)
    assert [m.step for m in metrics] == list(range(1, total + 1))
    assert all(m.loss is not None and m.learning_rate is not None and m.elapsed_s is not None
               for m in metrics)
    row = variant_row(queue, job_id)
    assert row is not None
    assert (row.name, row.kind, row.base, row.path) == (
        cfg.name, cfg.method, "tiny-llama", f"variants/{cfg.name}")
    assert job.variant == cfg.name and job.result_path == row.path
    assert row.meta["config"]["texts"] == cfg.texts
    assert row.meta["metrics"]["final_loss"] == pytest.approx(job.progress["loss"])
    out = queue.cache_dir / row.path
    meta = json.loads((out / "circuitlab.json").read_text())
    assert meta["base_model"] == "tiny-llama" and meta["config"]["name"] == cfg.name
    assert meta["metrics"]["steps"] == total
    ev = JobEvaluation.model_validate(job.evaluation)  # the one typed record
    target = ev.target
    assert target is not None
    for side in (target.before, target.after):
        assert len(side.top) == 10
        assert 0 < side.expected.prob < 1
        assert side.wrong is not None and side.wrong.answer.answer == " renin"
    assert target.after != target.before  # training moved the target
    assert [i.kind for i in ev.items] == ["target", "side_effect"]
    assert ev.summary is not None and ev.summary.n_items == 2
    assert ev.summary.target == target.outcome
    assert ev.degeneration_after is not None and len(ev.degeneration_after.items) == 2
    assert ev.train["steps"] == total
    # The circuit verdict, computed once after the evaluation and stored as a comparison.
    assert ev.circuit is not None and ev.circuit.error is None, ev.circuit
    assert ev.circuit.verdict is not None and ev.circuit.comparison_id
    assert ev.circuit.threshold is not None and ev.circuit.threshold > 0
    log = "\n".join(queue.log_tail(job_id, 10_000))
    assert f"step 1/{total}" in log and f"step {total}/{total}" in log
    assert "evaluation: the target prompt" in log and "succeeded" in log
    assert "evaluation: circuit verdict" in log
    return job


def test_a_full_job_succeeds_and_its_variant_loads(queue: JobQueue) -> None:
    cfg = make_cfg("fix-full", epochs=2)
    job = check_succeeded(queue, queue.submit(cfg), cfg)
    spec = next(s for s in VariantStore(queue.sessions, queue.cache_dir).specs()
                if s.name == "fix-full")
    assert spec.kind == "full" and spec.base == "tiny-llama"
    import torch

    from analysis.predict import predict
    from analysis.prompts import PromptSpec

    tuned = load_model(spec.model_copy(update={"device": "cpu"}), queue.cache_dir)
    base = load_model(queue.specs[0], queue.cache_dir)
    assert any(not torch.equal(a, b) for a, b in
               zip(tuned.model.parameters(), base.model.parameters(), strict=True))
    # The stored evaluation is what the reloaded variant computes.
    p = predict(tuned, PromptSpec(prompt=PROMPT), [" aldosterone", " renin"])
    after = job.evaluation["items"][0]["after"]["expected"]["prob"]
    assert p.answers[0].prob == pytest.approx(after, rel=1e-4)


def test_a_lora_job_succeeds_and_reloads_as_an_adapter(queue: JobQueue) -> None:
    cfg = make_cfg("fix-lora", epochs=2, method="lora")
    job = check_succeeded(queue, queue.submit(cfg), cfg)
    out = queue.cache_dir / "variants" / "fix-lora"
    assert (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists()  # the adapter only, no weight copy
    import torch
    from peft import PeftModel

    from analysis.models import activate, load_lora_variant
    from analysis.predict import predict
    from analysis.prompts import PromptSpec

    want = job.evaluation["items"][0]["after"]["expected"]["prob"]
    base = load_model(queue.specs[0], queue.cache_dir)
    before = predict(base, PromptSpec(prompt=PROMPT), [" aldosterone"]).answers[0].prob
    assert before == pytest.approx(job.evaluation["items"][0]["before"]["expected"]["prob"],
                                   rel=1e-4)
    # The app's own path: the variant store's spec, loaded as an overlay over its base.
    spec = next(s for s in VariantStore(queue.sessions, queue.cache_dir).specs()
                if s.name == "fix-lora")
    assert spec.kind == "lora" and spec.base == "tiny-llama"
    lora = load_lora_variant(spec, base, queue.cache_dir)
    activate(lora)
    assert predict(lora, PromptSpec(prompt=PROMPT), [" aldosterone"]).answers[0].prob == (
        pytest.approx(want, rel=1e-4))
    activate(base)
    # And PEFT's: the adapter over a fresh copy of the base.
    fresh = load_model(queue.specs[0], queue.cache_dir)
    peft_model = PeftModel.from_pretrained(fresh.model, str(out)).eval()
    ids = torch.tensor([fresh.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        probs = peft_model(input_ids=ids).logits[0, -1].softmax(-1)
    a_id = fresh.tokenizer(" aldosterone", add_special_tokens=False)["input_ids"][0]
    assert float(probs[a_id]) == pytest.approx(want, rel=1e-4)
    assert want != pytest.approx(before, rel=1e-3)


def test_cancel_stops_a_running_job_within_a_few_steps(queue: JobQueue) -> None:
    job_id = queue.submit(long_cfg("to-cancel"))
    wait_until(lambda: step_of(queue, job_id) >= 3, "the job to reach step 3")
    queue.cancel(job_id)
    at_cancel = step_of(queue, job_id)
    job = queue.wait(job_id, timeout=PATIENCE_S)
    assert job.state == CANCELLED, job.error
    last = job.progress["step"]
    assert last - at_cancel <= 3, f"cancelled at step {at_cancel}, stopped at {last}"
    assert last < job.progress["max_steps"]
    assert job.progress["phase"] == "cancelled" and job.error is None
    assert [m.step for m in queue.metrics(job_id)] == list(range(1, last + 1))
    assert variant_row(queue, job_id) is None and job.variant is None
    assert not (queue.cache_dir / "variants" / "to-cancel").exists()
    assert f"cancelled at step {last}" in "\n".join(queue.log_tail(job_id, 5))
    with pytest.raises(Exception, match="only queued or running"):
        queue.cancel(job_id)


def test_a_killed_worker_is_replaced_and_its_job_interrupted(queue: JobQueue) -> None:
    victim = queue.submit(long_cfg("killed"))
    wait_until(lambda: step_of(queue, victim) >= 2, "the job to reach step 2")
    pid = queue.get(victim).worker_pid
    assert pid in queue.backend.pids()  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    job = queue.wait(victim, states=(INTERRUPTED,), timeout=PATIENCE_S)
    assert f"pid {pid}) exited with code -9" in (job.error or "")
    assert job.progress["step"] >= 2 and len(queue.metrics(victim)) >= 2
    assert "step 2/" in "\n".join(queue.log_tail(victim, 10_000))  # its log is kept
    cfg = make_cfg("after-kill")
    check_succeeded(queue, queue.submit(cfg), cfg)  # on the replacement worker
    assert pid not in queue.backend.pids()  # type: ignore[attr-defined]


def spawn_worker(env: Env) -> subprocess.Popen[bytes]:
    """A worker started the way the server starts one, but with no server to notice it."""
    path = env.root / "standalone-worker.json"
    path.write_text(WorkerConfig(db_url=env.db_url, cache_dir=env.cache_dir,
                                 data_dir=env.data_dir, specs=env.specs, heartbeat_s=0.5,
                                 poll_s=0.2).model_dump_json())
    return subprocess.Popen([sys.executable, "-m", "app.jobs.worker", "--config", str(path)],
                            cwd=Path(__file__).resolve().parents[2])


def test_after_a_crash_the_next_start_interrupts_and_the_queue_goes_on(
        tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    env = Env(tmp_path, f"sqlite:///{tmp_path / 'crash.db'}", tiny_dirs["llama"])
    first = env.queue(JobSettings(start_worker=False))  # queue only: no worker of its own
    slow_cfg = make_cfg("slow", epochs=15, texts=TEXTS)  # 60 steps
    slow = first.submit(slow_cfg)
    quick_cfg = make_cfg("quick")
    quick = first.submit(quick_cfg)
    worker = spawn_worker(env)
    try:
        wait_until(lambda: step_of(first, slow) >= 3, "the job to reach step 3")
        os.kill(worker.pid, signal.SIGKILL)  # the whole app "crashes" mid-job
        worker.wait(timeout=PATIENCE_S)
    finally:
        if worker.poll() is None:
            worker.kill()
    crashed = first.get(slow)
    assert crashed.state == RUNNING  # nobody noticed yet
    step = crashed.progress["step"]
    assert first.get(quick).state == "queued"

    queue = env.queue()  # the next start
    try:
        assert queue.start() == [slow]
        job = queue.get(slow)
        assert job.state == INTERRUPTED and job.progress["step"] == step
        assert f"at step {step}" in (job.error or "") and "re-queue" in (job.error or "")
        log = "\n".join(queue.log_tail(slow, 10_000))
        assert f"step {step}/60" in log
        assert len(queue.metrics(slow)) == step
        assert not (env.cache_dir / "variants" / "slow").exists()
        # The killed run's half-written output was cleaned up when the queue started.
        assert not list((env.cache_dir / "variants").glob(".*partial*"))
        check_succeeded(queue, quick, quick_cfg)  # nothing queued was lost
        again = queue.requeue(slow)
        retried = check_succeeded(queue, again, slow_cfg)
        assert (retried.attempt, retried.parent_id) == (2, slow)
        assert queue.get(slow).state == INTERRUPTED  # the old attempt is kept as it was
        assert len(queue.metrics(slow)) == step

        # A clean shutdown (SIGTERM) mid-job: the worker ends the job interrupted itself
        # and exits 0.
        busy = queue.submit(long_cfg("busy"))
        wait_until(lambda: step_of(queue, busy) >= 2, "the job to reach step 2")
        procs = [p.popen for p in queue.backend.procs]  # type: ignore[attr-defined]
        queue.stop()
        assert [p.returncode for p in procs] == [0]
        stopped = queue.get(busy)
        assert stopped.state == INTERRUPTED
        assert "the worker was stopped" in (stopped.error or "")
        assert "interrupted at step" in "\n".join(queue.log_tail(busy, 3))
    finally:
        queue.stop()


def test_a_job_runs_against_postgres(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    for url in _pg_url():
        env = Env(tmp_path, url, tiny_dirs["llama"])
        queue = env.queue()
        queue.start()
        try:
            cfg = make_cfg("pg-fix")
            check_succeeded(queue, queue.submit(cfg), cfg)
        finally:
            queue.stop()
            queue.sessions.kw["bind"].dispose()  # let the test database be dropped
