"""Measurement tools: how each tool in `benchmarks/registry.py` takes one sample on one path.

Each tool returns ({metric: value or None}, extra). None marks a failed sample; the reason
goes into extra["error"] and the analysis counts it instead of hiding it. Time metrics
follow the registry's definitions, measured by the real clients:
- connect_time: SYN sent to connect() returned (through a proxy: the tunnel established);
- handshake_time: SYN sent to TLS (ECH) handshake complete;
- ttfb: SYN sent to the first response byte;
- page_load_time: first SYN to the last object's last byte (one page, its sub-resources).

Throughput has two regimes (see definitions/throughput.toml): the subscriber rate through a
shaped access line (iperf3_tcp; every sample also records what the delay lines dropped, so
a rate set by the emulator rather than by the emulated link is visible), and the relay
node's own forwarding cost (forwarding_cost, benchmarks/forwarding_cost.py).

The address family of every sample is its path's (`benchmarks/paths.py`): an IPv6 path's
client binds its IPv6 source and targets the front door's (or the transit sink's) IPv6
address; no tool names a path.

Over 400 lines on purpose: one small driver function per tool of the registry's table, the
runner's single dispatch point; each is 10-40 lines.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmarks import forwarding_cost as fwd
from benchmarks import forwarding_joint
from benchmarks import paths as path_table
from benchmarks.environment import (
    IPERF_PORT,
    TRANSIT_IPERF_PORT,
    BenchEnv,
    socat_forwarder,
)
from testbed.calibration import EMULATOR_DROP_COUNTERS
from testbed.services.ech import LoadResult
from testbed.services.ech import read_jsonl as _read_jsonl
from testbed.waiting import WaitTimeout, wait_until

Values = dict[str, float | None]
Result = tuple[Values, dict[str, Any]]
FORWARD_PORT = 15201

#: The CPU the client tools (`echd load` with GOMAXPROCS=1, ping, iperf3 clients) are pinned
#: to, or None: not pinned (the default). Why not pinned: an A/B on the 2-core machine
#: (load 2.5-4, 50 paired blocks direct vs cfr-flow, handshake) showed no lower spread from
#: pinning (IQR of the paired differences 0.94 vs 0.99 ms with one connection per sample,
#: 0.62 vs 0.80 with five; an earlier 30-block A/B had it the other way round), and a pinned
#: client waits whenever a delay line or the relay's softirq is busy on that core. Set it
#: (e.g. "1") to pin; the records do not change.
CLIENT_CPU: str | None = None

#: Connections per `https_request` sample unless a definition says otherwise
#: (`connections_per_sample`); the sample is their median. Why 1: starting `echd load` costs
#: ~0.06 s here (not the ~0.2 s once assumed), a connection ~0.07 s, so k = 5 makes a sample
#: 3.4x dearer while narrowing the paired differences' IQR only 1.2-1.5x (the noise is largely
#: shared by the connections of one invocation): per minute of measurement k = 1 gave the
#: most power (IQR^-2 per second: 8.0-8.5 for k = 1, 5.7 for k = 3, 3.6-5.9 for k = 5).
CONNECTIONS_PER_SAMPLE = 1


def _pinned(argv: Sequence[str], *, go: bool = False) -> list[str]:
    """`argv` run on CLIENT_CPU only (a Go program with one scheduler thread); unchanged
    when CLIENT_CPU is None."""
    if CLIENT_CPU is None:
        return list(argv)
    prefix = ["taskset", "-c", CLIENT_CPU]
    if go:
        prefix += ["env", "GOMAXPROCS=1"]
    return [*prefix, *argv]


def _run_load(env: BenchEnv, *, timeout: float, **kwargs: Any) -> LoadResult:
    """`echd load` on the client (pinned if CLIENT_CPU says so); its ground-truth records."""
    gen = env.load_generator()
    argv, out = gen.argv(**kwargs)
    proc = gen.node.run(_pinned(argv, go=True), check=False, timeout=timeout)
    records = _read_jsonl(out) if out.exists() else []
    return LoadResult(records, {}, proc.returncode, proc.stderr, argv)


def _family(path: str) -> int:
    """The address family a sample over `path` uses: the path's (benchmarks.paths)."""
    return path_table.family_of(path)


