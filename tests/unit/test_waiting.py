"""testbed.waiting.wait_until: returns the predicate's value, checks once more at the
deadline, and names what it waited for when it times out."""

from __future__ import annotations

import time

import pytest

from testbed.errors import NetworkError
from testbed.waiting import WaitTimeout, wait_until


def test_returns_the_first_truthy_value_after_polling() -> None:
    calls = []

    def third_time() -> str:
        calls.append(1)
        return "ready" if len(calls) == 3 else ""

    assert wait_until(third_time, 5, 0.001, "the third call") == "ready"
    assert len(calls) == 3


def test_timeout_names_what_and_carries_detail_and_is_a_network_error() -> None:
    start = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: False, 0.05, 0.01, "the relay to answer", detail=lambda: "log tail")
    assert time.monotonic() - start >= 0.05
    assert isinstance(info.value, NetworkError)  # existing handlers keep catching it
    assert info.value.what == "the relay to answer"
    assert "the relay to answer" in str(info.value) and "log tail" in str(info.value)


def test_checks_once_more_at_the_deadline() -> None:
    """A condition that turns true while the last sleep runs is seen, not reported late."""
    start = time.monotonic()
    assert wait_until(lambda: time.monotonic() - start >= 0.05, 0.05, 1.0, "the deadline")


def test_zero_timeout_checks_once() -> None:
    calls = []
    with pytest.raises(WaitTimeout):
        wait_until(lambda: calls.append(1), 0, 0.01, "nothing")
    assert calls == [1]


def test_exceptions_from_the_predicate_propagate() -> None:
    def dead() -> bool:
        raise NetworkError("the process exited")

    with pytest.raises(NetworkError, match="exited"):
        wait_until(dead, 5, 0.01, "a dead process")
