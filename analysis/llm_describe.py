"""Optional LLM descriptions of neurons through an OpenAI-compatible chat endpoint that
the operator configures (off by default; nothing leaves the machine unless it is set).

The prompt is built from the neuron's top exemplars (the firing token in [brackets]) and
its logit-lens tokens, and is stored with the description so a user sees exactly what
the model was asked. Uses the standard library's HTTP client: no extra dependency.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from analysis.errors import UpstreamError

MAX_EXEMPLARS = 15
MAX_DESCRIPTION_CHARS = 300


class LLMEndpoint(BaseModel):
    url: str = Field(description="Base URL, e.g. http://127.0.0.1:8080/v1 "
                                 "(POST {url}/chat/completions).")
    model: str = Field(description="The model name the endpoint expects.")
    api_key_env: str = Field("CIRCUITLAB_LLM_API_KEY",
                             description="Environment variable holding the key, if any.")
    timeout_s: float = Field(60.0, gt=0, le=600)


def describe_prompt(layer: int, neuron: int, exemplars: Sequence[Any],
                    promotes: Sequence[str] = ()) -> str:
    lines = [f"{i + 1}. {e.left[-80:]}[{e.token}]{e.right[:60]}  (activation "
             f"{float(e.activation):.3g})" for i, e in enumerate(exemplars[:MAX_EXEMPLARS])]
    lens = ", ".join(repr(t) for t in promotes[:10])
    return (
        f"Below are the text contexts where neuron {neuron} in layer {layer} of a language "
        "model fires most strongly; the token it fires on is in [brackets].\n\n"
        + "\n".join(lines)
        + (f"\n\nTokens its output promotes (logit lens, ranking only): {lens}" if lens else "")
        + "\n\nIn one short phrase (at most 12 words), what concept does this neuron "
        "respond to? Answer with the phrase only.")


def chat(endpoint: LLMEndpoint, prompt: str, *, temperature: float = 0.0,
         seed: int | None = None) -> str:
    """One user message to the endpoint; its whole answer. Failures are an UpstreamError
    naming the endpoint (never the key)."""
    payload: dict[str, Any] = {"model": endpoint.model, "temperature": temperature,
                               "messages": [{"role": "user", "content": prompt}]}
    if seed is not None:
        payload["seed"] = seed
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(endpoint.api_key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(endpoint.url.rstrip("/") + "/chat/completions",
                                     data=json.dumps(payload).encode(), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout_s) as response:
            answer = json.loads(response.read())
        return str(answer["choices"][0]["message"]["content"])
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise UpstreamError(f"the LLM endpoint {endpoint.url} did not answer: {exc}") from exc
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UpstreamError(f"the LLM endpoint {endpoint.url} answered in an unexpected "
                            "shape (expected an OpenAI chat completion)") from exc


def llm_describe(endpoint: LLMEndpoint, prompt: str) -> str:
    """Ask the endpoint; the first line of its answer, trimmed."""
    text = chat(endpoint, prompt)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        raise UpstreamError(f"the LLM endpoint {endpoint.url} answered with no text")
    return first[:MAX_DESCRIPTION_CHARS]
