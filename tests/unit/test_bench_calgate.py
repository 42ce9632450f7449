"""The calibration gate of benchmark networks: a mis-emulated link fails the run, naming the
link, after one re-measurement; a passing network's record says how it passed."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import calgate
from testbed.calibration import LinkCalibration


def _link(name: str, error_ms: float, samples: int = 100) -> LinkCalibration:
    return LinkCalibration(name, "wan", "delayline", 20.0, samples, 20.0 + error_ms,
                           20.5 + error_ms, error_ms, error_ms + 0.2, 0)


def _fake_calibrations(monkeypatch: pytest.MonkeyPatch, *rounds: list[LinkCalibration]
                       ) -> list[int]:
    """calibrate() returns the given rounds in turn (the delay lines are what is faked:
    the gate's decisions are under test); returns the call log."""
    calls: list[int] = []

    def fake(_net: Any, count: int = 0) -> list[LinkCalibration]:
        calls.append(count)
        return rounds[min(len(calls), len(rounds)) - 1]

    monkeypatch.setattr(calgate, "calibrate", fake)
    return calls


def test_failing_link_fails_the_run_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [_link("r1-r2", 0.05), _link("r2-fd", 3.0)]
    calls = _fake_calibrations(monkeypatch, bad, bad)
    with pytest.raises(calgate.CalibrationGateError) as ei:
        calgate.calibration_gate(object(), "network 2/3 (latency @ {'delay_ms': 20.0})",
                                 {"network": 2})
    msg = str(ei.value)
    assert "r2-fd" in msg and "r1-r2" not in msg
    assert "network 2/3" in msg and "measured twice" in msg
    assert len(calls) == 2  # measured once more before failing


def test_silent_link_fails_too(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = [_link("s1-ar", float("nan"), samples=0)]
    _fake_calibrations(monkeypatch, dead, dead)
    with pytest.raises(calgate.CalibrationGateError, match="s1-ar"):
        calgate.calibration_gate(object(), "network 1/1", {"network": 1})


def test_a_stall_that_clears_passes_and_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    first = [_link("r1-r2", 2.5)]
    second = [_link("r1-r2", 0.04)]
    calls = _fake_calibrations(monkeypatch, first, second)
    record, _ = calgate.calibration_gate(object(), "network 1/1", {"network": 1, "sweep": {}})
    assert len(calls) == 2
    assert record["network"] == 1 and record["gate"]["passed"] is True
    assert record["gate"]["first_attempt"]["failures"][0].startswith("r1-r2")
    assert record["worst_error_median_ms"] == pytest.approx(0.04)


def test_good_network_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_calibrations(monkeypatch, [_link("r1-r2", 0.04)])
    record, cal = calgate.calibration_gate(object(), "network 1/1", {"network": 1})
    assert calls == [calgate.CALIBRATION_COUNT]
    assert [c.link for c in cal] == ["r1-r2"]
    assert record["gate"] == {"passed": True, "failures": [], "first_attempt": None}


def test_emulator_drops_during_the_measurements_fail_the_gate_afterwards(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The delay line's own drops are counted after the last sample: they mark the
    network's record failed and are returned for the run's exit status."""
    import dataclasses

    _fake_calibrations(monkeypatch, [_link("r1-r2", 0.04)])
    record, cal = calgate.calibration_gate(object(), "network 1/1", {"network": 1})
    dropped = [dataclasses.replace(c, emulator_drops=1500,
                                   emulator_drop_counters={"dropped_overload": 1500})
               for c in cal]
    monkeypatch.setattr(calgate, "refresh_emulator_drops", lambda _net, _cal: dropped)
    failures = calgate.after_measurements(object(), record, cal)
    assert len(failures) == 1 and "r1-r2" in failures[0] and "1500" in failures[0]
    assert record["gate"]["passed"] is False
    assert record["gate"]["after_measurements"]["passed"] is False
    assert record["emulator_drops_total"] == 1500
    clean, cal2 = calgate.calibration_gate(object(), "network 1/1", {"network": 1})
    monkeypatch.setattr(calgate, "refresh_emulator_drops", lambda _net, c: c)
    assert calgate.after_measurements(object(), clean, cal2) == []
    assert clean["gate"]["passed"] is True
