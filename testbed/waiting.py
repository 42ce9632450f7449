"""One way to wait for a condition: poll a predicate until it holds or a deadline passes.

Why: services, delay lines and detached networks become ready asynchronously, and each
hand-written `deadline = time.monotonic() + t; while ...` loop chose its own interval, its
own timeout message and its own off-by-one (one last check after the deadline or not).
`wait_until` checks once more at the deadline, sleeps `interval_s` between checks and, on
timeout, raises `WaitTimeout` naming what it waited for and for how long, so the one line
the CLI prints says what never became ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from testbed.errors import NetworkError

T = TypeVar("T")


class WaitTimeout(NetworkError):
    """A condition did not hold within its time limit (`what` names the condition).

    A NetworkError: every wait in the testbed is for a part of the emulated network (a
    service, a link, a run) to become ready, and callers already handle that family."""

    def __init__(self, what: str, timeout_s: float, detail: str = "") -> None:
        self.what = what
        self.timeout_s = timeout_s
        message = f"timed out after {timeout_s:g} s waiting for {what}"
        super().__init__(f"{message}: {detail}" if detail else message)


def wait_until(predicate: Callable[[], T], timeout_s: float, interval_s: float = 0.05,
               what: str = "a condition", detail: Callable[[], str] | None = None) -> T:
    """Return the first truthy value of `predicate()`, polled every `interval_s` seconds.

    The predicate is called at least once and once more at the deadline, so a condition
    that becomes true while the last sleep runs is still seen. On timeout raise
    `WaitTimeout(what)`; `detail()` (e.g. a log tail) is called then and appended.
    """
    if timeout_s < 0 or interval_s <= 0:
        raise ValueError(f"wait_until({what!r}): timeout_s >= 0 and interval_s > 0 needed")
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(what, timeout_s, detail() if detail else "")
        time.sleep(min(interval_s, left))
