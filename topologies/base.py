"""The base every topology file builds on: describe a graph and its roles, get a Mininet Topo.

A topology subclasses `GraphTopo` and implements `describe(scenario)`, returning the
`NetworkGraph` (nodes, links, who owns which prefix; addresses and routes are computed by
`testbed.graph` from `testbed.addressing`) and the `Roles` that say which node does what.
The base does the rest: `mn --custom` keyword overrides, validation, and emission into
Mininet. The building blocks below (the access segment, a CDN point of presence, provider
leaves) are shared by the built-in topologies so each file only says how they are wired.
"""

from __future__ import annotations

from dataclasses import replace

from mininet.topo import Topo

from testbed.addressing import AddressPlan
from testbed.delayline import DirectionSpec
from testbed.graph import GraphNode, NetworkGraph, intf_name
from testbed.links import LinkSpec, choose_mechanism
from testbed.roles import PointOfPresence, Roles
from testbed.scenario import LINK_CLASSES, Scenario, with_link_override

ACCESS_BRIDGE = "acc-br0"


class GraphTopo(Topo):
    """A Mininet Topo described as a graph with roles. Subclasses implement `describe`."""

    graph: NetworkGraph
    roles: Roles
    scenario: Scenario
    mechanism: str

    def describe(self, scenario: Scenario) -> tuple[NetworkGraph, Roles]:
        raise NotImplementedError(f"{type(self).__name__} must implement describe(scenario)")

    def build(self, scenario: Scenario | None = None, mechanism: str = "auto",  # type: ignore[override]
              workdir: str | None = None, subscribers: int | None = None,
              population: int | None = None, wan_ms: float | None = None,
              access_ms: float | None = None) -> None:
        scenario = scenario or Scenario()
        # Keyword overrides for `mn --topo isp_cdn,subscribers=2,wan_ms=20`.
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
        graph, roles = self.describe(scenario)
        self.graph = graph
        self.roles = roles.check(set(graph.nodes), set(LINK_CLASSES))
        graph.emit(self, self.mechanism, seed=scenario.seed, workdir=workdir)


# -- building blocks ----------------------------------------------------------------------------
def plan_of(scenario: Scenario) -> AddressPlan:
    return AddressPlan(scenario.address_blocks) if scenario.address_blocks else AddressPlan()


def link_spec(scenario: Scenario, link_class: str) -> LinkSpec:
    params = scenario.links[link_class]
    return LinkSpec(up=DirectionSpec(**params.direction(True)),
                    down=DirectionSpec(**params.direction(False)))


def subscriber_host_names(scenario: Scenario) -> list[str]:
    return [f"s{i + 1}" for i in range(scenario.subscribers)]


def add_access(g: NetworkGraph, scenario: Scenario, router: str = "acc",
               population_host: str = "crowd") -> tuple[list[str], str | None, dict[str, str]]:
    """Subscriber hosts and the population host on one L2 segment bridged in `router`.

    Returns (subscriber host names, population host or None, host -> access interface).
    The caller links `router` towards the relay node."""
    plan = g.plan
    access = link_spec(scenario, "access")
    acc = g.add_node(router, "access-router", router=True)
    acc.bridge = {"name": ACCESS_BRIDGE, "ports": []}
    acc.addrs[ACCESS_BRIDGE] = [f"{plan.access_gateway_v4}/{plan.access_prefixlen_v4}",
                                f"{plan.access_gateway_v6}/64"]
    hosts = subscriber_host_names(scenario)
    subs = plan.subscribers(len(hosts) + scenario.population)
    interfaces: dict[str, str] = {}
    for name, sub in zip(hosts, subs, strict=False):
        node = g.add_node(name, "subscriber")
        interfaces[name] = _attach_subscriber(g, node, [sub], router)
        g.add_link(name, router, "access", access, side=None)
        acc.bridge["ports"].append(intf_name(router, name))
    population = None
    if scenario.population:
        population = population_host
        crowd = g.add_node(population, "population")
        interfaces[population] = _attach_subscriber(g, crowd, subs[len(hosts):], router)
        g.add_link(population, router, "access", access, side=None)
        acc.bridge["ports"].append(intf_name(router, population))
    for name in ("subscribers_v4", "subscribers_v6", "access_segment_v6"):
        g.own(router, plan.nets[name])
    return hosts, population, interfaces