def _echd_records(env: BenchEnv, bench_path: str, options: Mapping[str, Any], count: int = 1,
                  **kwargs) -> list[dict]:
    """`count` sequential `echd load` connections over `bench_path` in one invocation; their
    ground-truth records (raises on any failed one: a sample is all or nothing)."""
    family = _family(bench_path)
    result = _run_load(
        env, sites=[env.sites[0]], count=count, source=env.client_source(family),
        family=family, proxies=env.proxy_endpoints(bench_path),
        no_ech=not options.get("ech", True), resumption=bool(options.get("resume", False)),
        timeout=60 + 10 * count, **kwargs)
    if len(result.records) < count:
        raise RuntimeError((result.stderr.strip().splitlines() or ["no record"])[-1])
    for rec in result.records:
        if rec.get("error"):
            raise RuntimeError(rec["error"])
    return result.records


def _echd_sample(env: BenchEnv, bench_path: str, options: Mapping[str, Any], **kwargs) -> dict:
    """One `echd load` connection over `bench_path`; its ground-truth record (or raises)."""
    return _echd_records(env, bench_path, options, **kwargs)[-1]


def _extra(rec: dict) -> dict[str, Any]:
    return {"ech_accepted": rec.get("ech_accepted"), "local_port": rec.get("local_port")}


def _failed(metrics: tuple[str, ...], exc: Exception) -> Result:
    return {m: None for m in metrics}, {"error": str(exc)[:300]}


