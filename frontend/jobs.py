"""View models for correction jobs: the job card, the loss curve, the Experiments table.
Plain data in, plain data out (no web framework, no database session)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from analysis.correction.config import TrainingConfig
from analysis.correction.evaluate import CircuitVerdictRef, JobEvaluation
from analysis.correction.textcheck import check_texts
from analysis.evaluation import ItemResult


@dataclass
class JobView:
    id: str
    name: str
    state: str
    base_model: str
    method: str
    created_at: Any
    started_at: Any
    finished_at: Any
    step: int | None
    max_steps: int | None
    fraction: float | None
    loss: float | None
    elapsed_s: float | None
    eta_s: float | None
    phase: str | None
    error: str | None
    variant: str | None
    target_key: str | None
    config: TrainingConfig | None
    evaluation: JobEvaluation | None = None
    evaluation_stale: bool = False  # stored by a version before the evaluation core
    compare_link: str | None = None
    kind: str = "correction"
    attempt: int = 1
    parent_id: str | None = None


def _config(raw: dict[str, Any]) -> TrainingConfig | None:
    try:
        return TrainingConfig.model_validate(raw)
    except Exception:  # a config written by an older version still lists
        return None


def compare_link(cfg: TrainingConfig | None, base: str, variant: str | None) -> str | None:
    """The Compare page pre-filled with the job's base, variant and target case."""
    if cfg is None or cfg.target is None or not variant:
        return None
    t = cfg.target
    query: dict[str, Any] = {"base": base, "variant": variant, "prompt": t.prompt,
                             "answer_a": t.answer_a, "answer_b": t.answer_b}
    if t.chat_template:  # the comparison scores the target in the job's format
        query.update(chat_template="true", system_prompt=t.system_prompt or "",
                     answer_prefix=t.answer_prefix)
    elif t.answer_prefix:
        query["answer_prefix"] = t.answer_prefix
    return "/compare?" + urlencode(query)


# A concept candidate carried to the Jobs page (Concept -> Jobs): the neuron, its words and
# a few exemplars, shown in a Concept box to help write texts - never as topic words, the
# words the text check flags.
CONCEPT_NAME = r"L\d{1,3}/N\d{1,7}"
MAX_CONCEPT_WORDS = 12
MAX_CONCEPT_EXEMPLARS = 3
MAX_EXEMPLAR_CHARS = 300


@dataclass
class ConceptBox:
    neuron: str  # "L6/N1284"
    words: list[str]
    exemplars: list[str]
    run_id: str | None = None


def concept_link(run_id: str, candidate: Any) -> str:
    """The Jobs page with the candidate in its Concept box (``concept``, ``words``, ``ex``)."""
    query: list[tuple[str, str]] = [("run", run_id), ("concept", candidate.name)]
    if candidate.topic_words:
        query.append(("words", ",".join(candidate.topic_words[:MAX_CONCEPT_WORDS])))
    query += [("ex", e[:MAX_EXEMPLAR_CHARS])
              for e in candidate.exemplars[:MAX_CONCEPT_EXEMPLARS]]
    return "/jobs?" + urlencode(query)


def concept_box(concept: str, words: str, exemplars: list[str],
                run_id: str | None) -> ConceptBox | None:
    """The Concept box from the Jobs page's query (see concept_link); None without one."""
    if not concept:
        return None
    kept = [w.strip() for w in words.split(",") if w.strip()][:MAX_CONCEPT_WORDS]
    shown = [e.strip()[:MAX_EXEMPLAR_CHARS] for e in exemplars if e.strip()]
    return ConceptBox(neuron=concept, words=kept, exemplars=shown[:MAX_CONCEPT_EXEMPLARS],
                      run_id=run_id or None)


def job_view(job: Any) -> JobView:
    progress = job.progress or {}
    cfg = _config(job.config or {})
    variant = job.variant if job.state == "succeeded" else None
    evaluation = JobEvaluation.stored(job.evaluation)
    return JobView(
        id=job.id, name=job.name, state=job.state, base_model=job.base_model,
        method=cfg.method if cfg else "?", created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at,
        step=progress.get("step"), max_steps=progress.get("max_steps"),
        fraction=progress.get("fraction"), loss=progress.get("loss"),
        elapsed_s=progress.get("elapsed_s"), eta_s=progress.get("eta_s"),
        phase=progress.get("phase"), error=job.error, variant=job.variant,
        target_key=job.target_key, config=cfg, evaluation=evaluation,
        evaluation_stale=bool(job.evaluation) and evaluation is None,
        kind=getattr(job, "kind", None) or "correction",
        compare_link=compare_link(cfg, job.base_model, variant),
        attempt=getattr(job, "attempt", 1) or 1, parent_id=getattr(job, "parent_id", None),
    )


def loss_figure(metrics: list[Any]) -> dict[str, Any]:
    steps = [m.step for m in metrics]
    return {
        "data": [{"type": "scatter", "mode": "lines+markers", "x": steps,
                  "y": [m.loss for m in metrics], "name": "loss",
                  "line": {"color": "#1d4ed8"},
                  "hovertemplate": "step %{x}: loss %{y:.4f}<extra></extra>"}],
        "layout": {"height": 260, "margin": {"l": 55, "r": 15, "t": 25, "b": 40},
                   "xaxis": {"title": {"text": "step"}, "rangemode": "tozero"},
                   "yaxis": {"title": {"text": "loss"}}, "plot_bgcolor": "white",
                   "paper_bgcolor": "white",
                   "meta": {"summary": f"{len(steps)} steps"}},
    }


@dataclass
class ExperimentRow:
    """One job on the seeds' summary table: the text check's flags, the target before ->
    after (the evaluation core's ItemResult), its outcome and the circuit verdict."""

    job: JobView
    mentions_wrong: bool
    mentions_correct: bool
    mentions_topic: bool
    target: ItemResult | None
    circuit: CircuitVerdictRef | None

    @property
    def outcome(self) -> str:
        """The target's outcome (analysis.evaluation's rule), or the job's state."""
        if self.job.state != "succeeded":
            return self.job.state
        return self.target.outcome if self.target is not None else "–"


def experiment_rows(jobs: list[Any]) -> list[ExperimentRow]:
    rows = []
    for job in jobs:
        view = job_view(job)
        if view.kind != "correction":  # an index-build job has no evaluation
            continue
        cfg = view.config
        wrong = correct = topic = False
        if cfg is not None and cfg.target is not None:
            findings = check_texts(cfg.texts, wrong_answer=cfg.target.answer_b,
                                   correct_answer=cfg.target.answer_a,
                                   topic_words=cfg.topic_words)
            wrong = any(f.mentions_wrong for f in findings)
            topic = any(f.mentions_topic for f in findings)
            # "Mentions the correct answer": any match of kind 'correct' in any text.
            correct = any(m.kind == "correct" for f in findings for m in f.matches)
        ev = view.evaluation
        rows.append(ExperimentRow(
            job=view, mentions_wrong=wrong, mentions_correct=correct, mentions_topic=topic,
            target=ev.target if ev else None, circuit=ev.circuit if ev else None))
    return rows
