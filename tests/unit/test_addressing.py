"""Address plan: deterministic allocation, bounds and overlap checks."""

from __future__ import annotations

import ipaddress

import pytest

from testbed.addressing import ALLOWED_V4, ALLOWED_V6, AddressPlan
from testbed.errors import ParameterError, UsageError


def _allowed(addr) -> bool:
    ip = ipaddress.ip_address(addr)
    nets = ALLOWED_V4 if ip.version == 4 else ALLOWED_V6
    return any(ip in n for n in nets)


def test_subscribers_are_deterministic_and_distinct():
    plan = AddressPlan()
    first = plan.subscribers(500)
    again = AddressPlan().subscribers(500)
    assert first == again
    assert len({s.v4 for s in first}) == 500
    assert len({s.v6_prefix for s in first}) == 500
    assert all(s.v6_prefix.prefixlen == 56 for s in first)
    assert all(s.v6 in s.v6_prefix for s in first)
    assert str(first[0].v4) == "198.18.0.16"
    assert str(first[1].v6_prefix) == "2001:db8:1000:100::/56"


def test_every_allocation_is_inside_the_allowed_ranges():
    plan = AddressPlan()
    subs = plan.subscribers(50)
    addrs = [a for s in subs for a in (s.v4, s.v6, s.v6_segment)]
    for i in range(20):
        link = plan.link(i, "access" if i % 2 else "internet", v6_index=i)
        addrs += [link.a4, link.b4, link.a6, link.b6]
    addrs += [*plan.front_door(), *plan.dns_server(), *plan.origin(0), *plan.provider(1)]
    addrs += plan.alias_pool_v4(16) + plan.alias_pool_v6(16) + plan.cgn_pool_v4(4)
    assert all(_allowed(a) for a in addrs)
    assert len(addrs) == len(set(addrs))


def test_links_are_point_to_point_and_unique():
    plan = AddressPlan()
    nets4 = {plan.link(i, "internet").v4_net for i in range(100)}
    nets6 = {plan.link(0, "access", v6_index=i).v6_net for i in range(100)}
    assert len(nets4) == 100 and all(n.prefixlen == 30 for n in nets4)
    assert len(nets6) == 100 and all(n.prefixlen == 64 for n in nets6)


def test_capacity_limits_name_the_parameter():
    plan = AddressPlan()
    with pytest.raises(ParameterError, match="subscribers"):
        plan.subscribers(plan.max_subscribers + 1)
    with pytest.raises(ParameterError, match="alias pool size"):
        plan.alias_pool_v4(0)
    with pytest.raises(ParameterError, match="link index"):
        plan.link(10**6, "internet")


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ({"subscribers_v4": "10.0.0.0/17"}, "outside the allowed ranges"),
        ({"subscribers_v4": "100.64.0.0/17"}, "outside the allowed ranges"),
        ({"cdn_v6": "2001:4860::/48"}, "outside the allowed ranges"),
        ({"cdn_v4": "198.18.0.0/24"}, "overlap"),
        ({"alias_pool_v6": "2001:db8:1000::/52"}, "overlap"),
        ({"cdn_v4": "2001:db8:cd00::/48"}, "must be IPv4"),
        ({"cdn_v4": "198.19.0.1/24"}, "not a valid network"),
        ({"nosuch_v4": "198.19.200.0/24"}, "unknown address block"),
        ({"nptv6_v6": "2001:db8:2000::/44"}, "same length"),
    ],
)
def test_bad_plans_are_rejected_clearly(blocks, message):
    with pytest.raises(UsageError, match=message):
        AddressPlan(blocks)


def test_override_moves_allocations():
    plan = AddressPlan({"cdn_v4": "198.19.200.0/24", "cdn_v6": "2001:db8:cd99::/48"})
    assert str(plan.front_door()[0]) == "198.19.200.10"
    assert str(plan.front_door()[1]) == "2001:db8:cd99::a"
