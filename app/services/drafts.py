"""Draft training texts for a run's concept (analysis/correction/drafts.py), then their
in-context preview on the run's own prompt: the score the user sees before deciding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool

from analysis.correction.drafts import Drafts, draft_texts, instruction, sample_with_model
from analysis.correction.preview import InContextPreview, in_context_preview
from analysis.correction.textcheck import suggest_topic_words
from analysis.errors import InputError
from analysis.llm_describe import LLMEndpoint, chat
from analysis.models import LoadedModel
from analysis.prompts import PromptSpec

Writer = Literal["auto", "model", "endpoint"]


def run_prompt(run: Any) -> PromptSpec:
    stored = run.params.get("prompt_spec", {}) if isinstance(run.params, dict) else {}
    return PromptSpec.model_validate({**stored, "prompt": run.prompt})


def _endpoint_writer(endpoint: LLMEndpoint, asked: str) -> Any:
    def write(seed: int) -> str:
        return chat(endpoint, asked, temperature=0.8, seed=seed)
    return write


async def drafts_for_run(run: Any, manager: Any, endpoint: LLMEndpoint | None, *,
                         concept: Sequence[str], n: int, writer: Writer = "auto",
                         topic_words: Sequence[str] | None = None,
                         ) -> tuple[Drafts, InContextPreview | None]:
    """Drafts on the concept for the run's answers, checked against its wrong answer and
    the topic words (the run's suggested ones unless given), and previewed in context."""
    if not run.answer_b:
        raise InputError("this run has no wrong answer B, so there is nothing the drafts "
                         "must avoid naming: analyze with answer B first", field="answer_b")
    answer_a, answer_b = run.answer_a or "", run.answer_b
    topics = list(topic_words) if topic_words is not None else suggest_topic_words(
        run.prompt, [answer_a, answer_b])
    use_endpoint = writer == "endpoint" or (writer == "auto" and endpoint is not None)
    if use_endpoint and endpoint is None:
        raise InputError("no LLM endpoint is configured (CIRCUITLAB_LLM_DESCRIBER__URL and "
                         "__MODEL); draft with the resident model instead", field="writer")
    if use_endpoint:
        assert endpoint is not None
        asked = instruction(answer_a, concept)
        drafts = await run_in_threadpool(
            draft_texts, _endpoint_writer(endpoint, asked), asked=asked,
            source=f"the configured LLM endpoint ({endpoint.model} at {endpoint.url})",
            answer_a=answer_a, answer_b=answer_b, concept=concept, topic_words=topics, n=n)

    def work(lm: LoadedModel) -> tuple[Drafts, InContextPreview | None]:
        if use_endpoint:
            found = drafts
        else:
            write, prompt = sample_with_model(lm.model, lm.tokenizer, answer_a, concept)
            found = draft_texts(
                write, asked=prompt,
                source=f"the resident model {lm.name} (continuing a list of facts, sampled "
                       "at temperature 0.8, seeded)",
                answer_a=answer_a, answer_b=answer_b, concept=concept, topic_words=topics,
                n=n)
        texts = [d.text for d in found.drafts]
        preview = in_context_preview(lm, run_prompt(run), answer_a, answer_b, texts,
                                     topic_words=topics) if texts else None
        return found, preview

    return await manager.run(run.model, work)  # type: ignore[no-any-return]
