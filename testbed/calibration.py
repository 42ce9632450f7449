"""Calibration: configured versus measured delay on every emulated link.

The link-emulation mechanism is part of what a result means (netem and the userspace
delay line have different error), so every run measures it: ICMP echo across each
delayed link, all links in parallel, compared with the configured round trip. The error
(median and p99) is stored with the results; a link whose median error exceeds the
tolerance makes the calibration fail loudly instead of running with the wrong delay.
"""

from __future__ import annotations

import re
import statistics
import subprocess
from dataclasses import asdict, dataclass

from testbed.network import Network

RTT_RE = re.compile(r"time=([0-9.]+) ms")
WARMUP = 5


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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def calibrate(net: Network, count: int = 200, interval_s: float = 0.01) -> list[LinkCalibration]:
    """Ping across every link that has delay configured; return per-link error figures."""
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
    return results


def summary(cal: list[LinkCalibration]) -> dict:
    """Aggregate for result metadata: worst link's errors plus every link's record."""
    valid = [c for c in cal if c.samples]
    return {
        "links": [asdict(c) for c in cal],
        "worst_error_median_ms": max((c.error_median_ms for c in valid), default=None),
        "worst_error_p99_ms": max((c.error_p99_ms for c in valid), default=None),
    }
