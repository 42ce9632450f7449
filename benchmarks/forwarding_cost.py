"""Forwarding cost of the relay node alone: how long its kernel works on each packet it forwards.

Why this measurement and not CPU counters. The relay has no process in the data path: it
programs nftables and conntrack, and every packet is forwarded by the kernel in softirq
context, on whichever core the packet arrives, interleaved with the work of every other node
of the emulated network (all namespaces share two cores) and of the delay lines. Whole-machine
CPU time (the old `relay_cpu`) therefore charges the relay with the hosts, the delay lines and
anything else the machine runs; per-core softirq time is tick-sampled on this kernel (no
CONFIG_IRQ_TIME_ACCOUNTING) and has no notion of namespaces; steering the relay's interfaces to
one core with RPS and reading that core's idle time works only on an otherwise idle machine
(tried: other processes landing on that core made up most of its busy time).

What works is timing each packet inside the relay node. Two kernel tracepoints fire on the relay
node's own interfaces: `net:netif_receive_skb` when a packet enters the node's stack from one of
its interfaces, `net:net_dev_start_xmit` when the node hands it to its other interface. A
forwarded packet runs from the first to the second synchronously, on one core, in one softirq:
IP input, the relay's nftables chains, conntrack, NAT, routing, the leak guard, neighbour
output. The time between the two events (same core, same skb) is therefore exactly the relay
node's own work on that packet, whatever else the machine does meanwhile; nothing of the
hosts, the other routers or the delay lines is in it. `perf record -a` collects the two events,
filtered in the kernel to the relay's two interface names, while the load runs.

Two ways to run it. One path per capture (this module alone, `capture` + `estimate`): fine
on a quiet machine, but the machine's state moves per-packet times by 20-40% between
captures seconds apart, so three quick runs left cfr-flow/cgn undecided at 5%. The suite's
definitions therefore use the paired mode (`concurrent_paths`, benchmarks/forwarding_joint.py):
one capture per block carries every compared policy's flow and rules, interleaved within
50 ms, and decides within 8-16 blocks with CIs 1-3% wide. The notes below describe
the one-path mode; the paired module's docstring says what differs.

Estimates, per sample and direction (up = subscriber to Internet, down = back): the median
per-packet time (robust against the rare hard interrupt or hypervisor stall inside a packet,
which are not the relay's cost), times the packets forwarded. From those:

- `forwarding_cost` (ns/packet), the metric: the packet-weighted mean of the two directions'
  medians;
- `cpu_s_per_gbit` (in each record's extra): the same CPU time per Gbit of subscriber data.
  Not a metric of its own because it is about twice as noisy (the CI of cfr-flow/cgn was
  0.79..1.18 where ns/packet gave 0.95..1.16, same 12 blocks): how many packets carry a Gbit
  depends on how TCP sized its GSO aggregates in that second, which is not the relay's doing.

Packets are what the relay node sees: between namespaces the veths carry GSO/GRO aggregates
(a bulk TCP sample moves about 64 KiB per data packet and a small ACK per reply), as a Linux
router's NIC would hand them up; the per-packet size is recorded with each sample.

Limits (stated, not hidden): the tracepoints filter on interface names, so another cfrbench
network forwarding through its own `edge` at the same moment would be counted too; a sample
whose traced data bytes exceed what its own load sent by more than 5% is therefore failed
(seen while several networks ran at once on a shared machine, never in a lone run); the
two tracepoints add a constant few hundred ns to every packet of every policy alike, which
pulls ratios slightly towards 1; tracefs must be available (perf mounts it) and `perf`
installed (Debian: linux-perf).

Noise (measured on the shared 2-core machine at load average ~10, 8 blocks of cgn, cfr-flow,
cfr-epoch in random order, 1 s samples): the per-block log ratio cfr-flow/cgn has a standard
deviation of 0.080 with the median estimator (ratio 0.99); a 10th percentile would give
0.058, the mean 0.76 (interrupts and stalls dominate a mean). The median is kept: a
regression that adds work to only some packets moves the median, not a low quantile. On a
quiet machine the spread is smaller; the quick profile's 6-12 blocks decide 5% when the
per-block spread is below about 4%.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import EnvironmentProblem

RX_EVENT = "net:netif_receive_skb"
TX_EVENT = "net:net_dev_start_xmit"
#: Seconds perf may take beyond the load to write and exit.
PERF_GRACE_S = 30.0
#: Bytes traced in the data direction may exceed what the load sent by headers and the
#: control connection (well under 1%); more means foreign packets were counted (the sample
#: is then failed, not used: see the module docstring's limits).
MAX_TRACED_OVER_SENT = 1.05
#: Fewer bytes traced than this share of what the load sent means perf lost events (its
#: writer starved on a loaded machine: seen as 4-33% coverage in 7 of 36 samples at load
#: ~8 with the default buffer); the sample is failed rather than estimated from a
#: time-biased remnant.
MIN_TRACED_OVER_SENT = 0.9
#: perf's ring buffer per CPU, in pages (16 MiB): a tracepoint load of ~4000 events/s then
#: survives seconds of a starved writer.
PERF_BUFFER_PAGES = 4096


@dataclass
class ForwardedPackets:
    """Per-packet forwarding times (ns) through one node, per direction, from one capture."""

    up_ns: list[float] = field(default_factory=list)
    down_ns: list[float] = field(default_factory=list)
    up_bytes: int = 0
    down_bytes: int = 0
    #: packets that entered the node and never left through its other interface (local
    #: delivery, ARP, drops) - not forwarding, so not counted
    not_forwarded: int = 0


def forwarded_packets(lines: Iterable[str], ingress: str | Sequence[str],
                      egress: str | Sequence[str]
                      ) -> Generator[tuple[str, float, float, dict[str, str]], None, int]:
    """Pair receive and transmit events of the same skb on the same core.

    `lines` is `perf script -F cpu,time,event,trace --ns` output. Yields, per forwarded
    packet, (direction, receive time in s, ns from receive to transmit, the transmit
    event's fields): a packet received on an `ingress` interface (subscriber side) and
    transmitted on an `egress` one (Internet side) is `up`; the reverse is `down`. A
    transmit without a pending receive (the node's own packets) or on the side it came in
    on is ignored. Returns (StopIteration value) the count of receives never forwarded."""
    ingress_set = {ingress} if isinstance(ingress, str) else set(ingress)
    egress_set = {egress} if isinstance(egress, str) else set(egress)
    pending: dict[tuple[str, str], tuple[float, str]] = {}
    not_forwarded = 0
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or not parts[0].startswith("["):
            continue
        cpu, event = parts[0], parts[2].rstrip(":")
        try:
            ts = float(parts[1].rstrip(":"))
        except ValueError:
            continue
        fields = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
        dev, skb = fields.get("dev"), fields.get("skbaddr")
        if dev is None or skb is None:
            continue
        if event == RX_EVENT:
            if (cpu, skb) in pending:
                not_forwarded += 1
            pending[(cpu, skb)] = (ts, dev)
            continue
        if event != TX_EVENT:
            continue
        start = pending.pop((cpu, skb), None)
        if start is None or start[1] == dev:
            continue
        took = (ts - start[0]) * 1e9
        if start[1] in ingress_set and dev in egress_set:
            yield "up", start[0], took, fields
        elif start[1] in egress_set and dev in ingress_set:
            yield "down", start[0], took, fields
    return not_forwarded + len(pending)


def parse_perf_script(lines: Iterable[str], ingress: str | Sequence[str],
                      egress: str | Sequence[str]) -> ForwardedPackets:
    """Per-direction forwarding times and bytes of one capture (see forwarded_packets)."""
    out = ForwardedPackets()
    packets = forwarded_packets(lines, ingress, egress)
    while True:
        try:
            direction, _start, took, fields = next(packets)
        except StopIteration as done:
            out.not_forwarded += done.value
            return out
        size = int(fields.get("len", "0"))
        if direction == "up":
            out.up_ns.append(took)
            out.up_bytes += size
        else:
            out.down_ns.append(took)
            out.down_bytes += size


def estimate(packets: ForwardedPackets) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The metric (`forwarding_cost`, ns/packet) and details (`cpu_s_per_gbit` among them)."""
    dirs = {"up": (packets.up_ns, packets.up_bytes), "down": (packets.down_ns, packets.down_bytes)}
    med = {d: statistics.median(ns) if ns else 0.0 for d, (ns, _) in dirs.items()}
    count = {d: len(ns) for d, (ns, _) in dirs.items()}
    total_packets = sum(count.values())
    busy_ns = sum(med[d] * count[d] for d in dirs)
    data_gbit = max(packets.up_bytes, packets.down_bytes) * 8 / 1e9
    extra: dict[str, Any] = {
        "packets": count, "median_ns": {d: round(v, 1) for d, v in med.items()},
        "p99_ns": {d: round(_quantile(ns, 0.99), 1) for d, (ns, _) in dirs.items() if ns},
        "mean_bytes": {d: round(b / count[d]) for d, (_, b) in dirs.items() if count[d]},
        "data_gbit": round(data_gbit, 4), "not_forwarded": packets.not_forwarded,
        "busy_ms": round(busy_ns / 1e6, 3),
    }
    if not total_packets or data_gbit <= 0:
        return {"forwarding_cost": None}, extra
    extra["cpu_s_per_gbit"] = busy_ns / 1e9 / data_gbit
    return {"forwarding_cost": busy_ns / total_packets}, extra


def coverage_problem(traced_bytes: int, sent_bytes: float) -> str | None:
    """Why a sample's trace cannot be used, or None: the data bytes traced through the relay
    must match what the sample's own load sent (MIN_/MAX_TRACED_OVER_SENT)."""
    if sent_bytes <= 0:
        return None
    if traced_bytes < MIN_TRACED_OVER_SENT * sent_bytes:
        return (f"traced {traced_bytes} bytes for {sent_bytes:.0f} sent: perf lost events "
                "(its writer starved); sample not used")
    if traced_bytes > MAX_TRACED_OVER_SENT * sent_bytes:
        return (f"traced {traced_bytes} bytes for {sent_bytes:.0f} sent: another network "
                "forwarded through interfaces of the same name meanwhile")
    return None


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def perf_binary() -> str:
    """The perf executable, or EnvironmentProblem saying how to get it."""
    perf = shutil.which("perf")
    if perf is None:
        raise EnvironmentProblem("forwarding_cost needs perf (kernel tracepoints): "
                                 "apt-get install linux-perf")
    return perf


def _run_group(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    """Run `argv` in its own process group; on timeout kill the whole group (perf's load
    would otherwise outlive it and keep its server busy), then re-raise."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def capture(load_argv: Sequence[str], ingress: Sequence[str], egress: Sequence[str],
            workdir: Path, timeout: float) -> tuple[subprocess.CompletedProcess,
                                                   ForwardedPackets]:
    """Run `load_argv` under `perf record -a` with the two tracepoints filtered to the
    node's interfaces; return the load's result and the forwarded packets.

    perf starts the load itself, so collection covers exactly the load's lifetime.
    Raises EnvironmentProblem if perf cannot trace (no perf, no tracefs, not root)."""
    perf = perf_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "forwarding.perf.data"
    flt = " || ".join(f'name == "{name}"' for name in (*ingress, *egress))
    # No build-id scan and no BPF program synthesis: tracepoints need neither, and they made
    # perf take 2.5 s instead of 1.3 s around a 1 s load.
    record = [perf, "record", "-q", "-a", "-o", str(data), "-m", str(PERF_BUFFER_PAGES),
              "--no-buildid", "--no-buildid-cache", "--no-bpf-event",
              "-e", RX_EVENT, "--filter", flt, "-e", TX_EVENT, "--filter", flt,
              "--", *load_argv]
    try:
        proc = _run_group(record, timeout + PERF_GRACE_S)
        if not data.exists() or data.stat().st_size == 0:
            raise EnvironmentProblem(
                "perf record wrote no trace (needs root and tracefs; "
                f"perf said: {proc.stderr.strip()[-200:] or 'nothing'})")
        script = subprocess.run([perf, "script", "-i", str(data), "-F", "cpu,time,event,trace",
                                 "--ns"], capture_output=True, text=True, timeout=120,
                                check=False)
    finally:
        data.unlink(missing_ok=True)
        Path(f"{data}.old").unlink(missing_ok=True)
    return proc, parse_perf_script(script.stdout.splitlines(), ingress, egress)