def tcp_connect(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    try:
        rec = _echd_sample(env, path, options)
    except RuntimeError as exc:
        return _failed(("connect_time",), exc)
    return {"connect_time": rec["connect_ms"]}, _extra(rec)


def tls_handshake(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    try:
        rec = _echd_sample(env, path, options)
    except RuntimeError as exc:
        return _failed(("handshake_time",), exc)
    if options.get("ech", True) and not rec.get("ech_accepted"):
        return _failed(("handshake_time",), RuntimeError("ECH was not accepted"))
    return {"handshake_time": rec["connect_ms"] + rec["tls_ms"]}, _extra(rec)


def ttfb(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    size = int(options.get("size_bytes", 1024))
    try:
        rec = _echd_sample(env, path, options, path=f"/bytes/{size}")
    except RuntimeError as exc:
        return _failed(("ttfb",), exc)
    return {"ttfb": rec["connect_ms"] + rec["tls_ms"] + rec["ttfb_ms"]}, _extra(rec)


def https_request(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    """All three connection phases, each the median over k sequential new connections
    (`connections_per_sample`, default CONNECTIONS_PER_SAMPLE) from one client invocation:
    three metrics per connection, and k connections per client start-up."""
    size = int(options.get("size_bytes", 1024))
    k = max(1, int(options.get("connections_per_sample", CONNECTIONS_PER_SAMPLE)))
    metrics = ("connect_time", "handshake_time", "ttfb")
    try:
        recs = _echd_records(env, path, options, count=k, path=f"/bytes/{size}")
    except RuntimeError as exc:
        return _failed(metrics, exc)
    if options.get("ech", True) and not all(r.get("ech_accepted") for r in recs):
        return _failed(metrics, RuntimeError("ECH was not accepted"))
    connect = [r["connect_ms"] for r in recs]
    handshake = [c + r["tls_ms"] for c, r in zip(connect, recs, strict=True)]
    first_byte = [h + r["ttfb_ms"] for h, r in zip(handshake, recs, strict=True)]
    extra = _extra(recs[-1])
    extra["connections"] = len(recs)
    extra["handshake_ms_each"] = [round(h, 4) for h in handshake]
    return ({"connect_time": median_of(connect), "handshake_time": median_of(handshake),
             "ttfb": median_of(first_byte)}, extra)


def median_of(values: Sequence[float]) -> float:
    """Sample median (the mean of the middle two for an even count)."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def page_load(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    objects = int(options.get("objects", 10))
    try:
        rec = _echd_sample(env, path, options, session=True, page_resources=objects)
    except RuntimeError as exc:
        return _failed(("page_load_time",), exc)
    return {"page_load_time": rec["total_ms"] - (rec.get("dns_ms") or 0.0)}, _extra(rec)


_RTT = re.compile(r"time=([0-9.]+) ms")


def icmp_rtt(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    family = _family(path)
    size = int(options.get("size_bytes", 56))
    proc = env.net[env.net.roles.client].run(
        _pinned(["ping", f"-{family}", "-n", "-c1", "-W2", "-s", str(size),
                 "-I", env.client_source(family), env.front_door(family)]), check=False)
    match = _RTT.search(proc.stdout)
    if not match:
        return _failed(("rtt",), RuntimeError("no echo reply"))
    return {"rtt": float(match.group(1))}, {}


#: How long a sample waits for the iperf3 server to finish the previous test. A test
#: through a proxy on a long detour ends on the client before the server has torn it down
#: (the control connection closes through the CONNECT tunnel, a few detour RTTs later);
#: iperf3 serves one test at a time and refuses the next one as "busy" meanwhile.
IPERF_BUSY_WAIT_S = 15.0


def _iperf(env: BenchEnv, path: str, argv: list[str], duration: float) -> dict:
    """One iperf3 test; the JSON report gains `cpu_seconds`, the machine's CPU time during
    the attempt that ran (not during waits for a busy server)."""
    last: dict = {}

    def attempt() -> bool:
        """One iperf3 run; True unless the server refused it as busy."""
        cpu0 = env.cpu_seconds()
        last.clear()
        last.update(_iperf_once(env, path, argv, duration))
        last["cpu_seconds"] = env.cpu_seconds() - cpu0
        return "busy" not in str(last.get("error", ""))

    # Still busy at the deadline: the last attempt's "busy" error is raised below.
    with contextlib.suppress(WaitTimeout):
        wait_until(attempt, IPERF_BUSY_WAIT_S, 0.25, "the iperf3 server to be free")
    data = last
    if "error" in data:
        raise RuntimeError(data["error"])
    return data


def _iperf_once(env: BenchEnv, path: str, argv: list[str], duration: float) -> dict:
    fwd = socat_forwarder(env, path, FORWARD_PORT)
    family = _family(path)
    try:
        target = ["-c", "127.0.0.1", "-p", str(FORWARD_PORT)] if fwd else \
                 ["-c", env.front_door(family), "-p", str(IPERF_PORT),
                  "-B", env.client_source(family)]
        proc = env.net[env.net.roles.client].run(
            _pinned(["iperf3", *target, "-J", "-O", "1", *argv]), check=False,
            timeout=duration + 30)
    finally:
        if fwd is not None:
            fwd.stop()
    data = json.loads(proc.stdout or "{}")
    if "error" not in data and proc.returncode != 0:
        data["error"] = proc.stderr.strip()[-200:] or f"iperf3 exit status {proc.returncode}"
    return data


#: TCP congestion control of iperf3's sockets unless a definition says otherwise (registry
#: option `congestion_control`); recorded with every sample.
DEFAULT_CONGESTION = "cubic"


def iperf_seconds(duration: float) -> str:
    """iperf3's -t: whole seconds, rounded up, at least 1.

    Why: iperf3 reads -t with atoi, so "1.5" runs 1 s and "0.5" runs 0 s, which iperf3 takes
    as *unlimited* (a sample that never ends)."""
    return str(max(1, math.ceil(duration - 1e-9)))


def _tcp_argv(options: Mapping[str, Any], duration: float) -> tuple[list[str], str]:
    """-t/-P/-C for a TCP test, and the congestion control it pins."""
    cc = str(options.get("congestion_control", DEFAULT_CONGESTION))
    return ["-t", iperf_seconds(duration), "-P", str(int(options.get("streams", 1))),
            "-C", cc], cc


def iperf3_tcp(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    """Receiver goodput; extra: retransmits, and the delay lines' own drops during the sample
    (`emulator_drops`: overload + socket buffer, the emulator's failure; `queue_drops`: the
    emulated bottleneck queue, a property of the emulated link)."""
    duration = float(options.get("duration_s", 3.0))
    argv, cc = _tcp_argv(options, duration)
    if options.get("reverse"):
        argv.append("-R")
    before = env.emulator_counters()
    try:
        data = _iperf(env, path, argv, duration)
    except (RuntimeError, ValueError) as exc:
        return _failed(("throughput",), exc)
    end = data["end"]
    extra: dict[str, Any] = {"retransmits": end.get("sum_sent", {}).get("retransmits"),
                             "congestion_control": cc}
    extra.update(_emulator_delta(before, env.emulator_counters()))
    return {"throughput": end["sum_received"]["bits_per_second"] / 1e6}, extra


def _emulator_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Delay-line drops between two counter snapshots (empty when the network has none)."""
    if not after:
        return {}
    delta = {k: after[k] - before.get(k, 0) for k in after}
    return {"emulator_drops": sum(delta.get(k, 0) for k in EMULATOR_DROP_COUNTERS),
            "queue_drops": delta.get("dropped_queue", 0)}


def iperf3_udp(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    duration = float(options.get("duration_s", 3.0))
    argv = ["-u", "-t", iperf_seconds(duration), "-b", f"{options.get('rate_mbit', 100.0)}M",
            "-l", str(int(options.get("size_bytes", 1200))),
            "-P", str(int(options.get("streams", 1)))]
    try:
        data = _iperf(env, path, argv, duration)
    except (RuntimeError, ValueError) as exc:
        return _failed(("throughput", "loss", "jitter"), exc)
    s = data["end"]["sum"]
    return {"throughput": s["bits_per_second"] / 1e6, "loss": s["lost_percent"],
            "jitter": s["jitter_ms"]}, {}


def relay_cpu(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    """Whole-machine CPU seconds per Gbit moved through the path: every host, router and delay
    line included, so it is report-only (capacity.toml); the relay node's own cost is
    `forwarding_cost`."""
    duration = float(options.get("duration_s", 3.0))
    argv, cc = _tcp_argv(options, duration)
    rate = float(options.get("rate_mbit", 0.0))
    if rate > 0:
        argv += ["-b", f"{rate}M"]
    try:
        data = _iperf(env, path, argv, duration)
    except (RuntimeError, ValueError) as exc:
        return _failed(("cpu_per_gbit",), exc)
    cpu = data["cpu_seconds"]
    gbit = data["end"]["sum_received"]["bytes"] * 8 / 1e9
    if gbit <= 0:
        return _failed(("cpu_per_gbit",), RuntimeError("nothing transferred"))
    return {"cpu_per_gbit": cpu / gbit}, {"cpu_s": cpu, "gbit": gbit, "congestion_control": cc}


#: Attempts per forwarding_cost sample when the capture, not the relay, failed: perf lost
#: events (its writer starved; 1-2 samples in 6 of a tiny run even at load < 1) or foreign
#: packets were traced. The failure says nothing about the relay, so the sample is taken
#: again rather than failing the run; every attempt's problem is kept in the record.
FORWARDING_ATTEMPTS = 3


def forwarding_cost(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    """The relay node's own forwarding time per packet (per Gbit in extra), under a bulk TCP
    load from the subscriber to a sink on the transit router (relay crossed, no delay line
    crossed); see benchmarks/forwarding_cost.py for why and how."""
    metrics = ("forwarding_cost",)
    if not path_table.carries(path, "forwarding_cost"):
        return _failed(metrics, RuntimeError(f"path {path} does not cross the relay"))
    if options.get("concurrent_paths"):
        # The paired method (benchmarks/forwarding_joint.py): one capture per block carries
        # every listed path's flow and ruleset, interleaved.
        return forwarding_joint.sample(env, path, options)
    problems: list[str] = []
    for _ in range(FORWARDING_ATTEMPTS):
        values, extra = _forwarding_cost_once(env, options, _family(path))
        problem = extra.pop("capture_problem", None)
        if problem is None:
            break
        problems.append(problem)
    extra["attempts"] = len(problems) + (problem is None)  # failed ones + the good one
    if problems:
        extra["capture_problems"] = problems
    if problem is not None:
        extra["error"] = problem
    return values, extra


def _forwarding_cost_once(env: BenchEnv, options: Mapping[str, Any], family: int = 4) -> Result:
    """One capture; a capture failure (not a relay failure) is returned as
    extra["capture_problem"] with null values, for `forwarding_cost` to retry."""
    metrics = ("forwarding_cost",)
    duration = float(options.get("duration_s", 2.0))
    argv, cc = _tcp_argv(options, duration)
    rate = float(options.get("rate_mbit", 0.0))
    if rate > 0:
        # Paced below the line: perf's writer shares the two cores with the load, and at the
        # full 1 Gbit/s (~250,000 events/s) it starved and lost events in 2 of 72 samples
        # three times running on a quiet machine.
        argv += ["-b", f"{rate:g}M"]
    target = env.transit_target(family)
    load = env.net[env.net.roles.client].command(
        _pinned(["iperf3", "-c", target, "-p", str(TRANSIT_IPERF_PORT),
                 "-B", env.client_source(family), "-J", *argv]))
    ingress, egress = env.relay_interfaces()
    try:
        proc, packets = fwd.capture(load, ingress, egress, env.workdir / "forwarding",
                                    timeout=duration + 30)
        data = json.loads(proc.stdout or "{}")
    except (subprocess.TimeoutExpired, ValueError) as exc:
        return _failed(metrics, RuntimeError(f"forwarding_cost load: {exc}"))
    if "error" in data or proc.returncode != 0:
        return _failed(metrics, RuntimeError(data.get("error") or proc.stderr.strip()[-200:]))
    values, extra = fwd.estimate(packets)
    extra["throughput_mbit"] = data["end"]["sum_received"]["bits_per_second"] / 1e6
    extra["congestion_control"] = cc
    sent = float(data["end"].get("sum_sent", {}).get("bytes") or 0)
    extra["traced_over_sent"] = round(packets.up_bytes / sent, 4) if sent else None
    if values["forwarding_cost"] is None:
        extra["error"] = "no packet was forwarded through the relay's interfaces"
        return values, extra
    problem = fwd.coverage_problem(packets.up_bytes, sent)
    if problem is not None:
        # Too few bytes: perf lost events. Too many: the tracepoints filter on interface
        # names, and another network's node of the same name forwarded meanwhile.
        extra["capture_problem"] = problem
        return {m: None for m in metrics}, extra
    return values, extra


def conn_rate(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    """Closed loop: `concurrency` workers open TLS connections back to back (about
    4 x duration_s each); the rate is the steady state, see `closed_loop_rate`."""
    family = _family(path)
    concurrency = int(options.get("concurrency", 8))
    per_worker = max(3, int(float(options.get("duration_s", 3.0)) * 4))
    res = env.load_generator().run(
        sites=[env.sites[0]], count=concurrency * per_worker, concurrency=concurrency,
        source=env.client_source(family), family=family, proxies=env.proxy_endpoints(path),
        check=False, timeout=300)  # not pinned: its workers should use every core
    recs = res.records
    if not recs:
        return _failed(("conn_rate", "conn_fail"), RuntimeError(res.stderr[-200:]))
    ok = [r for r in recs if not r.get("error")]
    spans = [(r["ts"], r["ts"] + (r.get("total_ms") or 0) / 1000, not r.get("error"))
             for r in recs]
    rate, window = closed_loop_rate(spans, concurrency)
    whole = closed_loop_rate(spans, len(spans) + 1)[0]  # no window: first start -> last finish
    return ({"conn_rate": rate, "conn_fail": 100.0 * (len(recs) - len(ok)) / len(recs)},
            {"connections": len(recs), "window_s": round(window, 4),
             "rate_first_to_last": round(whole, 3)})


def closed_loop_rate(spans: Sequence[tuple[float, float, bool]],
                     concurrency: int) -> tuple[float, float]:
    """Completed connections per second while every worker was busy, and that window (s).

    `spans` holds (start, finish, succeeded) per connection. The window runs from the first
    start to the last start: until then a finishing worker starts its next connection at
    once, so all `concurrency` workers are busy; afterwards they drain one by one, and how
    long the slowest straggler takes (one slow handshake) would otherwise set the rate of
    the whole sample. With too few connections for a window (fewer than two per worker) it
    falls back to first start -> last finish (the rate the tool reported before, kept in
    each record's extra as `rate_first_to_last` for comparison)."""
    if not spans:
        return 0.0, 0.0
    first = min(s for s, _, _ in spans)
    last_start = max(s for s, _, _ in spans)
    if len(spans) >= 2 * concurrency and last_start > first:
        done = sum(1 for _, f, ok in spans if ok and f <= last_start)
        return done / (last_start - first), last_start - first
    span = max(max(f for _, f, _ in spans) - first, 1e-6)
    return sum(1 for *_, ok in spans if ok) / span, span


TOOLS: dict[str, Callable[[BenchEnv, str, Mapping[str, Any]], Result]] = {
    "tcp_connect": tcp_connect,
    "tls_handshake": tls_handshake,
    "ttfb": ttfb,
    "https_request": https_request,
    "page_load": page_load,
    "icmp_rtt": icmp_rtt,
    "iperf3_tcp": iperf3_tcp,
    "iperf3_udp": iperf3_udp,
    "relay_cpu": relay_cpu,
    "forwarding_cost": forwarding_cost,
    "conn_rate": conn_rate,
}
