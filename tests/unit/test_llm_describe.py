"""The optional LLM description against a real local HTTP server speaking the OpenAI
chat-completions shape: the prompt carries the exemplars with the firing token in
brackets, the key comes from the environment, and failures are clear 502s."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from analysis.errors import UpstreamError
from analysis.llm_describe import LLMEndpoint, describe_prompt, llm_describe


@dataclass
class Ex:
    left: str
    token: str
    right: str
    activation: float


SEEN: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        SEEN.append({"path": self.path, "body": body,
                     "auth": self.headers.get("Authorization")})
        if body["model"] == "broken":
            payload = {"nothing": True}
        else:
            payload = {"choices": [{"message": {"content": "\n blood pressure regulation \nmore"}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_prompt_and_answer_round_trip(endpoint_url: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "s3cret")
    prompt = describe_prompt(26, 619, [Ex("affects ", "blood", " pressure", 4.2)],
                             [" pressure"])
    assert "affects [blood] pressure" in prompt and "layer 26" in prompt
    text = llm_describe(LLMEndpoint(url=endpoint_url, model="m", api_key_env="TEST_LLM_KEY"),
                        prompt)
    assert text == "blood pressure regulation"
    assert SEEN[-1]["path"] == "/v1/chat/completions"
    assert SEEN[-1]["auth"] == "Bearer s3cret"
    assert SEEN[-1]["body"]["messages"][0]["content"] == prompt


def test_failures_are_upstream_errors(endpoint_url: str) -> None:
    with pytest.raises(UpstreamError, match="unexpected shape"):
        llm_describe(LLMEndpoint(url=endpoint_url, model="broken"), "p")
    with pytest.raises(UpstreamError, match="did not answer"):
        llm_describe(LLMEndpoint(url="http://127.0.0.1:9/v1", model="m", timeout_s=2), "p")
