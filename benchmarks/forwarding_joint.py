"""Forwarding cost, paired: one flow per policy and every policy's rules, in one capture.

Why. Timing each packet inside the relay node (benchmarks/forwarding_cost.py) keeps the rest
of the emulated network out of the figure, but not the machine's state: on the shared 2-core
VM the per-packet time of one path moves between about 3.5 and 5.5 us from one second to the
next (the hypervisor, the other core, cache state). With one path per capture, a block of
three captures spans 7-8 s, and the per-block ratio cfr-flow/cgn inherited that swing: three
quick runs gave CIs of 0.92-1.03, 0.87-1.09 and 0.82-1.06 against a 5% margin, undecided.
The relay lab met the same problem for latency (labs/relay_lab `latency_paired`) and solved
it by pairing inside one process: here every policy's packets cross the node interleaved,
within a fraction of a second of each other.

How, per capture (one block of the schedule):

1. For each path of the set, in random order: switch the relay to the path's policy
   (`env.select`), start an iperf3 flow paced at rate/n to an iperf3 server of its own on
   the transit router, with a TCP MSS of its own (iperf3 -M; MSSs assigned to paths at
   random), and wait until its data connection is established. Conntrack pins the NAT
   binding a flow got from the rules of its first packet, so each flow keeps its policy's
   per-flow state (alias, port choice) whatever rules are active later.
2. Record the two tracepoints (`perf record -k CLOCK_MONOTONIC`) for `duration_s` while all
   flows run, and meanwhile rotate the active ruleset among the paths' policies every
   `WINDOW_S` (random order per round), noting when each switch began and ended.
3. Pair receive and transmit per skb (forwarding_cost.forwarded_packets) and attribute
   every subscriber-to-Internet data packet to its flow, by its length (TSO and GSO are off
   on the client's interface during the capture, so every data packet is one full segment
   of its flow's MSS; MSSs 20 bytes apart), and to the ruleset active when it arrived.
   Packets that arrived during a switch are set aside. The reply direction carries bare
   ACKs that the trace cannot tell apart, so it is not used.
4. Per path, from *its own flow's* packets while *its own policy's ruleset* was active:
   per window the trimmed mean (20% cut at each end; see `trimmed_mean` for why not the
   median) of the per-packet times; the path's ratio to the reference (the first path of
   the set, cgn) is the median over rotation rounds of its window figure over the
   reference's in the same round (`round_paired_ratio`), and its figure (ns/packet) the
   reference's trimmed mean over the capture times that ratio. All flows' senders share
   one core. So each path's figure carries what its policy does per packet through its
   rules and through its flows' conntrack/NAT state, compared with the reference's within
   ~200 ms.

A routed path in the set (IPv6 ``cgn6``: the relay's CGN translates IPv4 only) has no NAT
binding to pin: under the aliasing policies' rules the relay's leak guard drops its packets,
as it must. A TCP flow then stalls for two windows in three, backs off, and its iperf3
server, never seeing the client's close, stays busy into the next block (measured: 14 of 36
IPv6 samples failed with "did not start"). So when any path of the set is routed, every flow
of the capture is UDP at a fixed rate (iperf3 -u, datagram payloads sized like the MSSs so
lengths still tell the flows apart): a UDP sender keeps its pace through the windows in
which its packets are dropped, and only its own-rules packets are used anyway. Before the
flows are stopped the routed path's rules are made active again, so its iperf3 control
connection can close; the servers also give up an idle test after a few seconds.

Per-flow rule work (the SNAT choice on a flow's first packet) is not per-packet cost; the
connection-rate benchmark measures it. Packets are single segments, as a router's NIC hands
them up, not the 40-64 KB GSO aggregates veths carry by default, whose size (set per flow
by TCP's autosizing) moved per-packet time more than any policy did. Limits (stated): the
packets of a switch's own moment are dropped from the figure, so a regression that slows
only the switch itself is conn_rate's or the rotation lab's to catch, not this one's; IPv4
and IPv6 sets are captured separately (one sampler per family).

Measured (quick profile, quiet machine, this design): cgn 2.75-3.5 us/packet; cfr-flow/cgn
and cfr-epoch/cgn decided equivalent after 8 blocks with CIs 1-2% wide (e.g. x1.001
[0.998, 1.006]). Positive control (tests/integration/test_forwarding_cost_control.py): 40
no-op rules planted in cfr-flow's forward chain read x1.17 [1.15, 1.17], worse, while
cfr-epoch in the same run stays equivalent. Earlier estimators (per-capture medians over
150 ms windows; capture-wide trimmed means) left one quiet run in three undecided. IPv6 (UDP
flows, routed cgn6 as reference): cgn6 4.54 us/packet, cfr-epoch6 x1.062 [1.055, 1.07]
worse in one quiet run and x1.051, x1.049 undecided in two more: NAT66 costs 5-7% over
routing, at the 5% margin, and it is the translation, not the leak guard (with every guard
rule removed cfr-flow6 read x1.04 [1.035, 1.058]).

Over 400 lines on purpose: one capture procedure (flows, rotation, perf, attribution, per-
path figures) whose steps share their timing and are tested as pure functions; splitting it
would scatter one experiment's set-up.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import random
import signal
import statistics
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks import forwarding_cost as fwd
from benchmarks import paths as path_table
from testbed.errors import EnvironmentProblem
from testbed.waiting import WaitTimeout, wait_until

#: TCP MSS per concurrent flow (iperf3 -M), largest first. Segments leave the client one per
#: packet (GSO/TSO off during the capture), so a flow's data packets all have one length and
#: the lengths tell the flows apart; 20 bytes apart keeps any per-byte cost below ~0.2%.
FLOW_MSS: tuple[int, ...] = (1400, 1380, 1360, 1340)
#: Seconds each policy's ruleset stays active during a capture before the next switch.
#: Short, so that every path gets many windows per capture: on a quiet machine per-packet
#: time flips between ~2.75 and ~3.6 us for stretches of a few hundred ms (CPU idle and
#: frequency states; under load the cores never idle and it stays at 2.75), and with 150 ms
#: windows (2-3 per path) one slow window moved a path's median (24 blocks left cfr-flow
#: undecided, x1.005 [0.982, 1.044]).
WINDOW_S = 0.05
#: Share of packets cut from each end before averaging a path's per-packet times.
TRIM = 0.2
#: A window contributes to the round pairing only with at least this many own-rules packets.
MIN_WINDOW_PACKETS = 20
#: Fewer attributed packets than this for a path make the capture unusable (not a result).
MIN_PACKETS = 40
#: A packet length counts as a flow when it carries at least this share of data packets.
MIN_FLOW_SHARE = 0.05
#: First port of the extra iperf3 servers on the transit router (one per concurrent flow).
FIRST_PORT = 5211
#: iperf3 servers end a test whose data has stopped for this long (ms): a client killed
#: while its close could not get through must not leave the server busy for the next block.
SERVER_RCV_TIMEOUT_MS = 3000
#: Attempts per capture when the capture, not the relay, failed (lost events, flows not
#: told apart, too few packets); every problem is kept in the records.
ATTEMPTS = 3

Result = tuple[dict[str, float | None], dict[str, Any]]


class Env(Protocol):
    """What this module needs of benchmarks.environment.BenchEnv."""

    net: Any
    workdir: Path

    def select(self, path: str) -> None: ...
    def transit_target(self, family: int = 4) -> str: ...
    def client_source(self, family: int) -> str: ...
    def relay_interfaces(self) -> tuple[tuple[str, ...], tuple[str, ...]]: ...


@dataclass
class Window:
    """One interval during which `path`'s policy ruleset was the active one."""

    path: str
    start: float  # CLOCK_MONOTONIC seconds, after the switch completed
    end: float    # when the next switch began (or the capture ended)
    round: int = 0  # rotation round: every path's ruleset once, in random order


