"""The benchmark environment: one running network with every service a path needs.

Paths are realised on the same network and switched sample by sample, never rebuilt; what
each needs is read from its row of `benchmarks/paths.py`, never from its name:
- its relay `policy`: the relay on the ISP edge switches to it before each sample;
- its `proxy_hops`: that many chained tinyproxy instances (HTTP CONNECT) on the topology's
  relay providers, reached via the detour (one instance per provider listens on every
  address, so IPv4 and IPv6 paths share it; a chain's ingress forwards to the next hop in the
  path's own family);
- its `family`: the client's source and the front door (and iperf3 sinks) of that family.
Every node is named by the topology's roles (`net.roles`), never by a literal name.
ECH goes end to end on every path: the proxies tunnel the TLS and never terminate it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import paths as path_table
from testbed.calibration import EMULATOR_DROP_COUNTERS, QUEUE_DROP_COUNTERS
from testbed.errors import NetworkError
from testbed.network import Network
from testbed.services import dns as dns_service
from testbed.services import ech as ech_service
from testbed.services.proxy import PROXY_PORT, Proxy, start_proxy
from testbed.services.relay import RelayDeployment
from testbed.waiting import wait_until

#: Path -> relay policy, from the path table (kept for the callers that import it here).
POLICY_OF_PATH = {p.name: p.policy for p in path_table.PATH_TABLE}
IPERF_PORT = 5201
#: The iperf3 sink on the topology's transit router (roles.transit), one hop beyond the
#: relay (forwarding_cost).
TRANSIT_IPERF_PORT = 5202
#: Delay-line counters summed into every iperf3 sample's record: frames the emulator itself
#: dropped or lost (overload, socket buffer, send errors) and frames its emulated queue
#: dropped; the one list of each kind is testbed.calibration's.
EMULATOR_COUNTERS = EMULATOR_DROP_COUNTERS + QUEUE_DROP_COUNTERS

def endpoint(address: str, port: int) -> str:
    """host:port, an IPv6 literal in brackets (what echd, socat and tinyproxy parse)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass
