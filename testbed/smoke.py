"""Connectivity and delay checks on a running network: every host pair over IPv4 and IPv6,
and round-trip times on the main paths against what the scenario configures."""

from __future__ import annotations

import re
import statistics
import subprocess
from dataclasses import dataclass

from testbed.graph import expected_rtt_ms
from testbed.network import Network

RTT_RE = re.compile(r"time=([0-9.]+) ms")


@dataclass
class PingAllResult:
    family: int
    pairs: int
    failures: list[tuple[str, str]]


def ping_all(net: Network, family: int, hosts: list[str] | None = None) -> PingAllResult:
    """Ping every other host from every host (sources in parallel, targets in sequence)."""
    hosts = hosts or net.hosts()
    targets = {h: net.primary_addresses(h)[0 if family == 4 else 1] for h in hosts}
    procs = {}
    for src in hosts:
        script = "\n".join(
            f"ping -{family} -n -c1 -W3 {targets[dst]} >/dev/null 2>&1 || "
            f"ping -{family} -n -c1 -W3 {targets[dst]} >/dev/null 2>&1 || echo FAIL {dst}"
            for dst in hosts if dst != src
        )
        procs[src] = subprocess.Popen(net[src].command(["sh", "-c", script]),
                                      stdout=subprocess.PIPE, text=True)
    failures = []
    for src, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        failures += [(src, line.split()[1]) for line in out.splitlines()
                     if line.startswith("FAIL")]
    return PingAllResult(family, len(hosts) * (len(hosts) - 1), failures)


def rtt_pairs(net: Network) -> list[tuple[str, str]]:
    """The main paths, from the topology's roles: the client to every front door, DNS server,
    relay provider and off-path CFR host, and the population host to the first front door."""
    roles = net.roles
    client = roles.client
    pairs = [(client, fd) for fd in roles.front_doors]
    pairs += [(client, dns) for dns in roles.dns_servers]
    pairs += [(client, p) for p in (*roles.providers, *roles.cfr_hosts)]
    if roles.population:
        pairs.append((roles.population, roles.front_door))
    return pairs


@dataclass
class RttRow:
    src: str
    dst: str
    family: int
    configured_ms: float
    median_ms: float
    p99_ms: float
    samples: int


def rtt_table(net: Network, pairs: list[tuple[str, str]], count: int = 30,
              interval_s: float = 0.02) -> list[RttRow]:
    jobs = []
    for src, dst in pairs:
        for family in (4, 6):
            addr = net.primary_addresses(dst)[0 if family == 4 else 1]
            argv = net[src].command(["ping", f"-{family}", "-n", "-i", str(interval_s), "-c",
                                     str(count + 3), "-W", "3", addr])
            jobs.append((src, dst, family, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                            text=True)))
    rows = []
    for src, dst, family, proc in jobs:
        out, _ = proc.communicate(timeout=120)
        rtts = sorted(float(x) for x in RTT_RE.findall(out)[3:])
        configured = expected_rtt_ms(net.graph, src, dst)
        if rtts:
            p99 = rtts[min(len(rtts) - 1, int(round(0.99 * (len(rtts) - 1))))]
            rows.append(RttRow(src, dst, family, configured, statistics.median(rtts), p99,
                               len(rtts)))
        else:
            rows.append(RttRow(src, dst, family, configured, float("nan"), float("nan"), 0))
    return rows


def iperf_mbit(net: Network, server: str, client: str, seconds: int = 4) -> float:
    """TCP goodput (Mbit/s) from client to server's primary IPv4 address, one iperf3 run."""
    import json

    from testbed.waiting import wait_until

    addr = net.primary_addresses(server)[0]
    srv = net[server].spawn(["iperf3", "-s", "-1", "-B", addr], label="iperf3-server")
    try:
        wait_until(lambda: net[server].run(["ss", "-Hltn", "sport = :5201"]).stdout.strip(),
                   10, 0.05, f"the iperf3 server on {server} to listen")  # never race its bind
        out = net[client].run(["iperf3", "-c", addr, "-t", str(seconds), "-J", "-O", "1"],
                              timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        srv.stop()
