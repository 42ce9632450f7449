"""Measurement tools: how each tool in `benchmarks/registry.py` takes one sample on one path.

Each tool returns ({metric: value or None}, extra). None marks a failed sample; the reason
goes into extra["error"] and the analysis counts it instead of hiding it. Time metrics
follow the registry's definitions, measured by the real clients:
- connect_time: SYN sent to connect() returned (through a proxy: the tunnel established);
- handshake_time: SYN sent to TLS (ECH) handshake complete;
- ttfb: SYN sent to the first response byte;
- page_load_time: first SYN to the last object's last byte (one page, its sub-resources).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from benchmarks.environment import CLIENT, IPERF_PORT, BenchEnv, socat_forwarder

Values = dict[str, float | None]
Result = tuple[Values, dict[str, Any]]
FORWARD_PORT = 15201


def _family(options: Mapping[str, Any]) -> int:
    return 6 if options.get("family") == "ipv6" else 4


def _echd_sample(env: BenchEnv, bench_path: str, options: Mapping[str, Any], **kwargs) -> dict:
    """One `echd load` connection over `bench_path`; its ground-truth record (or raises)."""
    family = _family(options)
    result = env.load_generator().run(
        sites=[env.sites[0]], count=1, source=env.client_source(family), family=family,
        proxies=env.proxy_endpoints(bench_path), no_ech=not options.get("ech", True),
        resumption=bool(options.get("resume", False)), check=False, timeout=60, **kwargs)
    if not result.records:
        raise RuntimeError((result.stderr.strip().splitlines() or ["no record"])[-1])
    rec = result.records[-1]
    if rec.get("error"):
        raise RuntimeError(rec["error"])
    return rec


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
    """All three connection phases from one connection: cheaper than three samples."""
    size = int(options.get("size_bytes", 1024))
    metrics = ("connect_time", "handshake_time", "ttfb")
    try:
        rec = _echd_sample(env, path, options, path=f"/bytes/{size}")
    except RuntimeError as exc:
        return _failed(metrics, exc)
    if options.get("ech", True) and not rec.get("ech_accepted"):
        return _failed(metrics, RuntimeError("ECH was not accepted"))
    connect = rec["connect_ms"]
    handshake = connect + rec["tls_ms"]
    return ({"connect_time": connect, "handshake_time": handshake,
             "ttfb": handshake + rec["ttfb_ms"]}, _extra(rec))


def page_load(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    objects = int(options.get("objects", 10))
    try:
        rec = _echd_sample(env, path, options, session=True, page_resources=objects)
    except RuntimeError as exc:
        return _failed(("page_load_time",), exc)
    return {"page_load_time": rec["total_ms"] - (rec.get("dns_ms") or 0.0)}, _extra(rec)


_RTT = re.compile(r"time=([0-9.]+) ms")


def icmp_rtt(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    family = _family(options)
    size = int(options.get("size_bytes", 56))
    proc = env.net[CLIENT].run(["ping", f"-{family}", "-n", "-c1", "-W2", "-s", str(size),
                                "-I", env.client_source(family), env.front_door(family)],
                               check=False)
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
    deadline = time.monotonic() + IPERF_BUSY_WAIT_S
    while True:
        cpu0 = env.cpu_seconds()
        data = _iperf_once(env, path, argv, duration)
        data["cpu_seconds"] = env.cpu_seconds() - cpu0
        busy = "busy" in str(data.get("error", ""))
        if not busy or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    if "error" in data:
        raise RuntimeError(data["error"])
    return data


def _iperf_once(env: BenchEnv, path: str, argv: list[str], duration: float) -> dict:
    fwd = socat_forwarder(env, path, FORWARD_PORT)
    try:
        target = ["-c", "127.0.0.1", "-p", str(FORWARD_PORT)] if fwd else \
                 ["-c", env.front_door(4), "-p", str(IPERF_PORT), "-B", env.client_source(4)]
        proc = env.net[CLIENT].run(["iperf3", *target, "-J", "-O", "1", *argv], check=False,
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


def _tcp_argv(options: Mapping[str, Any], duration: float) -> tuple[list[str], str]:
    """-t/-P/-C for a TCP test, and the congestion control it pins."""
    cc = str(options.get("congestion_control", DEFAULT_CONGESTION))
    return ["-t", str(duration), "-P", str(int(options.get("streams", 1))), "-C", cc], cc


def iperf3_tcp(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    duration = float(options.get("duration_s", 3.0))
    argv, cc = _tcp_argv(options, duration)
    if options.get("reverse"):
        argv.append("-R")
    try:
        data = _iperf(env, path, argv, duration)
    except (RuntimeError, ValueError) as exc:
        return _failed(("throughput",), exc)
    end = data["end"]
    return ({"throughput": end["sum_received"]["bits_per_second"] / 1e6},
            {"retransmits": end.get("sum_sent", {}).get("retransmits"), "congestion_control": cc})


def iperf3_udp(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    duration = float(options.get("duration_s", 3.0))
    argv = ["-u", "-t", str(duration), "-b", f"{options.get('rate_mbit', 100.0)}M",
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
    """Whole-machine CPU seconds per Gbit moved through the path (same load on every path,
    so the difference between paths is what the forwarding element costs)."""
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


def conn_rate(env: BenchEnv, path: str, options: Mapping[str, Any]) -> Result:
    """Closed loop: `concurrency` workers open TLS connections back to back; the rate is
    completed connections over the span from the first start to the last finish."""
    family = _family(options)
    concurrency = int(options.get("concurrency", 8))
    per_worker = max(3, int(float(options.get("duration_s", 3.0)) * 4))
    res = env.load_generator().run(
        sites=[env.sites[0]], count=concurrency * per_worker, concurrency=concurrency,
        source=env.client_source(family), family=family, proxies=env.proxy_endpoints(path),
        check=False, timeout=300)
    recs = res.records
    if not recs:
        return _failed(("conn_rate", "conn_fail"), RuntimeError(res.stderr[-200:]))
    ok = [r for r in recs if not r.get("error")]
    start = min(r["ts"] for r in recs)
    end = max(r["ts"] + (r.get("total_ms") or 0) / 1000 for r in recs)
    span = max(end - start, 1e-6)
    return ({"conn_rate": len(ok) / span, "conn_fail": 100.0 * (len(recs) - len(ok)) / len(recs)},
            {"connections": len(recs)})


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
    "conn_rate": conn_rate,
}
