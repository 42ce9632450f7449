"""Calibrate the delay line on this machine (root): RTT error, TCP throughput, CPU use.

    .venv/bin/python -m labs.delayline_lab [--delay-ms 10] [--pings 1000] [--iperf-seconds 10]
                                           [--repeat 1] [--variants direct,default,shaped]
                                           [--rate-mbit 1000] [--queue-packets N]
                                           [--congestion cubic]

Builds, for each configuration, three namespaces `<run prefix>-d<n>a`, `-d<n>l`, `-d<n>b`
(A <-> link <-> B, delay line in `-d<n>l`), or two (`a`, `b`, one direct veth pair) for the
baseline, with the same addresses and offloads, and measures:

* RTT of ICMP echo from A to B with a raw-socket pinger that timestamps in the kernel
  (SO_TIMESTAMPNS), because ping(8) prints a 20 ms RTT with only 0.1 ms resolution;
* TCP throughput A -> B with iperf3 (-J, congestion control pinned with -C, cubic by default
  like the main benchmark's, because new namespaces inherit the host's default, which may be
  BBR; the first --iperf-omit seconds of slow start left out), its retransmits, the delay
  line's CPU time over that run, and what the delay line dropped: by itself (`emu`:
  dropped_overload + kernel_drops + tx_errors, which must be 0 on a shaped link) and in the
  configured queue (`queue`: the emulated bottleneck's drops).

Variants: `direct` (veth pair), `none` (delay line, no emulation), `default` (the delay
only, unshaped: the delay line's own forwarding capacity sets the TCP rate), `shaped` (the
subscriber case: the delay and --rate-mbit in each direction, shaped by the delay line's own
scheduler with a queue of --queue-packets, by default one bandwidth-delay product of the
round trip), `spin0`, `nort`.

The RTT error is RTT - (2 * delay + median RTT of the direct veth pair). Medians, p99 and the
median's confidence interval come from `benchmarks.stats`. Every namespace, the delay-line
process and its temp dir are recorded in the run registry (kind `lab-delayline`) before they
exist, and removed when each set-up ends; `cfrbench clean <prefix>` removes what a killed lab
leaves (its prefix is the first line on stderr). It never touches anything it did not record.

About 530 lines on purpose: one experiment, whose parts change together: the set-up, its
two probes (the kernel-timestamped pinger, which runs in namespace A as this same module,
and iperf3) and the table of results.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.stats import describe, median_ci
from testbed import paths
from testbed.delayline import DirectionSpec, command
from testbed.lifecycle import RunRegistry, run_registry
from testbed.waiting import wait_until

# Linux value; Python's socket module does not export it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
V4_A, V4_B = "198.18.250.1", "198.18.250.2"
V6_A, V6_B = "2001:db8:fe99::1", "2001:db8:fe99::2"
OFFLOADS_OFF = ["tx", "off", "tso", "off", "gso", "off", "gro", "off"]
# The delay line's own drops (see testbed.calibration.EMULATOR_DROP_COUNTERS).
EMULATOR_DROPS = ("dropped_overload", "kernel_drops", "tx_errors")
FRAME_BYTES = 1514  # a full-size frame on a 1500-byte MTU link, Ethernet header included
_SETUPS = itertools.count()


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its stderr on failure (so set-up errors are legible)."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def nsexec(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@dataclass
class DelayNet:
    """Namespaces of one A <-> (delay line) <-> B set-up and the delay-line process."""

    registry: RunRegistry
    tag: str  # d<n>: this set-up's part of the namespace names
    with_delayline: bool
    namespaces: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None

    @property
    def a(self) -> str:
        return self.registry.name(f"{self.tag}a")

    @property
    def b(self) -> str:
        return self.registry.name(f"{self.tag}b")

    @property
    def link(self) -> str:
        return self.registry.name(f"{self.tag}l")

    @property
    def stats_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "stats.json"

    def stop(self) -> dict:
        """SIGTERM the delay line, check it exits 0, and return the stats it wrote on exit."""
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(10)
        if code != 0:
            raise RuntimeError(f"delay line exited with {code} on SIGTERM")
        return json.loads(self.stats_file.read_text())

    def read_stats(self) -> dict:
        """Ask the running delay line for fresh statistics (SIGUSR1) and read them."""
        assert self.proc is not None
        before = self.stats_file.stat().st_mtime_ns if self.stats_file.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: self.stats_file.exists()
                   and self.stats_file.stat().st_mtime_ns != before,
                   5, 0.01, "the delay line to write its stats file after SIGUSR1")
        return json.loads(self.stats_file.read_text())


def _die_with_parent() -> None:
    """preexec hook: SIGKILL the child when this process dies (ip netns exec keeps the pid)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _add_ns(net: DelayNet, name: str) -> None:
    net.namespaces.append(name)
    net.registry.record_netns(name)  # recorded before it exists, so clean finds a half-made one
    sh("ip", "netns", "add", name)
    sh(*nsexec(name, "ip", "link", "set", "lo", "up"))