@dataclass
class UpPacket:
    arrived: float   # CLOCK_MONOTONIC seconds of the receive event
    took_ns: float
    size: int
    gso_size: int

    @property
    def key(self) -> int:
        """What tells flows apart: the MSS of a GSO aggregate, else the packet's length."""
        return self.gso_size or self.size


@dataclass
class JointCapture:
    """What one capture yields per path, plus the evidence to judge the capture."""

    per_path_ns: dict[str, list[float]] = field(default_factory=dict)
    per_path_bytes: dict[str, int] = field(default_factory=dict)
    cross_ns: dict[str, list[float]] = field(default_factory=dict)  # flow's packets, others' rules
    set_aside: int = 0
    unattributed: int = 0
    lost_events: int = 0
    key_of_path: dict[str, int] = field(default_factory=dict)
    #: (round, path) -> that path's own-rules packet times in its window of that round
    per_window_ns: dict[tuple[int, str], list[float]] = field(default_factory=dict)


def up_packets(lines: Iterable[str], ingress: Sequence[str],
               egress: Sequence[str]) -> tuple[list[UpPacket], int]:
    """Subscriber-to-Internet forwarded packets with their gso_size, and the count of
    `perf script --show-lost-events` LOST records seen."""
    packets: list[UpPacket] = []
    lost = 0
    rows = []
    for line in lines:
        if "LOST" in line and "events" in line.lower():
            lost += 1
            continue
        rows.append(line)
    for direction, start_s, took_ns, fields in fwd.forwarded_packets(rows, ingress, egress):
        if direction == "up":
            packets.append(UpPacket(start_s, took_ns, int(fields.get("len", "0")),
                                    int(fields.get("gso_size", "0"))))
    return packets, lost


