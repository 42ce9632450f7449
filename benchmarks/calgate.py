"""Calibration gate for every network the benchmarks measure on.

Why: the pre-flight network is not the network that produces the numbers; each benchmark
network (one per scenario and sweep point) has its own delay lines, and a mis-emulated link
there would put wrong delays into the figures without anyone noticing. So every measured
network is calibrated before its first sample and the run fails, naming the link, when the
calibration does not pass; the per-network record goes into results.json (provenance and
the report describe every network that produced numbers).

The pass/fail rule is `testbed.calibration.gate_failures` (one rule for pre-flight and
benchmarks). Two gates per network: before the first sample (delay error, echo replies,
emulator drops so far: the run fails at once, naming the link, since measuring on it would
be wasted), and after the last (`after_measurements`: the delay lines' own drop counters,
which the measurements themselves may have driven up; recorded in the network's record and
failing the run's exit status, while the results are still written for diagnosis).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testbed.calibration import (
    LinkCalibration,
    calibrate,
    gate_failures,
    refresh_emulator_drops,
)
from testbed.calibration import summary as calibration_summary
from testbed.errors import CfrbenchError
from testbed.network import Network

#: pings per link; the pre-flight uses the calibration's default (200)
CALIBRATION_COUNT = 100


class CalibrationGateError(CfrbenchError):
    """A benchmark network's emulated links are off their configured delay."""


def calibration_gate(net: Network, label: str, info: Mapping[str, Any]
                     ) -> tuple[dict[str, Any], list[LinkCalibration]]:
    """Calibrate `net`; measure once more if a link fails (a stall of the shared host can
    push one measurement over), then raise CalibrationGateError naming every failing link.
    Returns the network's calibration record (info + summary + gate outcome) and the
    calibration itself (for `after_measurements`)."""
    cal = calibrate(net, count=CALIBRATION_COUNT)
    failures = gate_failures(cal)
    first_attempt = None
    if failures:
        first_attempt = {**calibration_summary(cal), "failures": failures}
        cal = calibrate(net, count=CALIBRATION_COUNT)
        failures = gate_failures(cal)
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
    return record, cal


def after_measurements(net: Network, record: dict[str, Any],
                       cal: list[LinkCalibration]) -> list[str]:
    """Refresh the delay lines' drop counters after the network's last sample, fold them
    into `record` (its summary and `gate.after_measurements`) and return the failures (empty
    when no emulator dropped a frame on its own)."""
    cal = refresh_emulator_drops(net, cal)
    failures = gate_failures(cal)
    record.update(calibration_summary(cal))
    record["gate"]["after_measurements"] = {"passed": not failures, "failures": failures}
    if failures:
        record["gate"]["passed"] = False
        record["gate"]["failures"] = failures
    return failures
