"""Errors the science layer raises for a user's mistake.

They carry a message a person can act on and, where known, the input field that caused
them, so the web layer can answer 4xx and the CLI can print one line — without
`analysis/` knowing anything about HTTP.
"""

from __future__ import annotations

from pydantic import ValidationError


class CircuitlabError(Exception):
    """Base class: a problem with the user's input or request, never a bug."""

    status = 422

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InputError(CircuitlabError, ValueError):
    """The input is malformed or inconsistent (empty prompt, same answers, bad tau...)."""


class LimitExceeded(InputError):
    """The input is well-formed but larger than the operator's configured limit."""

    status = 413


class UnknownModel(CircuitlabError, LookupError):
    """A model name that is not in the registry (users can only pick registered names)."""

    status = 404


class NotFound(CircuitlabError, LookupError):
    """A stored record (run, comparison, job) that does not exist."""

    status = 404


class UpstreamError(CircuitlabError):
    """A service the operator configured (e.g. an LLM endpoint) failed or is unreachable."""

    status = 502


class Busy(CircuitlabError):
    """Too much work is already waiting for the model: try again after ``retry_after``
    seconds (the server answers 429, or 503 after waiting its longest)."""

    status = 429

    def __init__(self, message: str, retry_after: int, status: int = 429) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.headers = {"Retry-After": str(retry_after)}


def input_error(exc: ValidationError, *, prefix: str = "",
                field: str | None = None) -> InputError:
    """A pydantic ValidationError as an InputError a person can act on: its first
    problem, located by its dotted field path (``thresholds.large: ...``), without
    pydantic's "Value error, " prefix. ``field`` overrides where the page shows it."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return InputError(f"{prefix}{where}: {message}" if where else f"{prefix}{message}",
                      field=field if field is not None else (where or None))
