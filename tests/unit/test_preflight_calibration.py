"""Pre-flight calibration (cfrbench.mainjob.preflight): a link whose median delay error is
over the limit is measured once more before the run is failed, so a few seconds of host
stall do not abort a run, while a link that really mis-emulates still does. The network
calls are replaced by recorded figures; the real measurement runs in the integration tests."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from cfrbench import mainjob
from testbed.calibration import LinkCalibration
from testbed.smoke import PingAllResult


def _cal(error_ms: float) -> list[LinkCalibration]:
    return [LinkCalibration("core-p1", "detour", "delayline", 15.0, 200, 15.0 + error_ms,
                            38.0, error_ms, 23.0, 0)]


def _preflight(monkeypatch: pytest.MonkeyPatch, errors: list[float]) -> tuple[dict, bool, str]:
    attempts = iter(errors)
    monkeypatch.setattr(mainjob, "calibrate", lambda net: _cal(next(attempts)))
    monkeypatch.setattr(mainjob, "ping_all", lambda net, fam: PingAllResult(fam, 2, []))
    monkeypatch.setattr(mainjob, "rtt_table", lambda net, pairs: [])
    monkeypatch.setattr(mainjob, "rtt_pairs", lambda net: [])
    out = io.StringIO()
    net = SimpleNamespace(timings={})
    data, ok = mainjob.preflight(net, Console(file=out, width=200))  # type: ignore[arg-type]
    return data, ok, out.getvalue()


def test_a_transient_miss_is_measured_again_and_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    data, ok, printed = _preflight(monkeypatch, [1.05, 0.4])
    assert ok
    assert "measuring once more" in printed and "core-p1" in printed
    assert data["calibration_first_attempt"]["worst_error_median_ms"] == pytest.approx(1.05)
    assert data["calibration"]["worst_error_median_ms"] == pytest.approx(0.4)


def test_a_link_that_stays_off_fails_the_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    data, ok, printed = _preflight(monkeypatch, [1.5, 1.4])
    assert not ok
    assert "calibration failed on core-p1" in printed


def test_a_good_first_attempt_is_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    data, ok, printed = _preflight(monkeypatch, [0.5])  # a second call would raise
    assert ok and data["calibration_first_attempt"] is None
    assert "once more" not in printed
