"""The second built-in topology on real namespaces (two CDN PoPs, an off-path CFR host), and a
user's own topology file through `--topology path/to/file.py`, the way `mn --custom` takes one.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from testbed import lifecycle
from testbed.calibration import calibrate
from testbed.graph import expected_rtt_ms
from testbed.network import Network
from testbed.scenario import Scenario
from testbed.smoke import ping_all, rtt_pairs, rtt_table
from testbed.waiting import wait_until
from tests.conftest import require_root
from tests.integration.hoststate import netns
from topologies import load_topology
from topologies.two_pops import steer_rules

# The same tolerance as the default topology's delay tests (tests/integration/test_testbed.py).
MAX_MEDIAN_ERROR_MS = 1.0


@pytest.fixture(scope="module")
def two_pops():
    require_root()
    scenario = replace(Scenario(), topology="two_pops", population=3)
    with Network(scenario, topology=load_topology(scenario.topology)) as net:
        yield net


def test_roles_name_two_pops_each_with_front_door_and_dns(two_pops):
    roles = two_pops.roles
    assert len(roles.pops) == 2
    assert len(set(roles.front_doors)) == 2 and len(set(roles.dns_servers)) == 2
    plan = two_pops.graph.plan
    for pop in roles.pops:  # each PoP's services sit on that PoP's own plan block
        fd4, fd6 = plan.front_door(pop.plan_index)
        assert two_pops.primary_addresses(pop.front_door) == (str(fd4), str(fd6))
        dns4, _ = plan.dns_server(pop.plan_index)
        assert two_pops.primary_addresses(pop.dns)[0] == str(dns4)
    assert roles.cfr_hosts and set(roles.cfr_hosts).isdisjoint({roles.relay, roles.transit})


def test_every_pair_reaches_every_other_v4_and_v6(two_pops):
    hosts = two_pops.hosts()
    for family in (4, 6):
        result = ping_all(two_pops, family)
        assert result.pairs == len(hosts) * (len(hosts) - 1)
        assert result.failures == [], f"IPv{family} unreachable pairs: {result.failures}"


def test_calibration_and_main_paths_match_the_configured_delay(two_pops):
    cal = calibrate(two_pops, count=100)
    wan = [c for c in cal if c.link_class == "wan"]
    assert len(wan) == 2  # edge-core and core-cdn2: PoP b is one WAN link farther
    for c in cal:
        assert c.samples >= 95, c
        assert c.error_median_ms <= MAX_MEDIAN_ERROR_MS, c
    roles = two_pops.roles
    near = expected_rtt_ms(two_pops.graph, roles.client, roles.pops[0].front_door)
    far = expected_rtt_ms(two_pops.graph, roles.client, roles.pops[1].front_door)
    assert far - near == pytest.approx(2 * Scenario().links["wan"].delay_ms)  # one more WAN
    rows = rtt_table(two_pops, rtt_pairs(two_pops), count=30)
    assert {(r.src, r.dst) for r in rows} >= {(roles.client, fd) for fd in roles.front_doors}
    for row in rows:
        assert row.samples >= 25, row
        assert abs(row.median_ms - row.configured_ms) <= 2 * MAX_MEDIAN_ERROR_MS, row


def test_subscriber_traffic_can_be_steered_through_the_off_path_cfr_host(two_pops):
    """A policy route at the transit router sends subscriber traffic through `rp`; with a
    source translation there into the off-path pool (what a CFR on `rp` would do), the
    replies come back through `rp` too. Counted by nftables on `rp`; removed afterwards."""
    net, roles = two_pops, two_pops.roles
    host = roles.cfr_hosts[0]
    plan = net.graph.plan
    fd4, fd6 = plan.front_door(1)
    pool4 = next(plan.nets["offpath_pool_v4"].hosts())
    pool6 = plan.nets["offpath_pool_v6"].network_address + 1
    sub4, sub6 = plan.nets["subscribers_v4"], plan.nets["subscribers_v6"]
    nft = "\n".join([
        "table inet h9steer {",
        " chain through {",
        "  type filter hook forward priority 0; policy accept;",
        f"  ip saddr {sub4} counter", f"  ip6 saddr {sub6} counter",
        f"  ip daddr {sub4} counter", f"  ip6 daddr {sub6} counter",
        " }",
        " chain alias {",
        "  type nat hook postrouting priority 100; policy accept;",
        f"  ip saddr {sub4} snat ip to {pool4}", f"  ip6 saddr {sub6} snat ip6 to {pool6}",
        " }",
        "}", ""])

    def counters() -> list[int]:
        out = net[host].run(["nft", "list", "table", "inet", "h9steer"]).stdout
        return [int(n) for n in re.findall(r"counter packets (\d+)", out)]

    def ping(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
        return net[roles.client].run(["ping", "-n", "-c3", "-i", "0.2", "-W3", str(addr)],
                                     check=False).returncode

    net[host].run(["nft", "-f", "-"], input=nft)
    try:
        assert ping(fd4) == 0 and ping(fd6) == 0
        assert counters() == [0, 0, 0, 0], "before steering, traffic must not cross rp"
        for node, argv in steer_rules(net.graph, roles, host):
            net[node].run(argv)
        assert ping(fd4) == 0 and ping(fd6) == 0
        out4, out6, back4, back6 = counters()
        assert out4 >= 3 and out6 >= 3, "subscriber packets did not go through rp"
        assert back4 >= 3 and back6 >= 3, "replies did not come back through rp"
    finally:
        net[host].run(["nft", "delete", "table", "inet", "h9steer"], check=False)
        for node, argv in steer_rules(net.graph, roles, host, action="del"):
            net[node].run(argv, check=False)


USER_TOPOLOGY = '''\
"""A user's topology: one subscriber behind the relay, one PoP, no providers."""
from testbed.graph import NetworkGraph, intf_name
from testbed.roles import Roles
from topologies.base import (GraphTopo, add_access, add_pop, add_relay_edge, link_spec,
                             plan_of)


