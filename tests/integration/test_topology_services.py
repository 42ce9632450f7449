"""The real services on the default topology: ECH through the ISP path in both front-door
modes, each relay policy as the front door sees it, and the off-path proxy paths."""

from __future__ import annotations

import contextlib
import ipaddress
from collections import Counter
from dataclasses import replace

import pytest

from benchmarks.environment import BenchEnv
from testbed.network import Network
from testbed.scenario import Scenario
from testbed.waiting import WaitTimeout, wait_until
from tests.conftest import require_root
from topologies import load_topology

ALL_PATHS = ["direct", "cfr-flow", "cfr-epoch", "cgn", "proxy", "proxy-chain"]


@pytest.fixture(scope="module", params=["shared", "split"])
def env(request):
    require_root()
    scenario = replace(Scenario(), population=10, ech_mode=request.param)
    with Network(scenario, topology=load_topology(scenario.topology)) as net:
        bench = BenchEnv(net, net.registry.make_tmpdir("svc"), ech_mode=request.param,
                         pool_size=8)
        bench.start(ALL_PATHS)
        try:
            yield bench
        finally:
            bench.stop()


def _front_records_since(env: BenchEnv, count: int, wait_s: float = 3.0) -> list[dict]:
    """The front door logs a connection when it closes: wait until `count` new ones appear."""
    recs: list[dict] = []

    def enough() -> bool:
        recs[:] = [r for r in env.cdn.front.records() if r.get("inner_sni") or r.get("outer_sni")]
        return len(recs) >= count

    with contextlib.suppress(WaitTimeout):  # the caller's assertions say what is missing
        wait_until(enough, wait_s, 0.1, f"{count} front-door records")
    return recs


def _load(env: BenchEnv, path: str, family: int, count: int) -> list[dict]:
    env.select(path)
    before = len(_front_records_since(env, 0, 0))
    result = env.load_generator().run(
        sites=[env.sites[0]], count=count, concurrency=2, source=env.client_source(family),
        family=family, proxies=env.proxy_endpoints(path), check=False, timeout=120)
    assert len(result.records) == count, result.stderr[-300:]
    assert all(not r.get("error") for r in result.records), result.records[:2]
    assert all(r["ech_accepted"] for r in result.records)
    return _front_records_since(env, before + count)[before:]


@pytest.mark.parametrize("family", [4, 6])
def test_ech_end_to_end_front_door_sees_inner_name_and_subscriber(env, family):
    front = _load(env, "direct", family, 4)
    assert len(front) == 4
    for rec in front:
        assert rec["ech"] == "accepted"
        assert rec["inner_sni"] == env.sites[0]
        assert rec["outer_sni"] == "cdn.example"
        assert rec["peer_addr"] == env.client_source(family)  # route: the subscriber itself
        assert rec["mode"] == env.ech_mode


@pytest.mark.parametrize("family", [4, 6])
def test_cgn_gives_one_stable_alias(env, family):
    front = _load(env, "cgn", family, 6)
    peers = {r["peer_addr"] for r in front}
    if family == 4:
        pool = {str(a) for a in env.net.graph.plan.alias_pool_v4(env.pool_size)}
        assert len(peers) == 1 and peers <= pool
    else:  # CGN is NAT44: IPv6 is routed unchanged
        assert peers == {env.client_source(6)}


@pytest.mark.parametrize("family", [4, 6])
def test_cfr_flow_spreads_flows_over_the_pool(env, family):
    front = _load(env, "cfr-flow", family, 24)
    peers = Counter(r["peer_addr"] for r in front)
    plan = env.net.graph.plan
    assert env.client_source(family) not in peers
    if family == 4:
        assert set(peers) <= {str(a) for a in plan.alias_pool_v4(env.pool_size)}
    else:
        block = plan.nets["alias_pool_v6"]
        assert all(ipaddress.ip_address(p) in block for p in peers)
    # 24 flows over 8 aliases: with uniform choice, P(<= 3 distinct) is below 1e-7.
    assert len(peers) >= 4, peers


def test_cfr_epoch_keeps_one_alias_within_an_epoch(env):
    front = _load(env, "cfr-epoch", 4, 6)
    peers = {r["peer_addr"] for r in front}
    assert len(peers) == 1 and env.client_source(4) not in peers


@pytest.mark.parametrize(("path", "provider_index"), [("proxy", 0), ("proxy-chain", 1)])
def test_proxies_tunnel_ech_and_the_front_door_sees_the_provider(env, path, provider_index):
    """The front door sees the provider that egresses: the first for proxy, the second (the
    chain's last hop) for proxy-chain."""
    provider = env.net.roles.providers[provider_index]
    front = _load(env, path, 4, 3)
    provider_addrs = {a.split("/")[0] for addrs in env.net.info[provider].addresses.values()
                      for a in addrs}
    for rec in front:
        assert rec["ech"] == "accepted" and rec["inner_sni"] == env.sites[0]
        assert rec["peer_addr"] in provider_addrs, rec["peer_addr"]