def flows_by_size(packets: Sequence[UpPacket], mss_of_path: Mapping[str, int]) -> dict[int, str]:
    """Packet key (length, or gso_size of an aggregate) -> path: the n most common keys,
    ranked against the paths' MSSs (a larger MSS gives a larger packet whatever the TCP
    options). Empty if the flows cannot be told apart (not exactly n keys above
    MIN_FLOW_SHARE)."""
    counts: dict[int, int] = {}
    for p in packets:
        counts[p.key] = counts.get(p.key, 0) + 1
    total = sum(counts.values())
    big = sorted((k for k, c in counts.items() if total and c >= MIN_FLOW_SHARE * total),
                 reverse=True)
    if len(big) != len(mss_of_path):
        return {}
    by_mss = sorted(mss_of_path, key=lambda path: mss_of_path[path], reverse=True)
    return dict(zip(big, by_mss, strict=True))


def attribute(packets: Sequence[UpPacket], windows: Sequence[Window],
              path_of_key: Mapping[int, str]) -> JointCapture:
    """Split packets by (flow's path, active ruleset's path); see the module docstring."""
    out = JointCapture(key_of_path={p: k for k, p in path_of_key.items()})
    ordered = sorted(windows, key=lambda w: w.start)
    starts = [w.start for w in ordered]
    for p in packets:
        flow = path_of_key.get(p.key)
        if flow is None:
            out.unattributed += 1
            continue
        i = bisect.bisect_right(starts, p.arrived) - 1
        if i < 0 or p.arrived >= ordered[i].end:
            out.set_aside += 1  # before the first window, or during a switch
            continue
        rules = ordered[i].path
        if rules == flow:
            out.per_path_ns.setdefault(flow, []).append(p.took_ns)
            out.per_window_ns.setdefault((ordered[i].round, flow), []).append(p.took_ns)
            out.per_path_bytes[flow] = out.per_path_bytes.get(flow, 0) + p.size
        else:
            out.cross_ns.setdefault(flow, []).append(p.took_ns)
    return out