def _veth(ns1: str, if1: str, ns2: str, if2: str) -> None:
    # Created in ns1 directly so no interface ever appears in (or collides in) the root ns.
    sh(*nsexec(ns1, "ip", "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2))
    for ns, ifname in ((ns1, if1), (ns2, if2)):
        sh(*nsexec(ns, "ethtool", "-K", ifname, *OFFLOADS_OFF))


def _address(ns: str, ifname: str, v4: str, v6: str) -> None:
    sh(*nsexec(ns, "ip", "addr", "add", f"{v4}/30", "dev", ifname))
    sh(*nsexec(ns, "ip", "-6", "addr", "add", f"{v6}/64", "dev", ifname, "nodad"))
    sh(*nsexec(ns, "ip", "link", "set", ifname, "up"))


def _start_delayline(net: DelayNet, a2b: DirectionSpec, b2a: DirectionSpec, binary: str | None,
                     extra_args: tuple[str, ...], seed: int) -> None:
    _add_ns(net, net.link)
    _veth(net.a, "eth0", net.link, "la")
    _veth(net.b, "eth0", net.link, "lb")
    for ifname in ("la", "lb"):
        sh(*nsexec(net.link, "sysctl", "-q", f"net.ipv6.conf.{ifname}.disable_ipv6=1"))
        sh(*nsexec(net.link, "ip", "link", "set", ifname, "up"))
    net.workdir = net.registry.make_tmpdir(net.tag)
    ready = net.workdir / "ready"
    argv = command("la", "lb", a2b, b2a, seed=seed, stats_file=net.stats_file,
                   ready_file=ready, binary=binary)
    # PR_SET_PDEATHSIG: the delay line dies with this lab even on kill -9.
    proc = net.proc = subprocess.Popen(nsexec(net.link, *argv, *extra_args),
                                       preexec_fn=_die_with_parent)
    net.registry.record_process(proc.pid, "delayline", net.link)

    def started() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"delay line exited with {proc.returncode} before ready")
        return ready.exists()

    wait_until(started, 10, 0.01, "the delay line to be ready")


def _tear_down(net: DelayNet) -> None:
    """Stop the delay line, delete this set-up's namespaces and temp dir, drop their records."""
    if net.proc is not None:
        if net.proc.poll() is None:
            net.proc.terminate()
            try:
                net.proc.wait(5)
            except subprocess.TimeoutExpired:
                net.proc.kill()
                net.proc.wait()
        net.registry.forget_process(net.proc.pid)
    net.registry.release_netns(net.namespaces)
    if net.workdir is not None:
        net.registry.release_tmpdir(net.workdir)


@contextlib.contextmanager
def delay_net(
    a2b: DirectionSpec | None,
    b2a: DirectionSpec | None = None,
    *,
    registry: RunRegistry | None = None,
    binary: str | None = None,
    extra_args: tuple[str, ...] = (),
    seed: int = 1,
) -> Iterator[DelayNet]:
    """A <-> B over a delay line (a2b given) or a direct veth pair (a2b None), recorded in
    `registry` (or in a run of its own, kind `lab-delayline`) and torn down on exit."""
    with contextlib.ExitStack() as stack:
        if registry is None:
            registry = stack.enter_context(run_registry("lab-delayline"))
        net = DelayNet(registry, f"d{next(_SETUPS)}", with_delayline=a2b is not None)
        stack.callback(_tear_down, net)
        _add_ns(net, net.a)
        _add_ns(net, net.b)
        if a2b is None:
            _veth(net.a, "eth0", net.b, "eth0")
        else:
            _start_delayline(net, a2b, b2a if b2a is not None else a2b, binary, extra_args, seed)
        _address(net.a, "eth0", V4_A, V6_A)
        _address(net.b, "eth0", V4_B, V6_B)
        # Resolve neighbours before measuring so the first RTT samples are not ARP/ND.
        sh(*nsexec(net.a, "ping", "-c", "3", "-i", "0.05", "-W", "2", V4_B), check=False)
        sh(*nsexec(net.a, "ping", "-6", "-c", "3", "-i", "0.05", "-W", "2", V6_B), check=False)
        yield net


# --- pinger: runs inside namespace A (`python -m labs.delayline_lab pinger ...`) -------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def pinger(dst: str, count: int, interval: float, size: int = 56) -> list[int | None]:
    """RTTs in ns (None = lost), send time from the clock just before sendto, receive time
    from the kernel's SO_TIMESTAMPNS, so Python's wake-up latency is not counted.

    The reply wait is a select() timeout, not a polling loop: it returns as soon as a reply
    arrives, which is what the RTT needs."""
    v6 = ":" in dst
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    ident = os.getpid() & 0xFFFF
    payload = bytes(size)
    rtts: list[int | None] = []
    next_send = time.monotonic()
    for seq in range(count):
        now = time.monotonic()
        if now < next_send:
            time.sleep(next_send - now)
        next_send += interval
        icmp_type = 128 if v6 else 8
        header = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq)
        csum = 0 if v6 else _checksum(header + payload)  # the kernel fills ICMPv6's
        packet = struct.pack("!BBHHH", icmp_type, 0, csum, ident, seq) + payload
        sent = time.time_ns()
        sock.sendto(packet, (dst, 0))
        rtt = None
        deadline = time.monotonic() + 1.0
        while rtt is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            data, anc, _flags, _addr = sock.recvmsg(2048, 256)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
            rtype, _code, _csum, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if rtype != (129 if v6 else 0) or rid != ident or rseq != seq:
                continue
            received = time.time_ns()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    secs, nsecs = struct.unpack("qq", value[:16])
                    received = secs * 1_000_000_000 + nsecs
            rtt = received - sent
        rtts.append(rtt)
    return rtts


