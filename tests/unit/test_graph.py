"""Route computation and path delays of the default topology, without namespaces."""

from __future__ import annotations

import ipaddress

import pytest

from testbed.graph import expected_rtt_ms, path_links
from testbed.scenario import Scenario, with_link_override
from topologies.isp_cdn import build_graph


@pytest.fixture(scope="module")
def graph():
    return build_graph(Scenario(population=3))


def _route_for(node, address):
    ip = ipaddress.ip_address(address)
    best = None
    for prefix, gw, dev, _src in node.routes:
        net = ipaddress.ip_network(prefix)
        if net.version == ip.version and ip in net and (
                best is None or net.prefixlen > best[0].prefixlen):
            best = (net, gw, dev)
    return best


def _connected(node, address):
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_interface(c).network for cs in node.addrs.values() for c in cs)


def _forward(graph, src, address, limit=12):
    """Follow static routes hop by hop from src until a node owns the address."""
    here, hops = src, [src]
    for _ in range(limit):
        node = graph.nodes[here]
        if any(ipaddress.ip_address(address) in ipaddress.ip_interface(c).network
               and ipaddress.ip_interface(c).ip == ipaddress.ip_address(address)
               for cs in node.addrs.values() for c in cs):
            return hops
        route = _route_for(node, address)
        if route is None:
            if _connected(node, address):
                return hops + ["(on-link)"]
            raise AssertionError(f"{here} has no route to {address}")
        gw = route[1]
        nxt = next(n for n, gn in graph.nodes.items()
                   if any(ipaddress.ip_interface(c).ip == ipaddress.ip_address(gw)
                          for cs in gn.addrs.values() for c in cs))
        here = nxt
        hops.append(here)
    raise AssertionError(f"routing loop from {src} to {address}: {hops}")


def test_every_router_reaches_every_service_address(graph):
    plan = graph.plan
    targets = [*plan.front_door(), *plan.dns_server(), *plan.origin(0), *plan.provider(0),
               *plan.provider(1)]
    for name, node in graph.nodes.items():
        if node.router:
            for t in targets:
                assert _forward(graph, name, str(t)), (name, t)


def test_subscribers_reach_the_front_door_through_the_edge(graph):
    fd4, fd6 = graph.plan.front_door()
    for family_target in (fd4, fd6):
        hops = _forward(graph, "acc", str(family_target))
        assert hops[:4] == ["acc", "edge", "core", "cdn"] and hops[-1] == "fd"


def test_return_routes_to_subscribers_and_alias_pools_point_at_the_edge(graph):
    plan = graph.plan
    sub = plan.subscriber(2)
    for address in (sub.v4, sub.v6, plan.alias_pool_v4(1)[0], plan.alias_pool_v6(1)[0],
                    plan.cgn_pool_v4(1)[0]):
        route = _route_for(graph.nodes["core"], str(address))
        assert route is not None, address
        gw = ipaddress.ip_address(route[1])
        assert any(ipaddress.ip_interface(c).ip == gw
                   for cs in graph.nodes["edge"].addrs.values() for c in cs)


def test_leaves_have_default_routes_with_subscriber_sources(graph):
    s1 = graph.nodes["s1"]
    defaults = {r[0]: r for r in s1.routes}
    sub = graph.plan.subscriber(0)
    assert defaults["0.0.0.0/0"][3] == str(sub.v4)
    assert defaults["::/0"][3] == str(sub.v6)
    fd = graph.nodes["fd"]
    assert {r[0] for r in fd.routes} == {"0.0.0.0/0", "::/0"}


def test_population_host_carries_its_subscribers(graph):
    crowd = graph.nodes["crowd"]
    v4 = [a for a in crowd.addrs["crowd-acc"] if ":" not in a]
    assert len(v4) == 3
    acc_routes = {r[0]: r for r in graph.nodes["acc"].routes}
    for i in range(4, 7):
        assert str(graph.plan.subscriber(i).v6_prefix) in acc_routes


def test_no_address_is_assigned_twice(graph):
    seen = {}
    for name, node in graph.nodes.items():
        for cidrs in node.addrs.values():
            for c in cidrs:
                ip = ipaddress.ip_interface(c).ip
                assert ip not in seen, f"{ip} on {name} and {seen.get(ip)}"
                seen[ip] = name


def test_expected_rtt_follows_the_configured_delays(graph):
    assert expected_rtt_ms(graph, "s1", "fd") == pytest.approx(2 * (2 + 10))
    assert expected_rtt_ms(graph, "s1", "p1") == pytest.approx(2 * (2 + 10 + 7.5))
    assert expected_rtt_ms(graph, "fd", "dns") == 0
    assert [lk.link_class for lk, _ in path_links(graph, "s1", "fd")] == \
        ["access", "aggregation", "wan", "cdn", "cdn"]


def test_per_direction_delays_add_up():
    s = with_link_override(Scenario(population=0), "wan", delay_up_ms=30.0, delay_down_ms=1.0)
    g = build_graph(s)
    assert expected_rtt_ms(g, "s1", "fd") == pytest.approx(2 + 2 + 30 + 1)