class BenchEnv:
    net: Network
    workdir: Path
    ech_mode: str = "shared"
    pool_size: int = 8
    epoch_s: float = 60.0
    resumption: bool = False  # TLS session tickets at the front door (linkability runs)
    named_sites: tuple[str, ...] = ()  # sites beyond site-NNNN.example (the trait's sites)
    cert_group: int = 0  # names per shared certificate at the front door (coalescing)
    relay: RelayDeployment | None = None
    cdn: ech_service.CdnDeployment | None = None
    dns: dns_service.DnsServer | None = None
    #: every tinyproxy instance started, by a name saying where it runs and forwards to
    proxies: dict[str, Proxy] = field(default_factory=dict)
    #: proxied path -> the endpoint its client connects to (the chain's first hop)
    proxy_entries: dict[str, str] = field(default_factory=dict)
    #: iperf3 sinks on the front door and on the transit router, per address family
    iperf_servers: dict[int, object] = field(default_factory=dict)
    transit_servers: dict[int, object] = field(default_factory=dict)
    ca_file: Path | None = None
    sites: list[str] = field(default_factory=list)
    switch_seconds: list[float] = field(default_factory=list)

    # -- set-up -------------------------------------------------------------------------
    def start(self, paths: Sequence[str]) -> BenchEnv:
        """Start DNS, the CDN (front door, origin in split mode), the proxies the proxied
        paths need, the relay, and an iperf3 sink per address family measured."""
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
            named_sites=self.named_sites, cert_group=self.cert_group,
            workdir=self.workdir / "cdn",
        ).start()
        self.sites = dns_service.site_names(self.cdn.sites, self.named_sites)
        zone = dns_service.ZoneData(names=["cdn.example", *self.sites],
                                    ech_config_list=self.cdn.front.ech_config_list(),
                                    ipv4=[str(fd4)], ipv6=[str(fd6)])
        self.dns = dns_service.DnsServer(self.net[roles.dns], zone, listen_v4=[str(dns4)],
                                         listen_v6=[str(dns6)], workdir=self.workdir / "dns")
        self.dns.start()
        self._start_proxies(paths)
        self.relay = RelayDeployment(self.net, self.workdir / "relay", pool_size=self.pool_size,
                                     epoch_s=self.epoch_s)
        self.relay.workdir.mkdir(parents=True, exist_ok=True)
        policies = sorted({path_table.policy_of(p) for p in paths} | {"route"})
        self.relay.apply("route")
        self.relay.prepare_switching(policies)
        for family in sorted({path_table.family_of(p) for p in paths} | {4}):
            fd_addr = self.front_door(family)
            suffix = "" if family == 4 else "-v6"
            self.iperf_servers[family] = self.net[roles.front_door].spawn(
                ["iperf3", "-s", "-B", fd_addr, "-p", str(IPERF_PORT)], label=f"iperf3{suffix}",
                log=self.workdir / f"iperf3-server{suffix}.log")
            self._wait_port(roles.front_door, IPERF_PORT, address=fd_addr)
        return self

    def _start_proxies(self, paths: Sequence[str]) -> None:
        """The tinyproxy instances the proxied paths need: a path with h hops runs on the
        first h relay providers, each hop forwarding to the next. An instance listens on every
        address, so an IPv4 path and its IPv6 twin share it: the client connects to it in the
        path's family and the last hop dials the front door in the address the client's
        CONNECT names. The hop between two proxies of a chain runs over IPv4 for both
        families: tinyproxy 1.11 rejects an IPv6 literal in `Upstream` (syntax error) and the
        testbed's names do not resolve through the host's resolver tinyproxy uses."""
        proxied = [path_table.get(p) for p in paths if path_table.is_proxied(p)]
        if not proxied:
            return
        roles = self.net.roles
        hops_needed = max(p.proxy_hops for p in proxied)
        if len(roles.providers) < hops_needed:
            raise NetworkError(f"the proxied paths {', '.join(p.name for p in proxied)} need "
                               f"{hops_needed} relay providers; this topology has "
                               f"{list(roles.providers)}")
        prefix = self.net.registry.prefix
        ports: dict[int, int] = {}  # provider index -> next free port there
        for path in sorted(proxied, key=lambda p: (p.proxy_hops, p.family)):
            upstream: str | None = None  # the next hop, IPv4 (see above)
            entry = ""
            for hop in reversed(range(path.proxy_hops)):
                provider = roles.providers[hop]
                v4, v6 = self.net.primary_addresses(provider)
                key = f"{provider}->{upstream or 'origin'}"
                if key not in self.proxies:
                    port = ports.get(hop, PROXY_PORT)
                    ports[hop] = port + 1
                    self.proxies[key] = start_proxy(self.net[provider], v4, self.workdir,
                                                    prefix, upstream=upstream, port=port)
                port = self.proxies[key].port
                address = v4 if path.family == 4 else v6
                if address is None or v4 is None:
                    raise NetworkError(f"relay provider {provider} has no IPv{path.family} "
                                       f"address for path {path.name}")
                upstream, entry = endpoint(v4, port), endpoint(address, port)
            self.proxy_entries[path.name] = entry

    def _wait_port(self, node: str, port: int, timeout: float = 10,
                   address: str | None = None) -> None:
        """Wait until something in `node` listens on TCP `port` (on `address` if given)."""
        def listening() -> bool:
            out = self.net[node].run(["ss", "-Hltn", f"sport = :{port}"]).stdout
            return any(address is None or endpoint(address, port) in line
                       for line in out.splitlines() if line.strip())

        wait_until(listening, timeout, 0.05,
                   f"a listener on {node}:{port}" + (f" at {address}" if address else ""))

    def relay_interfaces(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The relay node's interfaces towards the subscribers and towards the Internet."""
        roles = self.net.roles
        return tuple(roles.relay_access), tuple(roles.relay_upstream)

    def transit_target(self, family: int = 4) -> str:
        """Address (of `family`) of an iperf3 sink on the transit router right behind the
        relay (started on first use). Why there: the segment relay -> transit carries no
        delay line, so a load to it crosses the relay and no emulator (see
        benchmarks.forwarding_cost)."""
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
        if family == 4:
            addr = str(link.addrs.b4 if link.b == transit else link.addrs.a4)
        else:
            addr = str(link.addrs.b6 if link.b == transit else link.addrs.a6)
        if family not in self.transit_servers:
            suffix = "" if family == 4 else "-v6"
            self.transit_servers[family] = self.net[transit].spawn(
                ["iperf3", "-s", "-B", addr, "-p", str(TRANSIT_IPERF_PORT)],
                label=f"iperf3-transit{suffix}", log=self.workdir / f"iperf3-transit{suffix}.log")
            self._wait_port(transit, TRANSIT_IPERF_PORT, address=addr)
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
        for proc in (*self.iperf_servers.values(), *self.transit_servers.values()):
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
        seconds = self.relay.switch(path_table.policy_of(path))
        if seconds:
            self.switch_seconds.append(seconds)

    def proxy_endpoints(self, path: str) -> list[str]:
        """The proxy the client of `path` connects to (none for an on-path path)."""
        return [self.proxy_entries[path]] if path_table.is_proxied(path) else []

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
    """A local TCP forwarder on the client through the path's proxy (for iperf3 over CONNECT),
    to the front door in the path's family."""
    if not path_table.is_proxied(path):
        return None
    host, port = env.proxy_entries[path].rsplit(":", 1)
    target = endpoint(env.front_door(path_table.family_of(path)), IPERF_PORT)
    client = env.net.roles.client
    proc = env.net[client].spawn(
        ["socat", f"TCP-LISTEN:{listen_port},bind=127.0.0.1,reuseaddr,fork",
         f"PROXY:{host}:{target},proxyport={port}"],
        label="socat", log=env.workdir / "socat.log")
    env._wait_port(client, listen_port)
    return proc