def trimmed_mean(values: Sequence[float], cut: float = TRIM) -> float:
    """Mean of the values between the `cut` and 1 - `cut` quantiles.

    Why not the median: per-packet time is a mixture of two machine states (~2.75 and
    ~3.5 us on the development VM, idle and frequency states of the cores) that the
    interleaved windows give every path in about the same proportion; a mixture's median
    jumps from one mode to the other when that proportion is near one half, its trimmed
    mean moves smoothly with it (and with a cost added to any share of the packets), while
    the trimming keeps interrupts and stalls inside a packet out."""
    xs = sorted(values)
    k = int(len(xs) * cut)
    kept = xs[k:len(xs) - k] or xs
    return sum(kept) / len(kept)


def round_paired_ratio(per_window: Mapping[tuple[int, str], Sequence[float]], path: str,
                       ref: str) -> tuple[float | None, int]:
    """Median over rotation rounds of (path's window figure / reference's window figure in
    the same round), and the rounds used; (1.0, n) for the reference itself.

    Why pair by round: the machine's slow and fast states last tens to hundreds of ms, so
    even interleaved 50 ms windows gave paths different shares of slow packets in one
    capture (a quiet run left cfr-epoch undecided at x1.013 [0.959, 1.048]); windows of one
    round, at most ~200 ms apart, mostly share their state."""
    ratios = []
    rounds = sorted({r for r, p in per_window if p == path})
    for r in rounds:
        mine, theirs = per_window.get((r, path), []), per_window.get((r, ref), [])
        if len(mine) >= MIN_WINDOW_PACKETS and len(theirs) >= MIN_WINDOW_PACKETS:
            ratios.append(trimmed_mean(mine) / trimmed_mean(theirs))
    if not ratios:
        return None, 0
    return statistics.median(ratios), len(ratios)


def results(capture: JointCapture, paths: Sequence[str], capture_id: int,
            extra_common: Mapping[str, Any]) -> tuple[dict[str, Result], str | None]:
    """Per-path results, or a capture problem (then every path's value is None)."""
    problem = None
    if capture.lost_events:
        problem = f"perf lost events ({capture.lost_events} LOST records): capture not used"
    elif len(capture.key_of_path) != len(paths):
        problem = "the flows could not be told apart by packet length"
    else:
        few = [p for p in paths if len(capture.per_path_ns.get(p, [])) < MIN_PACKETS]
        if few:
            problem = (f"fewer than {MIN_PACKETS} packets under their own rules for "
                       f"{', '.join(few)}: capture not used")
    out: dict[str, Result] = {}
    ref = paths[0]
    ref_ns = capture.per_path_ns.get(ref, [])
    ref_level = trimmed_mean(ref_ns) if ref_ns else None
    for path in paths:
        ns = capture.per_path_ns.get(path, [])
        cross = capture.cross_ns.get(path, [])
        own = trimmed_mean(ns) if ns else None
        rel, rounds = round_paired_ratio(capture.per_window_ns, path, ref)
        figure = own
        if path != ref and ref_level is not None and rel is not None:
            # the reference's level in this capture times the path's round-paired ratio
            figure = ref_level * rel
        nbytes = capture.per_path_bytes.get(path, 0)
        extra: dict[str, Any] = {
            **extra_common, "joint_capture": capture_id, "paths_together": list(paths),
            "packets": len(ns), "packet_key": capture.key_of_path.get(path),
            "median_ns_other_rules": round(statistics.median(cross), 1) if cross else None,
            "set_aside": capture.set_aside, "unattributed": capture.unattributed,
            "reference": ref, "ratio_to_reference": None if rel is None else round(rel, 5),
            "paired_rounds": rounds,
            "trimmed_mean_ns": None if own is None else round(own, 1),
        }
        if figure is not None and nbytes:
            extra["cpu_s_per_gbit"] = figure * len(ns) / 1e9 / (nbytes * 8 / 1e9)
            extra["median_ns"] = round(statistics.median(ns), 1)
            extra["mean_bytes"] = round(nbytes / len(ns))
        if problem:
            extra["capture_problem"] = problem
            figure = None
        out[path] = ({"forwarding_cost": figure}, extra)
    return out, problem


