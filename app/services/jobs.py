"""Correction jobs as records: look one up, and its JSON form (the API and the CLI)."""

from __future__ import annotations

from typing import Any

from analysis.correction.config import TrainingConfig
from analysis.correction.textcheck import TextFinding, check_texts
from analysis.errors import NotFound
from app.jobs.queue import JobQueue
from app.store.tables import Job

MAX_YAML_CHARS = 200_000


def job_or_404(queue: JobQueue, job_id: str) -> Job:
    try:
        return queue.get(job_id) if len(job_id) <= 32 else _missing(job_id)
    except LookupError:
        return _missing(job_id)


def _missing(job_id: str) -> Job:
    raise NotFound(f"no job with id {job_id!r}")


def job_json(queue: JobQueue, job: Job, with_metrics: bool = False) -> dict[str, Any]:
    out = {c: getattr(job, c) for c in ("id", "name", "state", "base_model", "config",
                                        "progress", "evaluation", "error", "variant",
                                        "attempt", "parent_id", "target_key")}
    for stamp in ("created_at", "started_at", "finished_at"):
        value = getattr(job, stamp)
        out[stamp] = value.isoformat() if value else None
    if with_metrics:
        out["metrics"] = [{"step": m.step, "loss": m.loss, "learning_rate": m.learning_rate,
                           "epoch": m.epoch, "elapsed_s": m.elapsed_s}
                          for m in queue.metrics(job.id)]
        out["log_tail"] = queue.log_tail(job.id, 50)
    return out


def text_findings(cfg: TrainingConfig, wrong_token: str | None = None) -> list[TextFinding]:
    """The seeds' rule on this config's texts: never mention the wrong concept."""
    assert cfg.target is not None
    forms = [wrong_token] if wrong_token and wrong_token.strip() else []
    return check_texts(cfg.texts, wrong_answer=cfg.target.answer_b,
                       correct_answer=cfg.target.answer_a, topic_words=cfg.topic_words,
                       wrong_token_forms=forms)


def flag_summary(findings: list[TextFinding]) -> dict[str, bool]:
    """Which of the seeds' summary columns apply to a job's texts."""
    return {"wrong": any(f.mentions_wrong for f in findings),
            "topic": any(f.mentions_topic for f in findings),
            "correct_with_topic": any(f.correct_with_topic for f in findings)}
