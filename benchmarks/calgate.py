"""Calibration gate for every network the benchmarks measure on.

Why: the pre-flight network is not the network that produces the numbers; each benchmark
network (one per scenario and sweep point) has its own delay lines, and a mis-emulated link
there would put wrong delays into the figures without anyone noticing. So every measured
network is calibrated before its first sample and the run fails, naming the link, when the
calibration does not pass; the per-network record goes into results.json (provenance and
the report describe every network that produced numbers).

The pass/fail rule belongs to `testbed.calibration.gate_failures` (one rule for pre-flight
and benchmarks); until that exists this falls back to the pre-flight's threshold in
`testbed.mainjob`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from testbed.calibration import LinkCalibration, calibrate
from testbed.calibration import summary as calibration_summary
from testbed.errors import CfrbenchError
from testbed.network import Network

#: pings per link; the pre-flight uses the calibration's default (200)
CALIBRATION_COUNT = 100


class CalibrationGateError(CfrbenchError):
    """A benchmark network's emulated links are off their configured delay."""


def _fallback_gate_failures(cal: list[LinkCalibration]) -> list[str]:
    from testbed.mainjob import CALIBRATION_MAX_MEDIAN_ERROR_MS, _miscalibrated

    out = []
    for c in _miscalibrated(cal):
        if not c.samples:
            out.append(f"{c.link} ({c.link_class}): no echo reply in {c.lost} pings")
        else:
            out.append(f"{c.link} ({c.link_class}): median error {c.error_median_ms:.2f} ms "
                       f"> {CALIBRATION_MAX_MEDIAN_ERROR_MS} ms (configured RTT "
                       f"{c.configured_rtt_ms:.2f} ms, measured {c.measured_median_ms:.2f} ms)")
    return out


def _gate_failures() -> Callable[[list[LinkCalibration]], list[str]]:
    try:
        from testbed.calibration import gate_failures  # type: ignore[attr-defined]
    except ImportError:
        return _fallback_gate_failures
    return gate_failures  # type: ignore[no-any-return]


def calibration_gate(net: Network, label: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """Calibrate `net`; measure once more if a link fails (a stall of the shared host can
    push one measurement over), then raise CalibrationGateError naming every failing link.
    Returns the network's calibration record (info + summary + gate outcome)."""
    failures_of = _gate_failures()
    cal = calibrate(net, count=CALIBRATION_COUNT)
    failures = failures_of(cal)
    first_attempt = None
    if failures:
        first_attempt = {**calibration_summary(cal), "failures": failures}
        cal = calibrate(net, count=CALIBRATION_COUNT)
        failures = failures_of(cal)
    record = {**info, **calibration_summary(cal),
              "gate": {"passed": not failures, "failures": failures,
                       "first_attempt": first_attempt}}
    if failures:
        raise CalibrationGateError(
            f"calibration failed on benchmark network {label}, measured twice: "
            + "; ".join(failures)
            + ". The link emulation is not delivering the configured delay; see "
            "'cfrbench probe' and the delay line's counters, then run again on a quieter "
            "machine.")
    return record