def run_pinger(ns: str, dst: str, count: int, interval: float) -> list[int | None]:
    argv = [sys.executable, "-m", "labs.delayline_lab", "pinger", dst, str(count), str(interval)]
    proc = subprocess.run(nsexec(ns, *argv), capture_output=True, text=True, check=True,
                          cwd=paths.REPO_ROOT)
    return json.loads(proc.stdout)


# --- measurements ----------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iperf(net: DelayNet, seconds: int, omit: int = 0,
          congestion: str = "cubic") -> tuple[float, int, float | None]:
    """TCP A -> B: throughput (Mbit/s, receiver side, the first `omit` seconds left out),
    retransmits, delay line CPU (% of a core)."""
    server = subprocess.Popen(nsexec(net.b, "iperf3", "-s", "-1", "-B", V4_B),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "5201" in sh(*nsexec(net.b, "ss", "-Hltn", "sport = :5201")).stdout,
                   10, 0.05, "iperf3 to listen in B")
        cpu0 = proc_cpu_seconds(net.proc.pid) if net.proc else 0.0
        t0 = time.monotonic()
        argv = ["iperf3", "-c", V4_B, "-t", str(seconds), "-O", str(omit), "-C", congestion, "-J"]
        out = subprocess.run(nsexec(net.a, *argv), capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - t0
        cpu = None
        if net.proc:
            cpu = 100 * (proc_cpu_seconds(net.proc.pid) - cpu0) / elapsed
        result = json.loads(out.stdout)
        if "error" in result:
            raise RuntimeError(f"iperf3: {result['error']}")
        end = result["end"]
        return end["sum_received"]["bits_per_second"] / 1e6, end["sum_sent"]["retransmits"], cpu
    finally:
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@dataclass(frozen=True)
class Variant:
    """One configuration of the comparison: direct veth, or the delay line with options."""

    label: str
    spec: DirectionSpec | None
    extra_args: tuple[str, ...] = ()


def measure(variant: Variant, opts: argparse.Namespace, rep: int,
            registry: RunRegistry) -> dict:
    """Ping (v4 and v6), then iperf3, through one freshly built set-up."""
    with delay_net(variant.spec, registry=registry, binary=opts.binary,
                   extra_args=variant.extra_args) as net:
        cpu0 = proc_cpu_seconds(net.proc.pid) if net.proc else 0.0
        t0 = time.monotonic()
        rtts = run_pinger(net.a, V4_B, opts.pings, opts.interval)
        ping_cpu = (
            100 * (proc_cpu_seconds(net.proc.pid) - cpu0) / (time.monotonic() - t0)
            if net.proc
            else None
        )
        rtts6 = run_pinger(net.a, V6_B, max(50, opts.pings // 10), opts.interval)
        ok = [r / 1e6 for r in rtts if r is not None]
        ok6 = [r / 1e6 for r in rtts6 if r is not None]
        rtt, rtt6 = describe(ok), describe(ok6)
        ci = median_ci(ok)
        row = {
            "rep": rep,
            "config": variant.label,
            "delay_ms": variant.spec.delay_ms if variant.spec else 0.0,
            "pings": len(rtts),
            "lost": len(rtts) - len(ok),
            "lost6": len(rtts6) - len(ok6),
            "rtt_median_ms": rtt.median,
            "rtt_median_ci_ms": [ci.low, ci.high],
            "rtt_p99_ms": rtt.p99,
            "rtt_max_ms": rtt.max,
            "rtt6_median_ms": rtt6.median,
            "ping_cpu_pct": ping_cpu,
            "load1": os.getloadavg()[0],
        }
        if net.proc is not None:
            # Departure lateness while pinging only: the delay line's own timing precision.
            stats = net.read_stats()
            for key in ("late_p50_us", "late_p99_us", "rx_wait_p50_us"):
                row[key] = max(stats["a2b"][key], stats["b2a"][key])
        before = net.read_stats() if net.proc is not None else None
        t0 = time.monotonic()
        if not opts.no_iperf:
            row["tcp_mbit"], row["retransmits"], row["tcp_cpu_pct"] = iperf(
                net, opts.iperf_seconds, opts.iperf_omit, opts.congestion)
            row["congestion"] = opts.congestion
        if net.proc is not None and before is not None:
            stats = net.read_stats()
            # Whole-run figures (pings included): a drop at any time counts.
            for key in (*EMULATOR_DROPS, "oversize", "dropped_queue", "dropped_loss"):
                row[key] = stats["a2b"][key] + stats["b2a"][key]
            row["emulator_drops"] = sum(row[key] for key in EMULATOR_DROPS)
            # Frames the link carried A -> B during iperf3, at layer 2 (what a rate limits).
            sent = stats["a2b"]["tx_bytes"] - before["a2b"]["tx_bytes"]
            row["l2_mbit"] = 8 * sent / (time.monotonic() - t0) / 1e6
            row["run_late_p99_us"] = stats["a2b"]["late_p99_us"]  # A -> B, pings + TCP
        return row


def bdp_packets(rate_mbit: float, rtt_ms: float) -> int:
    """Full-size frames in one bandwidth-delay product: a drop-tail queue this deep keeps a
    single CUBIC/Reno flow from draining the link after it halves its window."""
    return max(1, math.ceil(rate_mbit * 1e6 * rtt_ms / 1e3 / 8 / FRAME_BYTES))


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labs.delayline_lab",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--pings", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--iperf-seconds", type=int, default=10)
    parser.add_argument("--iperf-omit", type=int, default=1,
                        help="seconds of slow start left out of TCP rates")
    parser.add_argument("--congestion", default="cubic",
                        help="TCP congestion control of iperf3 (-C; default cubic, as the "
                        "main benchmark pins it: the host default may be BBR)")
    parser.add_argument("--rate-mbit", type=float, default=1000.0,
                        help="rate of the shaped variant, each way")
    parser.add_argument("--queue-packets", type=int, default=None,
                        help="queue of the shaped variant (default: one bandwidth-delay "
                        "product of the RTT)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--binary", default=None, help="delayline binary (default build/bin)")
    parser.add_argument("--no-iperf", action="store_true")
    parser.add_argument(
        "--variants", default="direct,none,default,shaped,spin0,nort",
        help="comma list of: direct, none (delay line, no emulation), default (delay only),"
        " shaped (delay + --rate-mbit), spin0 (--spin-us 0), nort (--rt-priority 0)")
    return parser


def _catalogue(opts: argparse.Namespace) -> dict[str, Variant]:
    spec = DirectionSpec(delay_ms=opts.delay_ms)
    d = f"{opts.delay_ms:g}ms"
    shaped = DirectionSpec(delay_ms=opts.delay_ms, rate_mbit=opts.rate_mbit,
                           queue_packets=opts.queue_packets)
    return {
        "direct": Variant("direct veth", None),
        "none": Variant("delayline none", DirectionSpec()),
        "default": Variant(f"dl {d}", spec),
        "shaped": Variant(f"dl {d} {opts.rate_mbit:g}M", shaped),
        "spin0": Variant(f"dl {d} spin0", spec, ("--spin-us", "0")),
        "nort": Variant(f"dl {d} nort", spec, ("--rt-priority", "0")),
    }


def print_table(rows: list[dict], opts: argparse.Namespace) -> None:
    """One line per set-up, then per configuration the medians over repetitions."""
    base = {r["rep"]: r["rtt_median_ms"] for r in rows if r["config"] == "direct veth"}
    print(
        f"{'rep':>3} {'config':<18} {'med RTT':>8} {'p99 RTT':>8} {'med err':>8} {'p99 err':>8} "
        f"{'lost':>4} {'v6 med':>7} {'cpu%':>5} {'late50':>6} {'late99':>6} {'rxw50':>5} "
        f"{'TCP Mbit':>8} {'L2 Mbit':>7} {'retr':>6} {'cpu%':>5} {'emu':>6} {'queue':>6} "
        f"{'load1':>5}"
    )
    for r in sorted(rows, key=lambda r: (r["rep"], r["config"])):
        target = 2 * r["delay_ms"] + base.get(r["rep"], 0.0)
        r["err_median_ms"] = r["rtt_median_ms"] - target
        r["err_p99_ms"] = r["rtt_p99_ms"] - target
        print(
            f"{r['rep']:>3} {r['config']:<18} {r['rtt_median_ms']:8.3f} {r['rtt_p99_ms']:8.3f} "
            f"{r['err_median_ms']:8.3f} {r['err_p99_ms']:8.3f} "
            f"{r['lost']:>4} {_fmt(r['rtt6_median_ms'], 7, 3)} {_fmt(r['ping_cpu_pct'], 5, 1)} "
            f"{_fmt(r.get('late_p50_us'), 6, 0)} {_fmt(r.get('late_p99_us'), 6, 0)} "
            f"{_fmt(r.get('rx_wait_p50_us'), 5, 0)} "
            f"{_fmt(r.get('tcp_mbit'), 8, 1)} {_fmt(r.get('l2_mbit'), 7, 1)} "
            f"{r.get('retransmits', '-'):>6} {_fmt(r.get('tcp_cpu_pct'), 5, 1)} "
            f"{r.get('emulator_drops', '-'):>6} {r.get('dropped_queue', '-'):>6} "
            f"{r['load1']:5.2f}"
        )
    if opts.repeat > 1:
        print("medians over repetitions (95% CI of the median, or n too small for one):")
        for config in sorted({r["config"] for r in rows}):
            mine = [r for r in rows if r["config"] == config]
            parts = []
            for key, unit in (("err_median_ms", "ms"), ("err_p99_ms", "ms"),
                              ("tcp_mbit", "Mbit/s")):
                values = [r[key] for r in mine if r.get(key) is not None]
                if not values:
                    continue
                ci = median_ci(values)
                interval = (f"[{ci.low:.3f}, {ci.high:.3f}]" if ci.low is not None
                            else f"(n={len(values)}: insufficient data)")
                parts.append(f"{key} {describe(values).median:.3f} {unit} {interval}")
            print(f"  {config:<18} " + "; ".join(parts))
    print("errors are against 2 x delay + the direct veth median of the same repetition;")
    print(f"TCP ({opts.congestion}) rates leave out the first {opts.iperf_omit} s; L2 Mbit: "
          "frames A -> B over the")
    print("whole iperf3 run; emu: frames the delay line dropped itself (must be 0 when shaped);")
    print(f"queue: drops of the emulated queue (shaped: {opts.queue_packets} packets at "
          f"{opts.rate_mbit:g} Mbit/s); load1: the 1-minute load average after pinging")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "pinger":
        print(json.dumps(pinger(args[1], int(args[2]), float(args[3]))))
        return 0
    parser = _parser()
    opts = parser.parse_args(args)
    if os.geteuid() != 0:
        print("labs.delayline_lab: needs root (network namespaces)", file=sys.stderr)
        return 2
    opts.queue_packets = opts.queue_packets or bdp_packets(opts.rate_mbit, 2 * opts.delay_ms)
    catalogue = _catalogue(opts)
    unknown = [n for n in opts.variants.split(",") if n not in catalogue]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; allowed {', '.join(catalogue)}")
    variants = [catalogue[name] for name in opts.variants.split(",")]
    # SIGTERM (e.g. from timeout(1)) unwinds like Ctrl-C, so every namespace is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    rows = []
    with run_registry("lab-delayline", info={"lab": "delayline"}) as registry:
        print(f"lab prefix {registry.prefix}", file=sys.stderr, flush=True)
        for rep in range(opts.repeat):
            # Rotate the order each repetition so slow drifts of machine load spread evenly.
            k = rep % len(variants)
            for variant in variants[k:] + variants[:k]:
                rows.append(measure(variant, opts, rep, registry))
    print_table(rows, opts)
    print(json.dumps(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
