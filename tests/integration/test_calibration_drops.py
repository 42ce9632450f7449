"""Calibration on a real network reads every delay line's own drop counters.

The gate (testbed.calibration.gate_failures) fails a network whose delay lines dropped
frames by themselves; that only protects results if the counters really come from each
link's running delay line. Root only; under CI=true it must run (conftest's require_root).
"""

from __future__ import annotations

from testbed.calibration import EMULATOR_DROP_COUNTERS, calibrate, summary


def test_every_delay_line_reports_its_drop_counters(default_network) -> None:
    net = default_network
    cal = calibrate(net, count=50)
    delayed = {f"{lk.a}-{lk.b}" for lk in net.graph.links if lk.spec.needs_delay()}
    assert {c.link for c in cal} == delayed and delayed
    # netem has no emulator of its own to drop frames: no counters there.
    expected = set(EMULATOR_DROP_COUNTERS) if net.mechanism == "delayline" else set()
    for c in cal:
        # Counters read from the link's own delay line, one entry per counter ...
        assert set(c.emulator_drop_counters) == expected, c
        # ... and 50 pings per link never make a delay line drop by itself.
        assert c.emulator_drops == 0, c
    s = summary(cal)
    assert set(s["emulator_drops"]) == delayed and s["emulator_drops_total"] == 0
