"""Per policy and per family, the far side sees exactly the source the policy promises."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from tests.integration.relay_fixtures import chi_square_uniform_p, lab, relay  # noqa: F401

pytestmark = pytest.mark.integration
FAMILIES = ["v4", "v6"]


def _dst(lab, fam: str) -> str:  # noqa: F811
    return lab.plan.fd_v4 if fam == "v4" else lab.plan.fd_v6


def _sub(lab, role: str, fam: str) -> str:  # noqa: F811
    return getattr(lab.plan, f"{role}_{fam}")


@pytest.mark.parametrize("fam", FAMILIES)
def test_route_far_side_sees_subscriber(relay, lab, fam):  # noqa: F811
    relay.apply("route")
    peers = relay.probe("sub1", _dst(lab, fam), 5)
    assert {p[0] for p in peers} == {_sub(lab, "sub1", fam)}
    assert all(p[1] == p[2] for p in peers), "route must not touch ports"


@pytest.mark.parametrize("fam", FAMILIES)
def test_cgn_one_stable_alias_per_subscriber(relay, lab, fam):  # noqa: F811
    relay.apply("cgn")
    pool = {str(a) for a in ipaddress.ip_network(lab.plan.pool_v4)}
    for role in ("sub1", "sub2"):
        peers = relay.probe(role, _dst(lab, fam), 20)
        if fam == "v6":  # CGN leaves IPv6 routed, as deployed CGNs do
            assert {p[0] for p in peers} == {_sub(lab, role, fam)}
            continue
        aliases = {p[0] for p in peers}
        assert len(aliases) == 1 and aliases <= pool, peers
        preserved = sum(1 for p in peers if p[1] == p[2])
        assert preserved >= 18, f"port preservation expected, got {preserved}/20: {peers}"
    # paired pooling survives a re-apply and a restart-equivalent: same alias again
    before = relay.probe("sub1", _dst(lab, fam), 1)[0][0]
    relay.apply("cgn")
    assert relay.probe("sub1", _dst(lab, fam), 1)[0][0] == before


def test_nptv6_maps_prefix_one_to_one(relay, lab):  # noqa: F811
    relay.apply("nptv6")
    peers = relay.probe("sub1", lab.plan.fd_v6, 10)
    # 2001:db8:1000:100::2 -> 2001:2:0:a100::2: the /56 is swapped, the rest is kept
    assert {p[0] for p in peers} == {"2001:2:0:a100::2"}
    peers2 = relay.probe("sub2", lab.plan.fd_v6, 3)
    assert {p[0] for p in peers2} == {"2001:2:0:a200::2"}
    # IPv4 under nptv6 defaults to CGN
    v4 = relay.probe("sub1", lab.plan.fd_v4, 5)
    assert len({p[0] for p in v4}) == 1
    assert ipaddress.ip_address(v4[0][0]) in ipaddress.ip_network(lab.plan.pool_v4)


@pytest.mark.parametrize("fam", FAMILIES)
def test_cfr_flow_spreads_uniformly_over_pool(relay, lab, fam):  # noqa: F811
    relay.apply("cfr-flow")
    st = relay.status(flows=False)
    pool = st["pool"][fam]
    assert len(pool) == 16
    n = 240
    peers = relay.probe("sub1", _dst(lab, fam), n)
    seen = Counter(p[0] for p in peers)
    assert set(seen) <= set(pool), f"alias outside the pool: {set(seen) - set(pool)}"
    counts = [seen.get(a, 0) for a in pool]
    p = chi_square_uniform_p(counts)
    assert p > 0.001, f"aliases not uniform over the pool (p={p:.2g}): {counts}"
    # fully random ports: practically never the subscriber's own port
    same_port = sum(1 for q in peers if q[1] == q[2])
    assert same_port <= 3, f"{same_port}/{n} flows kept their source port"
    if fam == "v6":  # no alias reveals the subscriber's /56
        assert not any(a.startswith("2001:db8:1000:") for a in seen)


@pytest.mark.parametrize("fam", FAMILIES)
def test_cfr_epoch_constant_within_epoch_changes_across(relay, lab, fam):  # noqa: F811
    relay.apply("cfr-epoch")
    per_epoch = []
    for i in range(4):
        if i:
            relay.rotate()
        st = relay.status(flows=False)
        a1 = {p[0] for p in relay.probe("sub1", _dst(lab, fam), 8)}
        a2 = {p[0] for p in relay.probe("sub2", _dst(lab, fam), 8)}
        assert len(a1) == 1 and len(a2) == 1, (a1, a2)
        assert a1 <= set(st["pool"][fam]) and a2 <= set(st["pool"][fam])
        per_epoch.append((st["epoch"], a1.pop(), a2.pop()))
    epochs = [e for e, _, _ in per_epoch]
    assert epochs == sorted(set(epochs)) and len(epochs) == 4
    sub1_aliases = [a for _, a, _ in per_epoch]
    if fam == "v6":  # fresh IPv6 aliases every epoch
        assert len(set(sub1_aliases)) == 4, sub1_aliases
    else:  # 16 aliases: the chance of no change over 3 rotations is 1/4096
        assert len(set(sub1_aliases)) > 1, sub1_aliases
