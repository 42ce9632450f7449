"""The calibration gate (testbed.calibration.gate_failures) and the delay-line drop counters.

Every measured network is gated: a link fails on no echo reply, on a median delay error
above the limit, and on any frame its delay line dropped by itself (the emulator, not the
emulated link, would then have set the result). The drop counters come from the delay
line's stats file; the dicts below have that file's shape (testbed/delayline/stats.go).
"""

from __future__ import annotations

import math

from testbed.calibration import (
    LinkCalibration,
    gate_failures,
    summary,
    with_drop_counters,
)


def _link(name: str = "s1-acc", error_ms: float = 0.05, samples: int = 100) -> LinkCalibration:
    return LinkCalibration(name, "access", "delayline", 20.0, samples, 20.0 + error_ms, 20.4,
                           error_ms, 0.4, 0 if samples else 105)


def _stats(overload: int = 0, kernel: int = 0, tx_errors: int = 0, queue: int = 0) -> dict:
    """One delay line's stats file: the a2b direction carries the given counts, b2a adds 1
    to each non-zero one, so a sum over both directions is what is checked."""
    def direction(extra: int) -> dict:
        return {"spec": "delay=10ms,rate=1e+09bit", "rx_packets": 900_000,
                "dropped_overload": overload + (extra if overload else 0),
                "kernel_drops": kernel + (extra if kernel else 0),
                "tx_errors": tx_errors + (extra if tx_errors else 0),
                "dropped_queue": queue + (extra if queue else 0),
                "dropped_loss": 0, "oversize": 0}
    return {"version": 1, "a2b": direction(0), "b2a": direction(1)}


def test_a_good_link_passes() -> None:
    assert gate_failures([_link()]) == []


def test_median_error_above_the_limit_fails_with_the_figures() -> None:
    failures = gate_failures([_link(error_ms=1.2), _link("s2-acc", error_ms=0.3)])
    assert len(failures) == 1
    assert "s1-acc" in failures[0] and "1.200 ms > 1 ms" in failures[0]
    # The limit is the caller's: the same link passes a looser gate.
    assert gate_failures([_link(error_ms=1.2)], max_median_error_ms=1.5) == []


def test_no_samples_and_nan_errors_fail() -> None:
    failures = gate_failures([_link(samples=0, error_ms=math.nan)])
    assert failures == ["s1-acc (access, delayline): no echo reply in 105 pings"]
    assert len(gate_failures([_link(error_ms=math.nan)])) == 1


def test_any_emulator_drop_fails_and_names_its_counters() -> None:
    cal = with_drop_counters([_link()], {"s1-acc": _stats(overload=3, tx_errors=1)})
    assert cal[0].emulator_drops == 3 + 4 + 1 + 2  # both directions
    assert cal[0].emulator_drop_counters == {"dropped_overload": 7, "kernel_drops": 0,
                                             "tx_errors": 3}
    failures = gate_failures(cal)
    assert len(failures) == 1
    assert "dropped 10 frames itself" in failures[0]
    assert "dropped_overload 7, tx_errors 3" in failures[0]


def test_queue_drops_are_the_emulated_link_and_pass() -> None:
    cal = with_drop_counters([_link()], {"s1-acc": _stats(queue=500)})
    assert cal[0].queue_drops == 1001 and cal[0].emulator_drops == 0
    assert gate_failures(cal) == []


def test_a_bad_delay_and_drops_give_two_reasons() -> None:
    cal = with_drop_counters([_link(error_ms=2.0)], {"s1-acc": _stats(kernel=1)})
    assert len(gate_failures(cal)) == 2


def test_links_without_stats_keep_their_counters() -> None:
    cal = with_drop_counters([_link("s1-acc"), _link("core-p1")],
                             {"s1-acc": _stats(overload=1)})
    assert [c.emulator_drops for c in cal] == [3, 0]


def test_summary_exposes_drops_per_link() -> None:
    cal = with_drop_counters([_link("s1-acc"), _link("core-p1")],
                             {"s1-acc": _stats(overload=1, queue=10), "core-p1": _stats()})
    s = summary(cal)
    assert s["emulator_drops"] == {"s1-acc": 3, "core-p1": 0}
    assert s["emulator_drops_total"] == 3
    assert s["queue_drops"] == {"s1-acc": 21, "core-p1": 0}
    assert s["links"][0]["emulator_drop_counters"]["dropped_overload"] == 3