class JointSampler:
    """Runs one joint capture per block and hands each path its share.

    The runner asks for one path at a time; the first request of a block runs the capture
    for every path of the set and the others are served from it. A path asked for twice
    without a capture in between (the next block) triggers a new capture."""

    def __init__(self, env: Env, paths: Sequence[str], family: int = 4) -> None:
        self.env = env
        self.paths = tuple(paths)
        self.family = family
        self.pending: dict[str, Result] = {}
        self.captures = 0
        self.servers: list[tuple[str, int]] = []

    def sample(self, path: str, options: Mapping[str, Any]) -> Result:
        if path not in self.paths:
            return {"forwarding_cost": None}, {
                "error": f"path {path} is not in concurrent_paths {list(self.paths)}"}
        if path not in self.pending:
            self.pending = self._capture_with_retries(options)
        return self.pending.pop(path)

    def _capture_with_retries(self, options: Mapping[str, Any]) -> dict[str, Result]:
        problems: list[str] = []
        for _ in range(ATTEMPTS):
            self.captures += 1
            per_path, problem = self._capture_once(options)
            if problem is None:
                break
            problems.append(problem)
        for _values, extra in per_path.values():
            extra["attempts"] = len(problems) + (problem is None)
            if problems:
                extra["capture_problems"] = list(problems)
            if problem is not None:
                extra["error"] = problem
            extra.pop("capture_problem", None)
        return per_path

    def _ensure_servers(self) -> list[tuple[str, int]]:
        if len(self.servers) < len(self.paths):
            # also proves the transit link is undelayed
            addr = self.env.transit_target(self.family)
            transit = self.env.net[self.env.net.roles.transit]
            for i in range(len(self.servers), len(self.paths)):
                port = FIRST_PORT + i + (10 if self.family == 6 else 0)
                transit.spawn(["iperf3", "-s", "-B", addr, "-p", str(port),
                               "--rcv-timeout", str(SERVER_RCV_TIMEOUT_MS)],
                              label=f"iperf3-joint-{i}",
                              log=self.env.workdir / f"iperf3-joint-{i}.log")
                self.servers.append((addr, port))
            for _addr, port in self.servers:
                wait_until(lambda port=port: transit.run(
                    ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout.strip(),
                    timeout_s=10, what=f"iperf3 server on port {port}")
        return self.servers

    def _capture_once(self, options: Mapping[str, Any]) -> tuple[dict[str, Result], str | None]:
        duration = float(options.get("duration_s", 1.0))
        rate = float(options.get("rate_mbit", 300.0)) or 300.0
        cc = str(options.get("congestion_control", "cubic"))
        env = self.env
        servers = self._ensure_servers()
        order = random.sample(self.paths, len(self.paths))
        mss = dict(zip(order, random.sample(FLOW_MSS[:len(order)], len(order)), strict=True))
        client = env.net[env.net.roles.client]
        flows: list[subprocess.Popen] = []
        ingress, egress = env.relay_interfaces()
        workdir = env.workdir / "forwarding"
        workdir.mkdir(parents=True, exist_ok=True)
        data = workdir / "joint.perf.data"
        iface = env.net.roles.interface(env.net.roles.client)
        routed = routed_paths(self.paths)
        udp = bool(routed)
        restore = _segment_on_client(client, iface)
        try:
            for path, (addr, port) in zip(order, servers, strict=False):
                env.select(path)
                argv = client.command(
                    [*_same_core(), *flow_command(addr, port, env.client_source(self.family),
                                                  mss[path], rate / len(order), cc,
                                                  duration + 30, udp)])
                flows.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True,
                                              start_new_session=True))
                try:
                    wait_until(lambda port=port: _flow_started(client, port, udp),
                               timeout_s=10, interval_s=0.02,
                               what=f"iperf3 {'UDP' if udp else 'TCP'} data flow to port {port}")
                except WaitTimeout as exc:
                    return self._all_failed(f"flow for {path} did not start: {exc}"
                                            + _stderr_tail(flows[-1]))
            windows, perf_err = self._record_rotating(data, ingress, egress, duration)
            if routed:
                env.select(routed[0])  # let the routed flow's control connection close
            if not data.exists() or data.stat().st_size == 0:
                raise EnvironmentProblem("perf record wrote no trace (needs root and "
                                         f"tracefs; perf said: {perf_err[-200:] or 'nothing'})")
            script = subprocess.run(
                [fwd.perf_binary(), "script", "-i", str(data), "--show-lost-events",
                 "-F", "cpu,time,event,trace", "--ns"],
                capture_output=True, text=True, timeout=120, check=False)
        finally:
            for proc in flows:
                _kill_group(proc)
            client.run(["ethtool", "-K", iface, *restore], check=False)
            data.unlink(missing_ok=True)
        packets, lost = up_packets(script.stdout.splitlines(), ingress, egress)
        capture = attribute(packets, windows, flows_by_size(packets, mss))
        capture.lost_events = lost
        common = {"windows": len(windows), "congestion_control": None if udp else cc,
                  "transport": "udp" if udp else "tcp", "routed_paths": list(routed),
                  "rate_mbit_per_flow": rate / len(order), "up_packets_traced": len(packets)}
        per_path, problem = results(capture, self.paths, self.captures, common)
        for path in self.paths:
            per_path[path][1]["mss"] = mss[path]
        return per_path, problem

    def _record_rotating(self, data: Path, ingress: Sequence[str], egress: Sequence[str],
                         duration: float) -> tuple[list[Window], str]:
        """perf record for `duration` s; rotate rulesets until it exits. Returns windows."""
        flt = " || ".join(f'name == "{n}"' for n in (*ingress, *egress))
        record = [fwd.perf_binary(), "record", "-q", "-a", "-k", "CLOCK_MONOTONIC",
                  "-o", str(data), "-m", str(fwd.PERF_BUFFER_PAGES),
                  "--no-buildid", "--no-buildid-cache", "--no-bpf-event",
                  "-e", fwd.RX_EVENT, "--filter", flt, "-e", fwd.TX_EVENT, "--filter", flt,
                  "--", "sleep", f"{duration:g}"]
        perf = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        windows: list[Window] = []
        deadline = time.monotonic() + duration + fwd.PERF_GRACE_S
        try:
            rnd = 0
            while perf.poll() is None and time.monotonic() < deadline:
                rnd += 1
                for path in random.sample(self.paths, len(self.paths)):
                    began = time.monotonic()
                    if windows:
                        windows[-1].end = began
                    self.env.select(path)
                    windows.append(Window(path, time.monotonic(), float("inf"), rnd))
                    time.sleep(WINDOW_S)
                    if perf.poll() is not None:
                        break
        finally:
            if windows:
                windows[-1].end = time.monotonic()
            if perf.poll() is None:
                _kill_group(perf)
            _, err = perf.communicate()
        return windows, err or ""

    def _all_failed(self, problem: str) -> tuple[dict[str, Result], str]:
        return ({p: ({"forwarding_cost": None}, {"capture_problem": problem})
                 for p in self.paths}, problem)


