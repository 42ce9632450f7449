"""Default scenario: subscribers behind an access router, an ISP edge (where the relay runs),
a transit core with WAN delay, a CDN PoP (ECH front door, origins, DNS) and off-path relay
providers reachable only through a detour.

    s1..sN ─┐ access (2 ms)
    crowd  ─┴─ acc ── edge ══ WAN (10 ms) ══ core ── cdn ─┬─ fd    (front door)
                                              │            ├─ o1..  (origins)
                                              │            └─ dns
                                              ├─ detour ─ p1  (relay provider)
                                              └─ detour ─ p2

`crowd` is the population host: one namespace carrying many subscribers' addresses, so
load generators can act for hundreds of subscribers without hundreds of namespaces.

Runs under cfrbench, and under Mininet directly:
    .venv/bin/python /usr/bin/mn --custom topologies/isp_cdn.py --topo isp_cdn \\
        --controller none --test pingall
"""

from __future__ import annotations

import sys
from pathlib import Path

if not globals().get("__package__"):  # loaded by `mn --custom` as a plain file
    try:
        _here = Path(__file__).resolve().parent
    except NameError:  # mn exec()s the file without __file__; find it on its command line
        _here = next((Path(a).resolve().parent for a in sys.argv[1:]
                      if a.endswith("isp_cdn.py")), Path.cwd() / "topologies")
    sys.path.insert(0, str(_here.parent))

from mininet.topo import Topo  # noqa: E402

from testbed.addressing import AddressPlan  # noqa: E402
from testbed.delayline import DirectionSpec  # noqa: E402
from testbed.graph import NetworkGraph  # noqa: E402
from testbed.links import LinkSpec, choose_mechanism  # noqa: E402
from testbed.scenario import Scenario, with_link_override  # noqa: E402

ACCESS_BRIDGE = "acc-br0"


def link_spec(scenario: Scenario, link_class: str) -> LinkSpec:
    params = scenario.links[link_class]
    return LinkSpec(up=DirectionSpec(**params.direction(True)),
                    down=DirectionSpec(**params.direction(False)))


def subscriber_host_names(scenario: Scenario) -> list[str]:
    return [f"s{i + 1}" for i in range(scenario.subscribers)]


def build_graph(scenario: Scenario) -> NetworkGraph:
    """The default ISP-to-CDN network as a graph with addresses and routes."""
    plan = AddressPlan(scenario.address_blocks or None) if scenario.address_blocks \
        else AddressPlan()
    g = NetworkGraph(plan)
    access = link_spec(scenario, "access")

    # Access: subscriber hosts and the population host on one L2 segment bridged in `acc`.
    acc = g.add_node("acc", "access-router", router=True)
    acc.bridge = {"name": ACCESS_BRIDGE, "ports": []}
    acc.addrs[ACCESS_BRIDGE] = [f"{plan.access_gateway_v4}/{plan.access_prefixlen_v4}",
                                f"{plan.access_gateway_v6}/64"]
    seg_gw6 = str(plan.access_gateway_v6)
    hosts = subscriber_host_names(scenario)
    subs = plan.subscribers(len(hosts) + scenario.population)
    for name, sub in zip(hosts, subs, strict=False):
        node = g.add_node(name, "subscriber")
        _attach_subscriber(g, node, [sub], plan, seg_gw6)
        g.add_link(name, "acc", "access", access, side=None)
        acc.bridge["ports"].append(f"acc-{name}")
    if scenario.population:
        crowd = g.add_node("crowd", "population")
        _attach_subscriber(g, crowd, subs[len(hosts):], plan, seg_gw6)
        g.add_link("crowd", "acc", "access", access, side=None)
        acc.bridge["ports"].append("acc-crowd")
    for name in ("subscribers_v4", "subscribers_v6", "access_segment_v6"):
        g.own("acc", plan.nets[name])

    # ISP edge: the relay's node. Alias pools and translated prefixes live behind it.
    g.add_node("edge", "isp-edge", router=True)
    g.add_link("acc", "edge", "aggregation", link_spec(scenario, "aggregation"), side="access")
    for name in ("alias_pool_v4", "alias_pool_v6", "cgn_pool_v4", "nptv6_v6"):
        g.own("edge", plan.nets[name])

    # Transit and the CDN PoP.
    g.add_node("core", "transit", router=True)
    g.add_link("edge", "core", "wan", link_spec(scenario, "wan"))
    g.add_node("cdn", "cdn-router", router=True)
    g.add_link("core", "cdn", "cdn", link_spec(scenario, "cdn"))
    lan = LinkSpec()
    g.add_node("fd", "frontdoor")
    g.add_link("cdn", "fd", "cdn", lan)
    g.add_service_address("fd", *plan.front_door())
    for i in range(scenario.origins):
        name = f"o{i + 1}"
        g.add_node(name, "origin")
        g.add_link("cdn", name, "cdn", lan)
        g.add_service_address(name, *plan.origin(i))
    g.add_node("dns", "dns")
    g.add_link("cdn", "dns", "cdn", lan)
    g.add_service_address("dns", *plan.dns_server())

    # Off-path relay providers, each a leaf behind a detour link from the core.
    detour = link_spec(scenario, "detour")
    for i in range(scenario.providers):
        name = f"p{i + 1}"
        g.add_node(name, "relay-provider")
        g.add_link("core", name, "detour", detour)
        g.add_service_address(name, *plan.provider(i))

    g.compute_routes()
    return g


def _attach_subscriber(g: NetworkGraph, node, subs, plan: AddressPlan, seg_gw6: str) -> None:
    """Addresses and routes of a host carrying one or more subscribers on the access segment."""
    intf = f"{node.name}-acc"
    plen = plan.access_prefixlen_v4
    node.addrs[intf] = [f"{s.v4}/{plen}" for s in subs] + [f"{subs[0].v6_segment}/64"]
    node.addrs[intf] += [f"{s.v6}/64" for s in subs]
    node.routes.append(("0.0.0.0/0", str(plan.access_gateway_v4), None, str(subs[0].v4)))
    node.routes.append(("::/0", seg_gw6, None, str(subs[0].v6)))
    acc = g.nodes["acc"]
    for s in subs:  # each delegated /56 is routed to the host's one segment address
        acc.routes.append((str(s.v6_prefix), str(subs[0].v6_segment), ACCESS_BRIDGE, None))


class IspCdnTopo(Topo):
    """Mininet Topo of the default scenario (see module docstring)."""

    def build(self, scenario: Scenario | None = None, mechanism: str = "auto",  # type: ignore[override]
              workdir: str | None = None, subscribers: int | None = None,
              population: int | None = None, wan_ms: float | None = None,
              access_ms: float | None = None) -> None:
        scenario = scenario or Scenario()
        # Keyword overrides for `mn --topo isp_cdn,subscribers=2,wan_ms=20`.
        from dataclasses import replace

        if subscribers is not None:
            scenario = replace(scenario, subscribers=int(subscribers))
        if population is not None:
            scenario = replace(scenario, population=int(population))
        if wan_ms is not None:
            scenario = with_link_override(scenario, "wan", delay_ms=float(wan_ms))
        if access_ms is not None:
            scenario = with_link_override(scenario, "access", delay_ms=float(access_ms))
        scenario.validate()
        self.scenario = scenario
        self.mechanism = mechanism if mechanism != "auto" else choose_mechanism("auto")
        self.graph = build_graph(scenario)
        self.graph.emit(self, self.mechanism, seed=scenario.seed, workdir=workdir)


topos = {"isp_cdn": IspCdnTopo}
