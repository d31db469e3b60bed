"""A request body over its route class's cap is refused before anything reads or parses it.

An ASGI middleware: a declared Content-Length over the cap is answered 413 at once; a
body that streams in without one (chunked) is counted as it arrives and cut off at the
cap (an HTTPException from ``receive``, which FastAPI hands to the app's one error
handler). Either way the app never buffers more than the cap, so a 100 MB body costs the
server nothing. The answer has the app's error shape (JSON under /api/, an HTML fragment
for the pages) and names the limit. Starlette's RequestBodyLimitMiddleware has one cap
and answers a plain "Content Too Large"; circuitlab wants a cap per route class and the
limit named, hence this small one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORPUS_UPLOAD_PATHS = ("/indexes/build", "/api/v1/corpora")


class BodyLimits(BaseModel):
    """Largest request body per route class, in bytes (``CIRCUITLAB_BODY_LIMITS__*``)."""

    api: int = Field(8_000_000, ge=1024, description="JSON API (/api/...): a 1,000-prompt "
                     "screening list of 4,000-character prompts fits.")
    upload: int = Field(3_000_000, ge=1024, description="File uploads (/screen/run).")
    form: int = Field(2_000_000, ge=1024, description="Every other page form.")
    corpus: int = Field(20_000_000, ge=1024, description="Corpus uploads for a neuron "
                        "index (/indexes/build, /api/v1/corpora); bigger ones go through "
                        "the CLI (circuitlab index --corpus PATH).")

    def cap_for(self, path: str) -> tuple[int, str]:
        if path in CORPUS_UPLOAD_PATHS:
            return self.corpus, "corpus upload"
        if path.startswith("/api/"):
            return self.api, "api"
        if path.startswith("/screen/run"):
            return self.upload, "upload"
        return self.form, "form"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap, kind = self.limits.cap_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await self._refuse(scope, receive, send, cap, kind)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise HTTPException(413, detail=_message(cap, kind))
            return message

        await self.app(scope, counted_receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, cap: int,
                      kind: str) -> None:
        from app.error_responses import error_response

        response = error_response(Request(scope, receive), 413, _message(cap, kind), "body")
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _message(cap: int, kind: str) -> str:
    return (f"the request body is over the limit of {cap / 1_000_000:g} MB for this kind "
            f"of request ({kind}); send less (the operator sets "
            f"CIRCUITLAB_BODY_LIMITS__{kind.upper()})")


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def install_body_limit(app: Any, limits: BodyLimits) -> None:
    app.add_middleware(BodySizeLimit, limits=limits)