def _same_core() -> list[str]:
    """taskset prefix putting every flow's sender on one core: a forwarded packet is
    processed in softirq on the core its sender transmitted from, so flows on different
    cores would each carry their core's state (the perf writer, the switching `nft`, idle
    exits) into their path's figure; on one core they share it."""
    cores = sorted(os.sched_getaffinity(0))
    return ["taskset", "-c", str(cores[0])] if len(cores) > 1 else []


#: ethtool -k feature names -> ethtool -K keywords, turned off while a capture runs
_OFFLOADS = {"tcp-segmentation-offload": "tso", "generic-segmentation-offload": "gso"}


def _segment_on_client(node: Any, iface: str) -> list[str]:
    """Turn TSO and GSO off on the client's access interface, so the relay forwards one
    segment per packet as a router's NIC would hand it (not 40-64 KB aggregates whose size,
    and so per-packet time, TCP's autosizing sets per flow); returns the ethtool -K
    arguments that restore the previous state."""
    shown = node.run(["ethtool", "-k", iface], check=False).stdout
    restore: list[str] = []
    for line in shown.splitlines():
        name, _, state = line.strip().partition(":")
        if name in _OFFLOADS and state.strip().startswith(("on", "off")):
            restore += [_OFFLOADS[name], state.split()[0]]
    node.run(["ethtool", "-K", iface, "tso", "off", "gso", "off"], check=True)
    return restore or ["tso", "on", "gso", "on"]


