"""How long a test waits for a state before it gives up: one generous ceiling for the
whole suite. Tests wait on events and states, never on wall-clock speed, so a loaded
machine makes a test slower, not red; this ceiling only stops a real hang."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

PATIENCE_S = 600.0

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, patience_s: float = PATIENCE_S,
             poll_s: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy (returned), or fail after
    ``patience_s`` naming ``what`` was awaited."""
    deadline = time.monotonic() + patience_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {patience_s:g} s waiting for {what}")
        time.sleep(poll_s)


PATIENCE_MS = int(PATIENCE_S * 1000)  # the same ceiling for Playwright's waits
