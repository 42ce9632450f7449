"""Calibration: configured versus measured delay on every emulated link.

The link-emulation mechanism is part of what a result means (netem and the userspace
delay line have different error), so every run measures it: ICMP echo across each
delayed link, all links in parallel, compared with the configured round trip. The error
(median and p99) is stored with the results; a link whose median error exceeds the
tolerance makes the calibration fail loudly instead of running with the wrong delay.

The delay line also counts the frames it dropped itself (it fell behind, its socket buffer
overflowed, a write failed): a result measured through a link that dropped frames the
emulated link would have carried measures the emulator, not the link. Those counters are
recorded per link (`emulator_drops`), apart from the drops of the configured queue
(`queue_drops`, part of the emulation), and any emulator drop fails the gate.
"""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from testbed.network import Network

RTT_RE = re.compile(r"time=([0-9.]+) ms")
WARMUP = 5
#: delay-line counters of frames the emulator lost on its own (see testbed/delayline):
#: it fell behind (dropped_overload), its socket buffer overflowed (kernel_drops), or a
#: write failed (tx_errors, which includes oversize frames that could not be sent)
EMULATOR_DROP_COUNTERS = ("dropped_overload", "kernel_drops", "tx_errors")
#: drops the emulated link itself makes: its bottleneck queue (rate + queue_packets)
QUEUE_DROP_COUNTERS = ("dropped_queue",)


@dataclass
class LinkCalibration:
    link: str
    link_class: str
    mechanism: str
    configured_rtt_ms: float
    samples: int
    measured_median_ms: float
    measured_p99_ms: float
    error_median_ms: float
    error_p99_ms: float
    lost: int
    # Frames the delay line dropped on its own, both directions, since it started (0 with
    # netem, which has no such failure mode), by counter; and the configured queue's drops.
    emulator_drops: int = 0
    emulator_drop_counters: dict[str, int] = field(default_factory=dict)
    queue_drops: int = 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _sum_counters(stats: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, int]:
    """Per-counter totals over both directions of one delay line's stats file."""
    return {name: sum(int(stats.get(d, {}).get(name, 0)) for d in ("a2b", "b2a"))
            for name in names}


def delay_line_stats(net: Network) -> dict[str, dict]:
    """Every delay line's current counters, keyed by the link it emulates ("a-b").

    The graph names the delay-line node of link number i `d<i>` (testbed.graph.emit)."""
    nodes = {node.name: node for node in net.delay_nodes()}
    out = {}
    for link in net.graph.links:
        node = nodes.get(f"d{link.index}")
        if node is not None:
            out[f"{link.a}-{link.b}"] = node.stats()
    return out


def with_drop_counters(cal: list[LinkCalibration],
                       stats: Mapping[str, Mapping[str, Any]]) -> list[LinkCalibration]:
    """Copies of `cal` carrying the drop counters of `stats` (from delay_line_stats).

    A link whose delay line wrote no stats (it died) keeps its counters: the gate's other
    checks and the run's own errors report that case."""
    out = []
    for c in cal:
        s = stats.get(c.link)
        if not s:
            out.append(c)
            continue
        emu = _sum_counters(s, EMULATOR_DROP_COUNTERS)
        out.append(replace(c, emulator_drops=sum(emu.values()), emulator_drop_counters=emu,
                           queue_drops=sum(_sum_counters(s, QUEUE_DROP_COUNTERS).values())))
    return out


def refresh_emulator_drops(net: Network, cal: list[LinkCalibration]) -> list[LinkCalibration]:
    """`cal` with the delay lines' drop counters as they are now: call it after the last
    measurement on `net`, so the gate covers every frame the results depend on (the
    counters are cumulative since each delay line started)."""
    if net.mechanism != "delayline":
        return cal
    return with_drop_counters(cal, delay_line_stats(net))


def gate_failures(cal: list[LinkCalibration], max_median_error_ms: float = 1.0) -> list[str]:
    """Why this calibration must fail the run, one human-readable reason per problem; empty
    when it passes. A link fails with no echo reply, with a median delay error above
    `max_median_error_ms`, or when its emulator dropped frames on its own."""
    out = []
    for c in cal:
        name = f"{c.link} ({c.link_class}, {c.mechanism})"
        if not c.samples:
            out.append(f"{name}: no echo reply in {c.lost} pings")
        elif not c.error_median_ms <= max_median_error_ms:  # NaN fails too
            out.append(f"{name}: median delay error {c.error_median_ms:.3f} ms > "
                       f"{max_median_error_ms:g} ms (configured RTT {c.configured_rtt_ms:.2f} ms, "
                       f"measured {c.measured_median_ms:.2f} ms)")
        if c.emulator_drops > 0:
            detail = ", ".join(f"{k} {v}" for k, v in c.emulator_drop_counters.items() if v)
            out.append(f"{name}: the delay line dropped {c.emulator_drops} frames itself "
                       f"({detail or 'counters not itemised'}): it could not keep up, so "
                       "results through it measure the emulator; lower the link rate or "
                       "the load on this machine")
    return out


def calibrate(net: Network, count: int = 200, interval_s: float = 0.01) -> list[LinkCalibration]:
    """Ping across every link that has delay configured; return per-link error figures,
    with the delay lines' drop counters as they are after the pings."""
    plan = net.graph.plan
    jobs = []
    for link in net.graph.links:
        if not link.spec.needs_delay():
            continue
        if link.addrs is not None:
            target = str(link.addrs.b4)
        else:  # a host on the bridged access segment: its gateway is across the link
            target = str(plan.access_gateway_v4)
        node = net[link.a]
        argv = node.command(["ping", "-n", "-i", str(interval_s), "-c", str(count + WARMUP),
                             "-W", "2", target])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        jobs.append((link, proc))
    results = []
    for link, proc in jobs:
        out, _ = proc.communicate(timeout=60 + count * interval_s * 4)
        rtts = [float(m) for m in RTT_RE.findall(out)][WARMUP:]
        configured = link.spec.configured_rtt_ms()
        if not rtts:
            results.append(LinkCalibration(f"{link.a}-{link.b}", link.link_class, net.mechanism,
                                           configured, 0, float("nan"), float("nan"),
                                           float("nan"), float("nan"), count))
            continue
        errors = [abs(r - configured) for r in rtts]
        results.append(LinkCalibration(
            link=f"{link.a}-{link.b}", link_class=link.link_class, mechanism=net.mechanism,
            configured_rtt_ms=configured, samples=len(rtts),
            measured_median_ms=statistics.median(rtts),
            measured_p99_ms=_percentile(rtts, 0.99),
            error_median_ms=statistics.median(errors),
            error_p99_ms=_percentile(errors, 0.99),
            lost=count + WARMUP - len(RTT_RE.findall(out)),
        ))
    return refresh_emulator_drops(net, results)


def summary(cal: list[LinkCalibration]) -> dict:
    """Aggregate for result metadata: worst link's errors, every link's emulator and queue
    drops (link -> frames), plus every link's record."""
    valid = [c for c in cal if c.samples]
    return {
        "links": [asdict(c) for c in cal],
        "worst_error_median_ms": max((c.error_median_ms for c in valid), default=None),
        "worst_error_p99_ms": max((c.error_p99_ms for c in valid), default=None),
        "emulator_drops": {c.link: c.emulator_drops for c in cal},
        "emulator_drops_total": sum(c.emulator_drops for c in cal),
        "queue_drops": {c.link: c.queue_drops for c in cal},
    }
