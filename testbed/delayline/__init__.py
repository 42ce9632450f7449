"""Userspace delay line: link emulation (delay, jitter, loss, rate, queue) without sch_netem.

The kernels this project runs on lack `sch_netem`, so a delayed link A <-> B is built as
A's veth <-> [link namespace: ifa, ifb] <-> B's veth, with the Go program `delayline`
forwarding frames between ifa and ifb in that namespace (AF_PACKET, promiscuous) and applying
a `DirectionSpec` to each direction.

What the caller must do (the link class owns this, not the delay line):

* Offloads: ``ethtool -K IF tx off tso off gso off gro off`` on all four veth ends (the two
  in the link namespace, ifa and ifb, and their peers on the nodes). Measured minimum:
  - node ends: ``tx off`` is REQUIRED. With it on, TCP/UDP frames reach the delay line with
    a partial checksum and the far node drops them (TCP cannot even connect). It also turns
    TSO off; GSO then segments in software before the veth, so frames stay at MTU size.
  - link-namespace ends: ``gro off``. GRO is inactive on a veth by default, but if anything
    enables it, frames are merged into up to 64 KiB super-frames that cannot be written out
    again (counted as ``oversize`` + ``tx_errors``, with a warning on stderr).
* Same MTU on all four ends; ifa and ifb up, with IPv6 disabled on them
  (``sysctl net.ipv6.conf.IF.disable_ipv6=1``) so the link namespace itself stays silent.
* Start `command(...)` inside the link namespace (as root: AF_PACKET, SO_RCVBUFFORCE,
  SCHED_FIFO), then poll until `ready_file` exists, failing if the process exits first. Both
  sockets are bound and forwarding when the file appears. SIGUSR1 rewrites the stats file;
  SIGTERM/SIGINT write it and exit 0. If an interface is deleted under it, it writes the
  stats file and exits 1. Exit 2 is a usage error (one line on stderr naming the parameter).

Stats file (JSON): per direction ``a2b``/``b2a``: rx/tx packets and bytes, ``dropped_loss``,
``dropped_queue`` (emulated bottleneck buffer), ``dropped_overload`` (the delay line itself
could not keep up: a result with this non-zero was limited by the emulator, not the link),
``tx_errors``, ``oversize``, ``kernel_drops`` (receive ring or socket buffer overflow),
``in_flight``, and ``late_p50_us``/``late_p99_us``/``late_max_us``: how late frames left
against their scheduled departure, i.e. the emulator's own timing error, to record with
every result. ``dropped_overload + kernel_drops + tx_errors`` are the emulator's own drops:
``testbed.calibration`` records them per link (``emulator_drops``) and fails the gate when
any is non-zero.

How it keeps time: each direction is one OS thread that reads frames with their kernel
receive timestamps (so a frame's delay counts from when it entered the link namespace, not
from when the thread woke up), keeps them in order, and writes each at its departure time,
sleeping in ppoll(2) with a 1 ns timer slack. While lightly loaded it runs SCHED_FIFO and
wakes a little early to busy-poll the last microseconds ("precise" mode); when its thread is
busy more than half the time it drops to SCHED_OTHER (nice -5) without busy-polling
("throughput" mode), because a busy real-time thread starves ksoftirqd and gets throttled.
Calibration on 2 shared vCPUs: see labs/delayline_lab.py and the figures in the stats file.

How it moves frames: received through a PACKET_RX_RING (TPACKET_V2, 8192 slots per
interface: no system call per frame while frames keep coming; ``--rx-ring=false`` or a failed
ring set-up falls back to recvmmsg), sent with sendmmsg in batches of up to 64 due frames.
Most of its CPU time is not its own: the receiving node's TCP/IP stack runs inside its sends
(veth delivers in the sender's context).

Capacity and shaping: a subscriber link (``rate_mbit`` with a delay) is shaped by the delay
line's own scheduler, so its queue (``queue_packets``; give it one bandwidth-delay product of
the round trip, ~1700 full frames at 1 Gbit/s and 20 ms) is the only place that should drop.
With a rate, the forwarder's own backlog may grow to 100 ms of frames at that rate before it
drops (``dropped_overload``), so a CPU stall of the shared machine makes frames late (see
``late_*``) instead of lost. Measured on 2 vCPUs shared with other work (load 6-10;
``python -m labs.delayline_lab --variants shaped``): 1 Gbit/s with 10 ms each way and a
BDP queue carried TCP at 0.78-0.92 Gbit/s (iperf3 goodput, whose ceiling is 0.957 Gbit/s with
1514-byte frames) with no emulator drop, where a frame-at-a-time receive and send dropped
20,000-60,000 frames in 10 s. Pin the TCP congestion control when measuring: new namespaces
inherit the host's default, and with BBR (this host's) the same link dropped 12,000-19,000
frames in its queue and retransmitted as many in 10 s, where cubic (which the main benchmark
and the lab pin) drops tens to hundreds and retransmits almost none; at load 3.5-4.5 cubic
got 0.88-0.92 Gbit/s with no emulator drop, its shortfall from the ceiling the time the
delay line waits for a CPU (tens of ms at p99 during TCP), which a queue of two BDPs did not
recover. TCP through a delay line is CPU-bound on such a machine: the
delay line, both TCP stacks and the traffic tools share two cores. Without a rate the
delay line's own forwarding capacity sets the TCP rate (0.68-0.85 Gbit/s at that load, with
``dropped_overload``), so unshaped throughput through a delay line measures the emulator.

This module is imported by Mininet topology code under the system python: stdlib only.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.errors import NetworkError, ParameterError

# The limits of spec.go, defined once for Python (testbed.scenario validates with them too), so
# a bad value fails before any namespace exists; tests/unit/test_link_parameters.py parses
# spec.go and checks they agree.
MAX_DELAY_MS = 10_000.0
MAX_JITTER_MS = 10_000.0
MIN_RATE_MBIT = 0.001
MAX_RATE_MBIT = 100_000.0
DEFAULT_QUEUE_PACKETS = 1000
MAX_QUEUE_PACKETS = 1_000_000


def _number(value: float) -> str:
    """Render a float without exponent notation (Go's ParseDuration rejects `1e-05ms`)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _is_int(value: object) -> bool:
    """An int that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """A finite int or float, not a bool: NaN compares false with everything and would slip
    through range checks."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class DirectionSpec:
    """Emulation of one direction of a link; see scheduler.go for the exact model.

    delay_ms: constant one-way delay. jitter_ms: uniform random extra delay in [0, jitter],
    never reordering frames. loss_pct: independent random loss. rate_mbit: serialization
    rate (None = unlimited). queue_packets: bottleneck buffer, frames waiting for or in
    serialization (delayed frames in flight do not count, unlike netem's limit); only
    meaningful with a rate. It also bounds the delay line's own backlog if it falls behind:
    without a rate exactly, with one at least 100 ms of frames at that rate.
    """

    delay_ms: float = 0
    jitter_ms: float = 0
    loss_pct: float = 0
    rate_mbit: float | None = None
    queue_packets: int = DEFAULT_QUEUE_PACKETS

    def __post_init__(self) -> None:
        """Reject bad values here, with the parameter named, before any namespace exists."""
        if not (_is_real(self.delay_ms) and 0 <= self.delay_ms <= MAX_DELAY_MS):
            raise ParameterError("delay_ms", self.delay_ms, f"0 to {MAX_DELAY_MS:g} (ms)")
        if not (_is_real(self.jitter_ms) and 0 <= self.jitter_ms <= MAX_JITTER_MS):
            raise ParameterError("jitter_ms", self.jitter_ms, f"0 to {MAX_JITTER_MS:g} (ms)")
        if not (_is_real(self.loss_pct) and 0 <= self.loss_pct <= 100):
            raise ParameterError("loss_pct", self.loss_pct, "0 to 100 (percent)")
        rate = self.rate_mbit
        if rate is not None and not (_is_real(rate) and MIN_RATE_MBIT <= rate <= MAX_RATE_MBIT):
            allowed = f"None or {MIN_RATE_MBIT:g} to {MAX_RATE_MBIT:g} (Mbit/s)"
            raise ParameterError("rate_mbit", rate, allowed)
        limit = self.queue_packets
        if not (_is_int(limit) and 1 <= limit <= MAX_QUEUE_PACKETS):
            allowed = f"an integer from 1 to {MAX_QUEUE_PACKETS}"
            raise ParameterError("queue_packets", limit, allowed)
        # Sub-nanosecond durations would silently round to zero in the Go spec.
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            if 0 < value < 1e-6:
                raise ParameterError(name, value, "0 or at least 0.000001 (1 ns)")

    def is_identity(self) -> bool:
        """True when frames pass unchanged, so the caller can use a plain veth instead."""
        return (
            self.delay_ms == 0
            and self.jitter_ms == 0
            and self.loss_pct == 0
            and self.rate_mbit is None
        )

    def to_arg(self) -> str:
        """The `--a2b`/`--b2a`/`--spec` string; "none" for the identity."""
        parts = []
        if self.delay_ms:
            parts.append(f"delay={_number(self.delay_ms)}ms")
        if self.jitter_ms:
            parts.append(f"jitter={_number(self.jitter_ms)}ms")
        if self.loss_pct:
            parts.append(f"loss={_number(self.loss_pct)}")
        if self.rate_mbit is not None:
            parts.append(f"rate={_number(self.rate_mbit * 1000)}kbit")
        if self.queue_packets != DEFAULT_QUEUE_PACKETS:
            parts.append(f"limit={self.queue_packets}")
        return ",".join(parts) or "none"


def command(
    ifa: str,
    ifb: str,
    a2b: DirectionSpec,
    b2a: DirectionSpec,
    seed: int = 0,
    stats_file: str | Path | None = None,
    ready_file: str | Path | None = None,
    *,
    rt_priority: int | None = None,
    spin_us: float | None = None,
    binary: str | Path | None = None,
) -> list[str]:
    """argv to run the delay line in the link namespace between `ifa` (towards A) and `ifb`.

    The caller runs it inside the link namespace (e.g. `ip netns exec NS ...` or a node's
    spawn) and waits for `ready_file` to appear; see the module docstring for the ethtool
    settings it must apply first. `rt_priority` (SCHED_FIFO, default 10; 0 = off) and
    `spin_us` (busy-poll window before a departure, default 200; 0 = only sleep) trade CPU
    for timing precision; None keeps the binary's defaults, which are the calibrated ones.
    """
    if not (_is_int(seed) and 0 <= seed < 2**64):
        raise ParameterError("seed", seed, "an integer from 0 to 2**64-1")
    if rt_priority is not None and not (_is_int(rt_priority) and 0 <= rt_priority <= 99):
        raise ParameterError("rt_priority", rt_priority, "0 (off) or 1 to 99")
    if spin_us is not None and not (_is_real(spin_us) and 0 <= spin_us <= 1000):
        raise ParameterError("spin_us", spin_us, "0 to 1000 (microseconds)")
    argv = [
        str(binary or paths.binary("delayline")),
        "run",
        "--if-a",
        ifa,
        "--if-b",
        ifb,
        "--a2b",
        a2b.to_arg(),
        "--b2a",
        b2a.to_arg(),
        "--seed",
        str(seed),
    ]
    if stats_file is not None:
        argv += ["--stats-file", str(stats_file)]
    if ready_file is not None:
        argv += ["--ready-file", str(ready_file)]
    if rt_priority is not None:
        argv += ["--rt-priority", str(rt_priority)]
    if spin_us is not None:
        argv += ["--spin-us", _number(spin_us)]
    return argv


@dataclass(frozen=True)
class Scheduled:
    """Fate of one simulated frame: a departure time, or the reason it was dropped."""

    arrival_ns: int
    departure_ns: int | None  # None when dropped
    drop: str | None = None  # "loss" or "queue" when dropped

    @property
    def delivered(self) -> bool:
        return self.departure_ns is not None


def simulate(
    spec: DirectionSpec,
    arrivals: Sequence[tuple[int, int]],
    seed: int = 0,
    *,
    direction: str = "a2b",
    binary: str | Path | None = None,
) -> list[Scheduled]:
    """Run the forwarder's own scheduler offline over (arrival_ns, size_bytes) frames.

    Used by tests and calibration: it is the same Go code path `delayline run` uses, so what
    is checked here is what the network sees (minus wake-up latency). With the `seed` given
    to `command` and a `direction` ("a2b" or "b2a") it replays that run's random choices.
    """
    if direction not in ("a2b", "b2a"):
        raise ParameterError("direction", direction, "a2b or b2a")
    exe = str(binary or paths.binary("delayline"))
    text = "".join(f"{int(a)} {int(s)}\n" for a, s in arrivals)
    proc = subprocess.run(
        [exe, "simulate", "--spec", spec.to_arg(), "--seed", str(seed), "--direction", direction],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NetworkError(f"delayline simulate failed ({proc.returncode}): {proc.stderr.strip()}")
    results = []
    for line in proc.stdout.splitlines():
        arrival, second, *rest = line.split()
        if second == "drop":
            results.append(Scheduled(int(arrival), None, rest[0]))
        else:
            results.append(Scheduled(int(arrival), int(second)))
    if len(results) != len(arrivals):
        raise NetworkError(
            f"delayline simulate returned {len(results)} lines for {len(arrivals)} frames"
        )
    return results
