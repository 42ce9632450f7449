"""The benchmark environment: one running network with every service a path needs.

Paths are realised on the same network and switched sample by sample, never rebuilt:
- `direct`: the relay's `route` policy;
- `cfr-flow`, `cfr-epoch`, `cgn`: the relay on the ISP edge with that policy;
- `proxy`: tinyproxy (HTTP CONNECT) on the topology's first relay provider, reached via the
  detour;
- `proxy-chain`: tinyproxy there forwarding to tinyproxy on the second provider (two
  off-path hops).
Every node is named by the topology's roles (`net.roles`), never by a literal name.
ECH goes end to end on every path: the proxies tunnel the TLS and never terminate it.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed.calibration import EMULATOR_DROP_COUNTERS, QUEUE_DROP_COUNTERS
from testbed.errors import NetworkError
from testbed.network import Network
from testbed.services import dns as dns_service
from testbed.services import ech as ech_service
from testbed.services.proxy import PROXY_PORT, Proxy, start_proxy
from testbed.services.relay import RelayDeployment

POLICY_OF_PATH = {
    "direct": "route",
    "cfr-flow": "cfr-flow",
    "cfr-epoch": "cfr-epoch",
    "cgn": "cgn",
    "proxy": "route",
    "proxy-chain": "route",
}
IPERF_PORT = 5201
#: The iperf3 sink on the topology's transit router (roles.transit), one hop beyond the
#: relay (forwarding_cost).
TRANSIT_IPERF_PORT = 5202
#: Delay-line counters summed into every iperf3 sample's record: frames the emulator itself
#: dropped or lost (overload, socket buffer, send errors) and frames its emulated queue
#: dropped; the one list of each kind is testbed.calibration's.
EMULATOR_COUNTERS = EMULATOR_DROP_COUNTERS + QUEUE_DROP_COUNTERS
CHAIN_PORT = PROXY_PORT + 1  # the ingress instance on p1 that forwards to p2


@dataclass
class BenchEnv:
    net: Network
    workdir: Path
    ech_mode: str = "shared"
    pool_size: int = 8
    epoch_s: float = 60.0
    resumption: bool = False  # TLS session tickets at the front door (linkability runs)
    named_sites: tuple[str, ...] = ()  # sites beyond site-NNNN.example (the trait's sites)
    relay: RelayDeployment | None = None
    cdn: ech_service.CdnDeployment | None = None
    dns: dns_service.DnsServer | None = None
    proxies: dict[str, Proxy] = field(default_factory=dict)
    iperf_server: object | None = None
    transit_server: object | None = None
    ca_file: Path | None = None
    sites: list[str] = field(default_factory=list)
    switch_seconds: list[float] = field(default_factory=list)

    # -- set-up -------------------------------------------------------------------------
    def start(self, paths: list[str]) -> BenchEnv:
        """Start DNS, the CDN (front door, origin in split mode), proxies and the relay."""
        plan = self.net.graph.plan
        roles = self.net.roles
        fd4, fd6 = plan.front_door()
        dns4, dns6 = plan.dns_server()
        ca_dir = self.workdir / "ca"
        key_dir = self.workdir / "ech-keys"
        ech_service.make_ca(ca_dir)
        ech_service.generate_ech_keys(key_dir)
        self.ca_file = ca_dir / "ca.pem"
        self.cdn = ech_service.CdnDeployment(
            front_node=self.net[roles.front_door], ca_dir=ca_dir, key_dir=key_dir,
            mode=self.ech_mode, origin_node=self.net[roles.origins[0]], origin_listen="[::]:8443",
            origin_connect=f"{plan.origin(0)[0]}:8443", resumption=self.resumption,
            named_sites=self.named_sites,
            workdir=self.workdir / "cdn",
        ).start()
        self.sites = dns_service.site_names(self.cdn.sites, self.named_sites)
        zone = dns_service.ZoneData(names=["cdn.example", *self.sites],
                                    ech_config_list=self.cdn.front.ech_config_list(),
                                    ipv4=[str(fd4)], ipv6=[str(fd6)])
        self.dns = dns_service.DnsServer(self.net[roles.dns], zone, listen_v4=[str(dns4)],
                                         listen_v6=[str(dns6)], workdir=self.workdir / "dns")
        self.dns.start()
        if "proxy" in paths or "proxy-chain" in paths:
            if len(roles.providers) < (2 if "proxy-chain" in paths else 1):
                raise NetworkError("the proxy paths need relay providers (two for "
                                   f"proxy-chain); this topology has {roles.providers}")
            first = roles.providers[0]
            p1 = self.net.primary_addresses(first)[0]
            prefix = self.net.registry.prefix
            self.proxies["proxy"] = start_proxy(self.net[first], p1, self.workdir, prefix)
            if "proxy-chain" in paths:
                second = roles.providers[1]
                p2 = self.net.primary_addresses(second)[0]
                egress = start_proxy(self.net[second], p2, self.workdir, prefix)
                self.proxies["egress"] = egress
                self.proxies["proxy-chain"] = start_proxy(
                    self.net[first], p1, self.workdir, prefix, upstream=egress.endpoint,
                    port=CHAIN_PORT)
        self.relay = RelayDeployment(self.net, self.workdir / "relay", pool_size=self.pool_size,
                                     epoch_s=self.epoch_s)
        self.relay.workdir.mkdir(parents=True, exist_ok=True)
        policies = sorted({POLICY_OF_PATH[p] for p in paths} | {"route"})
        self.relay.apply("route")
        self.relay.prepare_switching(policies)
        fd_addr = str(fd4)
        self.iperf_server = self.net[roles.front_door].spawn(
            ["iperf3", "-s", "-B", fd_addr, "-p", str(IPERF_PORT)], label="iperf3",
            log=self.workdir / "iperf3-server.log")
        self._wait_port(roles.front_door, IPERF_PORT)
        return self

    def _wait_port(self, node: str, port: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.net[node].run(["ss", "-Hltn", f"sport = :{port}"]).stdout.strip():
                return
            time.sleep(0.05)
        raise NetworkError(f"nothing listens on {node}:{port}")

    def relay_interfaces(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The relay node's interfaces towards the subscribers and towards the Internet."""
        roles = self.net.roles
        return tuple(roles.relay_access), tuple(roles.relay_upstream)

    def transit_target(self) -> str:
        """Address of an iperf3 sink on the transit router right behind the relay (started on
        first use). Why there: the segment relay -> transit carries no delay line, so a load
        to it crosses the relay and no emulator (see benchmarks.forwarding_cost)."""
        relay, transit = self.net.roles.relay, self.net.roles.transit
        link = next((lk for lk in self.net.graph.links if {lk.a, lk.b} == {relay, transit}),
                    None)
        if link is None or link.addrs is None:
            raise NetworkError(f"no addressed link between {relay} and {transit} in this "
                               "topology")
        if link.spec.needs_delay():
            raise NetworkError(f"the {relay}-{transit} link has delay configured: a load to "
                               f"{transit} would cross a delay line; put the delay on another "
                               "link class (e.g. cdn) for forwarding_cost")
        addr = str(link.addrs.b4 if link.b == transit else link.addrs.a4)
        if self.transit_server is None:
            self.transit_server = self.net[transit].spawn(
                ["iperf3", "-s", "-B", addr, "-p", str(TRANSIT_IPERF_PORT)],
                label="iperf3-transit", log=self.workdir / "iperf3-transit.log")
            self._wait_port(transit, TRANSIT_IPERF_PORT)
        return addr

    def emulator_counters(self) -> dict[str, int]:
        """Sum of EMULATOR_COUNTERS over every delay line of the network (empty without)."""
        total: dict[str, int] = {}
        mn = getattr(self.net, "mn", None)
        for node in getattr(mn, "switches", []):
            if not hasattr(node, "stats"):
                continue
            stats = node.stats()
            for direction in ("a2b", "b2a"):
                for name in EMULATOR_COUNTERS:
                    total[name] = total.get(name, 0) + int(stats.get(direction, {}).get(name, 0))
        return total

    def stop(self) -> None:
        for proc in (self.iperf_server, self.transit_server):
            if proc is not None:
                proc.stop()
        for proxy in self.proxies.values():
            proxy.stop()
        if self.cdn:
            self.cdn.stop()
        if self.dns:
            self.dns.stop()
        if self.relay:
            self.relay.teardown()

    # -- per sample ---------------------------------------------------------------------
    def select(self, path: str) -> None:
        """Make `path` the active one: switch the relay policy if it differs."""
        assert self.relay is not None
        seconds = self.relay.switch(POLICY_OF_PATH[path])
        if seconds:
            self.switch_seconds.append(seconds)

    def proxy_endpoints(self, path: str) -> list[str]:
        return [self.proxies[path].endpoint] if path in ("proxy", "proxy-chain") else []

    def client_source(self, family: int) -> str:
        sub = self.net.graph.plan.subscriber(0)
        return str(sub.v4 if family == 4 else sub.v6)

    def front_door(self, family: int) -> str:
        fd4, fd6 = self.net.graph.plan.front_door()
        return str(fd4 if family == 4 else fd6)

    def load_generator(self) -> ech_service.LoadGenerator:
        assert self.dns is not None and self.ca_file is not None
        return ech_service.LoadGenerator(self.net[self.net.roles.client], dns=self.dns.address,
                                         ca_file=self.ca_file, workdir=self.workdir / "load")

    def cpu_seconds(self) -> float:
        """Whole-machine busy CPU time (all cores), from /proc/stat."""
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
        ticks = [int(x) for x in fields]
        busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
        return busy / _clock_ticks()


def _clock_ticks() -> int:
    import os

    return os.sysconf("SC_CLK_TCK")


def socat_forwarder(env: BenchEnv, path: str, listen_port: int) -> subprocess.Popen | None:
    """A local TCP forwarder on the client through the path's proxy (for iperf3 over CONNECT)."""
    if path not in ("proxy", "proxy-chain"):
        return None
    proxy = env.proxies[path]
    host, port = proxy.endpoint.rsplit(":", 1)
    target = env.front_door(4)
    client = env.net.roles.client
    proc = env.net[client].spawn(
        ["socat", f"TCP-LISTEN:{listen_port},bind=127.0.0.1,reuseaddr,fork",
         f"PROXY:{host}:{target}:{IPERF_PORT},proxyport={port}"],
        label="socat", log=env.workdir / "socat.log")
    env._wait_port(client, listen_port)
    return proc