class MyTopo(GraphTopo):
    def describe(self, scenario):
        g = NetworkGraph(plan_of(scenario))
        hosts, population, interfaces = add_access(g, scenario, "acc")
        edge = add_relay_edge(g, scenario, "acc", name="isp")
        g.add_node("tr", "transit", router=True)
        g.add_link(edge, "tr", "wan", link_spec(scenario, "wan"))
        pop = add_pop(g, scenario, "tr", "cdn", router="pop", suffix="x")
        g.compute_routes()
        return g, Roles(subscribers=tuple(hosts), population=population,
                        access_router="acc", relay=edge,
                        relay_access=(intf_name(edge, "acc"),),
                        relay_upstream=(intf_name(edge, "tr"),), transit="tr",
                        pops=(pop,), host_interfaces=interfaces)
'''


def _cli(*args: str, cwd: Path, state_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CFRBENCH_STATE_DIR=str(state_dir)) if state_dir else None
    return subprocess.run([sys.executable, "-m", "cfrbench.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


def test_up_with_a_user_topology_file(tmp_path):
    """`cfrbench up --topology ./my_topo.py` from the user's directory: the network comes
    up with the file's nodes, `exec` reaches them, and Ctrl-C removes every namespace."""
    require_root()
    (tmp_path / "my_topo.py").write_text(USER_TOPOLOGY)
    # Output to a file, not a pipe nobody reads: a controller that prints more than a pipe
    # holds (a fresh machine's warnings) would block on write and never see Ctrl-C through.
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cfrbench.cli", "up", "--bare", "--topology",
             "./my_topo.py", "--subscribers", "1", "--population", "0"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True)
    prefix = None
    try:
        def running() -> lifecycle.RunState | None:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            return next((r for r in lifecycle.list_runs()
                         if r.controller_pid == proc.pid and r.info.get("ready")), None)

        run = wait_until(running, 90, 0.1, "cfrbench up --topology ./my_topo.py to come up")
        prefix = run.prefix
        nodes = set(run.info["network"]["nodes"])
        assert {"s1", "acc", "isp", "tr", "pop", "fdx", "dnsx", "o1"} == nodes
        assert run.info["network"]["roles"]["front_door"] == "fdx"
        fd4 = run.info["network"]["nodes"]["fdx"]["addresses"]["lo"][0].split("/")[0]
        ping = _cli("exec", "--run", prefix, "s1", "--", "ping", "-c1", "-W3", fd4,
                    cwd=tmp_path)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("cfrbench up did not stop within 60 s of Ctrl-C; its "
                                 f"output:\n{log.read_text(errors='replace')[-3000:]}") from None
    assert prefix and not [n for n in netns() if n.startswith(prefix + "-")]


@pytest.mark.parametrize(
    ("content", "spec", "message"),
    [
        (None, "nothere.py", "no such file"),
        ("from mininet.topo import Topo\nclass Plain(Topo):\n    pass\n", "t.py:Plain",
         "Topo without roles"),
        ("X = 1\n", "t.py", "found none"),
        (USER_TOPOLOGY, "t.py:Other", "no class or topos entry 'Other'"),
    ],
)
def test_bad_topology_files_exit_2_naming_the_parameter(tmp_path, content, spec, message):
    """Bad files are refused with one line naming the parameter, before any namespace."""
    require_root()
    if content is not None:
        (tmp_path / "t.py").write_text(content)
    state = tmp_path / "state"  # a run of its own: other networks may come and go meanwhile
    proc = _cli("up", "--topology", spec, cwd=tmp_path, state_dir=state)
    assert proc.returncode == 2, proc.stderr
    assert "topology" in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for record in state.glob("*.json"):  # nothing was created (an empty record at most)
        data = json.loads(record.read_text())
        assert data["netns"] == data["processes"] == data["tmpdirs"] == [], data


def test_two_pops_runs_under_mininet_mn_custom():
    """The file works with Mininet's own `mn --custom` too (its pingall: 0% dropped)."""
    require_root()
    from testbed.paths import REPO_ROOT

    proc = subprocess.run(
        [sys.executable, "/usr/bin/mn", "--custom", "topologies/two_pops.py",
         "--topo", "two_pops,population=2,subscribers=1", "--controller", "none",
         "--test", "pingall"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-2000:]
    assert "Results: 0% dropped" in output, output[-2000:]
