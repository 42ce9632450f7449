"""The fixed vocabulary of the benchmark suite: tools, the metrics each tool yields, their
units and which direction is better; the paths are re-exported from their one table,
`benchmarks/paths.py`.

One table, shared by the definition loader (to reject typos), the analysis (to decide which
test a metric gets) and the regression gate (to know whether bigger is worse). Adding a tool
means adding it here and teaching the runner to drive it; nothing else hard-codes these names.
Which paths a tool cannot run over is a property of the path (`BenchPath.cannot_carry`):
`ToolSpec.unsupported_paths` is derived from that table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from benchmarks import paths as _paths

Better = Literal["lower", "higher"]
#: Metric classes. `latency` metrics get the TOST equivalence test ("no added delay"); the others
#: are compared by ratio. `loss` is compared by difference (percentage points) in the gate,
#: because a ratio of near-zero loss rates is meaningless.
Kind = Literal["latency", "throughput", "loss", "jitter", "cpu", "rate"]

#: The path every other path is compared with: plain routing, no relay (its IPv4 name; an
#: IPv6 path's baseline is its twin, benchmarks.paths.baseline_for).
BASELINE_PATH = _paths.BASELINE

#: Path name -> description, in table order (re-exported from benchmarks/paths.py).
PATHS: dict[str, str] = {p.name: p.description for p in _paths.PATH_TABLE}

UNITS: dict[str, str] = {
    "ms": "milliseconds",
    "Mbit/s": "megabits per second (10^6 bit/s)",
    "percent": "percent (0-100)",
    "conn/s": "new connections per second",
    "cpu_s_per_gbit": "CPU seconds spent per gigabit forwarded",
    "ns/packet": "nanoseconds of the relay node's own kernel work per forwarded packet",
}

PROFILES: tuple[str, ...] = ("quick", "full", "tiny")


@dataclass(frozen=True)
class MetricSpec:
    """One metric a tool yields: its unit, its class and which direction is better."""

    name: str
    unit: str
    kind: Kind
    better: Better
    description: str


@dataclass(frozen=True)
class OptionSpec:
    """One option a tool accepts in a definition, with its type and allowed range."""

    type: type
    description: str
    minimum: float | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A measurement tool the runner knows how to drive."""

    name: str
    description: str
    metrics: tuple[MetricSpec, ...]
    options: dict[str, OptionSpec] = field(default_factory=dict)
    #: Paths the tool cannot run over (e.g. ICMP or UDP through a CONNECT proxy); filled in
    #: from the path table (benchmarks.paths, `cannot_carry`).
    unsupported_paths: tuple[str, ...] = ()


def _ms(name: str, description: str, kind: Kind = "latency") -> MetricSpec:
    return MetricSpec(name, "ms", kind, "lower", description)


_ECH = OptionSpec(bool, "offer Encrypted Client Hello (true) or a plain ClientHello")
_DURATION = OptionSpec(float, "seconds per sample", minimum=0.1)
_STREAMS = OptionSpec(int, "parallel streams", minimum=1)
#: iperf3 -C: pinned, because namespaces inherit the host's default, and BBR without the fq
#: qdisc (absent from some kernels) paces from per-socket timers and settles at a different
#: rate in every run. The proxies' own sockets keep the default (see provenance).
_CONGESTION = OptionSpec(str, "TCP congestion control of iperf3's sockets (default cubic)",
                         choices=("cubic", "reno", "bbr"))