def routed_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """The paths of the set whose packets the relay routes without a NAT binding (their
    flows are not pinned to their policy, so other policies' leak guards drop them)."""
    return tuple(p for p in paths if path_table.relay_mode(p) == "route")


def flow_command(addr: str, port: int, source: str, size: int, rate_mbit: float, cc: str,
                 seconds: float, udp: bool) -> list[str]:
    """iperf3 client argv of one flow: TCP with MSS `size`, or (a routed path in the set)
    UDP datagrams of `size` bytes: packets 12 bytes shorter than that MSS's TCP segments
    (IP + 8 + size against IP + 20 + size, the timestamp option's 12 bytes coming out of
    the MSS), still 20 bytes apart and ranked like the MSSs, so `flows_by_size` tells them
    apart the same way."""
    argv = ["iperf3", "-c", addr, "-p", str(port), "-B", source,
            "-b", f"{rate_mbit:g}M", "-t", str(int(seconds))]
    if udp:
        return [*argv, "-u", "-l", str(size)]
    return [*argv, "-M", str(size), "-C", cc]


def _flow_started(node: Any, port: int, udp: bool) -> bool:
    """Control connection up and data flowing: a second established TCP connection, or for
    UDP the client's connected datagram socket (iperf3 connects it once the test starts)."""
    tcp = _established(node, port, "-Htn")
    if udp:
        return tcp >= 1 and _established(node, port, "-Hun") >= 1
    return tcp >= 2


def _established(node: Any, port: int, flags: str = "-Htn") -> int:
    out = node.run(["ss", flags, "state", "established", f"( dport = :{port} )"],
                   check=False).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def _stderr_tail(proc: subprocess.Popen) -> str:
    """What iperf3 said, if it has already exited (e.g. 'the server is busy')."""
    if proc.poll() is None or proc.stderr is None:
        return ""
    err = proc.stderr.read().strip()
    return f" (iperf3: {err[-200:]})" if err else ""


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_SAMPLERS: dict[tuple[int, int], tuple[Env, JointSampler]] = {}


def sample(env: Env, path: str, options: Mapping[str, Any]) -> Result:
    """The forwarding_cost tool's paired mode. options["concurrent_paths"] names the IPv4
    paths measured together (comma-separated); a path of another family is measured with
    the same set's twins of its family (benchmarks.paths). One sampler per environment and
    family, kept while the environment lives."""
    family = path_table.family_of(path)
    names = (p.strip() for p in str(options["concurrent_paths"]).split(",") if p.strip())
    together = tuple(path_table.twin(p, family) for p in names)
    key = (id(env), family)
    held = _SAMPLERS.get(key)
    if held is None or held[0] is not env or held[1].paths != together:
        held = (env, JointSampler(env, together, family))
        _SAMPLERS[key] = held
    return held[1].sample(path, options)