def _attach_subscriber(g: NetworkGraph, node: GraphNode, subs, router: str) -> str:
    """Addresses and routes of a host carrying one or more subscribers on the access segment."""
    plan = g.plan
    intf = intf_name(node.name, router)
    plen = plan.access_prefixlen_v4
    seg_gw6 = str(plan.access_gateway_v6)
    node.addrs[intf] = [f"{s.v4}/{plen}" for s in subs] + [f"{subs[0].v6_segment}/64"]
    node.addrs[intf] += [f"{s.v6}/64" for s in subs]
    node.routes.append(("0.0.0.0/0", str(plan.access_gateway_v4), None, str(subs[0].v4)))
    node.routes.append(("::/0", seg_gw6, None, str(subs[0].v6)))
    acc = g.nodes[router]
    for s in subs:  # each delegated /56 is routed to the host's one segment address
        acc.routes.append((str(s.v6_prefix), str(subs[0].v6_segment), ACCESS_BRIDGE, None))
    return intf


def add_relay_edge(g: NetworkGraph, scenario: Scenario, access_router: str,
                   name: str = "edge") -> str:
    """The ISP edge on the access path, where the relay runs; alias pools live behind it."""
    g.add_node(name, "isp-edge", router=True)
    g.add_link(access_router, name, "aggregation", link_spec(scenario, "aggregation"),
               side="access")
    for block in ("alias_pool_v4", "alias_pool_v6", "cgn_pool_v4", "nptv6_v6"):
        g.own(name, g.plan.nets[block])
    return name


def add_pop(g: NetworkGraph, scenario: Scenario, upstream: str, link_class: str,
            router: str, suffix: str = "", origin_prefix: str = "o",
            plan_index: int = 0) -> PointOfPresence:
    """A CDN point of presence behind `upstream`: router, front door, origins and DNS, with
    service addresses from the plan's PoP block `plan_index`."""
    plan = g.plan
    g.add_node(router, "cdn-router", router=True)
    g.add_link(upstream, router, link_class, link_spec(scenario, link_class))
    lan = LinkSpec()
    fd, dns = f"fd{suffix}", f"dns{suffix}"
    g.add_node(fd, "frontdoor")
    g.add_link(router, fd, "cdn", lan)
    g.add_service_address(fd, *plan.front_door(plan_index))
    origins = []
    for i in range(scenario.origins):
        name = f"{origin_prefix}{i + 1}"
        g.add_node(name, "origin")
        g.add_link(router, name, "cdn", lan)
        g.add_service_address(name, *plan.origin(i, plan_index))
        origins.append(name)
    g.add_node(dns, "dns")
    g.add_link(router, dns, "cdn", lan)
    g.add_service_address(dns, *plan.dns_server(plan_index))
    return PointOfPresence(name=router, router=router, front_door=fd, dns=dns,
                           origins=tuple(origins), front_door_interface=intf_name(fd, router),
                           plan_index=plan_index)


def add_providers(g: NetworkGraph, scenario: Scenario, upstream: str) -> list[str]:
    """Off-path relay providers, each a leaf behind a detour link from `upstream`."""
    detour = link_spec(scenario, "detour")
    names = []
    for i in range(scenario.providers):
        name = f"p{i + 1}"
        g.add_node(name, "relay-provider")
        g.add_link(upstream, name, "detour", detour)
        g.add_service_address(name, *g.plan.provider(i))
        names.append(name)
    return names


def used_link_classes(g: NetworkGraph) -> tuple[str, ...]:
    return tuple(c for c in LINK_CLASSES if any(lk.link_class == c for lk in g.links))