TOOLS: dict[str, ToolSpec] = {
    t.name: t
    for t in (
        ToolSpec(
            "tcp_connect",
            "TCP three-way handshake to the front door, client side",
            (_ms("connect_time", "SYN sent to connect() returned"),),
            {"port": OptionSpec(int, "destination port", minimum=1)},
        ),
        ToolSpec(
            "tls_handshake",
            "TCP connect plus TLS 1.3 handshake (ECH) with the front door",
            (_ms("handshake_time", "SYN sent to TLS handshake complete"),),
            {"ech": _ECH, "resume": OptionSpec(bool, "session resumption")},
        ),
        ToolSpec(
            "ttfb",
            "one HTTPS GET over a new connection: time to first response byte",
            (_ms("ttfb", "SYN sent to first response body byte"),),
            {
                "ech": _ECH,
                "size_bytes": OptionSpec(int, "response body size", minimum=0),
            },
        ),
        ToolSpec(
            "https_request",
            "one HTTPS GET over a new connection, timing every phase of that one connection",
            (
                _ms("connect_time", "SYN sent to connect() returned"),
                _ms("handshake_time", "SYN sent to TLS handshake complete"),
                _ms("ttfb", "SYN sent to first response body byte"),
            ),
            {
                "ech": _ECH,
                "size_bytes": OptionSpec(int, "response body size", minimum=0),
                "connections_per_sample": OptionSpec(
                    int, "sequential connections per sample; their median is the sample",
                    minimum=1),
            },
        ),
        ToolSpec(
            "page_load",
            "a page: one document then N objects over a few connections",
            (_ms("page_load_time", "first SYN to last object byte"),),
            {
                "ech": _ECH,
                "objects": OptionSpec(int, "objects after the document", minimum=0),
                "object_size_bytes": OptionSpec(int, "size of each object", minimum=0),
                "connections": OptionSpec(int, "parallel connections", minimum=1),
            },
        ),
        ToolSpec(
            "icmp_rtt",
            "ICMP echo round-trip time to the front door",
            (_ms("rtt", "echo request to echo reply"),),
            {
                "size_bytes": OptionSpec(int, "payload size", minimum=0),
                "interval_ms": OptionSpec(float, "gap between echoes", minimum=1),
            },
        ),
        ToolSpec(
            "iperf3_tcp",
            "iperf3 TCP bulk transfer",
            (MetricSpec("throughput", "Mbit/s", "throughput", "higher", "receiver goodput"),),
            {
                "streams": _STREAMS,
                "duration_s": _DURATION,
                "reverse": OptionSpec(bool, "server sends (download)"),
                "congestion_control": _CONGESTION,
            },
        ),
        ToolSpec(
            "iperf3_udp",
            "iperf3 UDP at a fixed offered rate",
            (
                MetricSpec("throughput", "Mbit/s", "throughput", "higher", "receiver goodput"),
                MetricSpec("loss", "percent", "loss", "lower", "datagrams lost"),
                _ms("jitter", "RFC 3550 interarrival jitter", kind="jitter"),
            ),
            {
                "rate_mbit": OptionSpec(float, "offered rate", minimum=0.001),
                "size_bytes": OptionSpec(int, "datagram payload", minimum=16),
                "streams": _STREAMS,
                "duration_s": _DURATION,
            },
        ),
        ToolSpec(
            "relay_cpu",
            "whole-machine CPU time per Gbit under bulk load (hosts and delay lines included; "
            "the relay's own cost is forwarding_cost)",
            (
                MetricSpec(
                    "cpu_per_gbit", "cpu_s_per_gbit", "cpu", "lower",
                    "whole-machine CPU seconds per Gbit"
                ),
            ),
            {
                "streams": _STREAMS,
                "duration_s": _DURATION,
                "rate_mbit": OptionSpec(float, "offered rate (0: unlimited)", minimum=0),
                "congestion_control": _CONGESTION,
            },
        ),
        ToolSpec(
            "forwarding_cost",
            "the relay node's own per-packet forwarding time (kernel tracepoints on its two "
            "interfaces) under bulk TCP to the transit router",
            (
                MetricSpec("forwarding_cost", "ns/packet", "cpu", "lower",
                           "relay node's kernel time per forwarded packet (per Gbit: "
                           "extra.cpu_s_per_gbit)"),
            ),
            {
                "streams": _STREAMS,
                "duration_s": _DURATION,
                "congestion_control": _CONGESTION,
                "rate_mbit": OptionSpec(float, "pace the load (iperf3 -b); 0 = line rate",
                                        minimum=0),
                "concurrent_paths": OptionSpec(
                    str, "comma-separated paths measured together, one flow each, rulesets "
                    "rotated within one capture (benchmarks/forwarding_joint.py); empty: one "
                    "path per capture"),
            },
        ),
        ToolSpec(
            "conn_rate",
            "new-connection rate: closed-loop clients opening TLS connections",
            (
                MetricSpec("conn_rate", "conn/s", "rate", "higher", "completed connections/s"),
                MetricSpec("conn_fail", "percent", "loss", "lower", "failed connection attempts"),
            ),
            {
                "duration_s": _DURATION,
                "concurrency": OptionSpec(int, "parallel clients", minimum=1),
                "tls": OptionSpec(bool, "complete a TLS handshake (true) or TCP only"),
            },
        ),
    )
}
TOOLS = {name: replace(t, unsupported_paths=_paths.not_carrying(name))
         for name, t in TOOLS.items()}

#: Every metric name -> spec. Metric names are unique across tools except where two tools
#: measure the same quantity (throughput), which then has the same unit and direction.
METRICS: dict[str, MetricSpec] = {}
for _tool in TOOLS.values():
    for _m in _tool.metrics:
        METRICS.setdefault(_m.name, _m)


def metric_spec(name: str, unit: str | None = None) -> MetricSpec:
    """The spec of a metric; an unknown metric falls back to a guess from its unit so that a
    record written by a newer runner can still be summarised (never gated on direction)."""
    if name in METRICS:
        return METRICS[name]
    unit = unit or "ms"
    if unit == "ms":
        return MetricSpec(name, unit, "latency", "lower", "unregistered metric")
    if unit in ("Mbit/s", "conn/s"):
        kind: Kind = "throughput" if unit == "Mbit/s" else "rate"
        return MetricSpec(name, unit, kind, "higher", "unregistered metric")
    if unit == "percent":
        return MetricSpec(name, unit, "loss", "lower", "unregistered metric")
    return MetricSpec(name, unit, "cpu", "lower", "unregistered metric")
