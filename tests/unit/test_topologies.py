"""Topologies as data: roles, the `--topology` resolver, and the layering that keeps the
network from importing topologies. No namespaces: graphs are built, not brought up."""

from __future__ import annotations

import ast
import ipaddress
from dataclasses import replace

import pytest

from testbed.errors import ParameterError, UsageError
from testbed.graph import expected_rtt_ms
from testbed.paths import REPO_ROOT
from testbed.roles import Roles
from testbed.scenario import TOPOLOGIES, Scenario, scenario_from_mapping
from tests.unit.test_graph import _forward, _route_for
from topologies import absolute_spec, load_topology
from topologies.base import GraphTopo
from topologies.isp_cdn import describe as describe_isp_cdn
from topologies.two_pops import describe as describe_two_pops

TINY = '''\
from testbed.graph import NetworkGraph, intf_name
from testbed.roles import Roles
from topologies.base import GraphTopo, add_access, add_pop, add_relay_edge, link_spec, plan_of


class Tiny(GraphTopo):
    def describe(self, scenario):
        g = NetworkGraph(plan_of(scenario))
        hosts, pop_host, ifs = add_access(g, scenario, "acc")
        edge = add_relay_edge(g, scenario, "acc")
        g.add_node("tr", "transit", router=True)
        g.add_link(edge, "tr", "wan", link_spec(scenario, "wan"))
        pop = add_pop(g, scenario, "tr", "cdn", router="pop")
        g.compute_routes()
        return g, Roles(subscribers=tuple(hosts), population=pop_host, access_router="acc",
                        relay=edge, relay_access=(intf_name(edge, "acc"),),
                        relay_upstream=(intf_name(edge, "tr"),), transit="tr", pops=(pop,),
                        host_interfaces=ifs)
'''


def test_every_builtin_name_is_a_file_with_a_graph_topo_and_every_file_is_listed():
    files = {p.stem for p in (REPO_ROOT / "topologies").glob("*.py")
             if "topos = {" in p.read_text()}
    assert files == set(TOPOLOGIES)
    for name in TOPOLOGIES:
        cls = load_topology(name)
        assert issubclass(cls, GraphTopo) and cls.__module__ == f"topologies.{name}"


def test_default_roles_are_the_nodes_code_used_to_name_literally():
    _, roles = describe_isp_cdn(Scenario())
    assert (roles.client, roles.front_door, roles.dns, roles.population) == (
        "s1", "fd", "dns", "crowd")
    assert (roles.relay, roles.relay_access, roles.relay_upstream, roles.transit) == (
        "edge", ("edge-acc",), ("edge-core",), "core")
    assert roles.providers == ("p1", "p2") and roles.origins == ("o1",)
    assert roles.interface("crowd") == "crowd-acc"
    assert roles.pops[0].front_door_interface == "fd-cdn"
    assert roles.to_dict()["front_door"] == "fd"
    _, none = describe_isp_cdn(replace(Scenario(), population=0))
    assert none.population is None and none.subscriber_hosts == ("s1", "s2", "s3", "s4")


def test_roles_naming_a_missing_node_are_refused_by_name():
    g, roles = describe_isp_cdn(Scenario())
    with pytest.raises(UsageError, match="relay 'nosuch'"):
        replace(roles, relay="nosuch").check(set(g.nodes))
    with pytest.raises(UsageError, match="not a subscriber or population host"):
        roles.interface("fd")


def _next_hops(graph, src: str, address: str) -> list[str]:
    """Nodes a packet to `address` visits from src until one has no route for it (the owner
    of a pool that is routed to it but not configured on an interface)."""
    hops = [src]
    for _ in range(12):
        route = _route_for(graph.nodes[hops[-1]], address)
        if route is None:
            return hops
        gw = ipaddress.ip_address(route[1])
        hops.append(next(n for n, gn in graph.nodes.items()
                         if any(ipaddress.ip_interface(c).ip == gw
                                for cs in gn.addrs.values() for c in cs)))
    raise AssertionError(f"routing loop towards {address}: {hops}")


def test_two_pops_routes_reach_both_pops_and_the_off_path_pool():
    g, roles = describe_two_pops(Scenario(population=2))
    plan = g.plan
    fd_b4, fd_b6 = plan.front_door(1)
    dns_b4, _ = plan.dns_server(1)
    pool4 = next(plan.nets["offpath_pool_v4"].hosts())
    pool6 = plan.nets["offpath_pool_v6"].network_address + 1
    for target in (fd_b4, fd_b6, dns_b4):
        hops = _forward(g, roles.client, str(target))
        assert hops[-1] == roles.pops[1].front_door or hops[-1] == roles.pops[1].dns
        assert "cdn2" in hops and roles.relay in hops
    for target in (pool4, pool6):  # a CFR on rp aliases into this pool: replies reach rp
        assert _next_hops(g, roles.pops[1].front_door, str(target))[-1] == roles.cfr_hosts[0]
    # PoP b is one WAN link farther than PoP a
    wan = Scenario().links["wan"].delay_ms
    far = expected_rtt_ms(g, roles.client, roles.pops[1].front_door)
    near = expected_rtt_ms(g, roles.client, roles.pops[0].front_door)
    assert far - near == 2 * wan
    # PoP a keeps the default topology's names and addresses (runs what isp_cdn runs)
    g1, r1 = describe_isp_cdn(Scenario(population=2))
    assert roles.pops[0] == r1.pops[0]
    assert g.nodes["fd"].addrs == g1.nodes["fd"].addrs


def test_pop_blocks_do_not_overlap_and_a_missing_pop_is_named():
    _, roles = describe_two_pops(Scenario())
    g, _ = describe_two_pops(Scenario())
    a, b = (ipaddress.ip_address(g.plan.front_door(i)[0]) for i in (0, 1))
    assert a != b and b in g.plan.nets["cdn2_v4"]
    with pytest.raises(ParameterError, match="point of presence"):
        g.plan.front_door(2)


def test_a_user_file_loads_with_or_without_the_class_name(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    cls = load_topology(str(path))
    assert cls.__name__ == "Tiny" and load_topology(f"{path}:Tiny") is cls
    graph, roles = cls.describe(None, Scenario())
    assert roles.transit == "tr" and "pop" in graph.nodes


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (None, "", "no such file"),
        ("from mininet.topo import Topo\nclass Plain(Topo):\n    pass\n", ":Plain",
         "Topo without roles"),
        ("class NotATopo:\n    pass\n", ":NotATopo", "is not a Mininet Topo class"),
        ("X = 1\n", "", "found none"),
        (TINY, ":Other", "no class or topos entry 'Other'"),
        ("raise RuntimeError('boom')\n", "", "importing it failed: RuntimeError: boom"),
        (TINY + "\nclass Tiny2(Tiny):\n    pass\n", "", "several (Tiny, Tiny2): add :Class"),
    ],
)
def test_bad_topology_files_name_the_parameter(tmp_path, content, suffix, message):
    path = tmp_path / f"t{abs(hash((content, suffix))) % 10**8}.py"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError) as err:
        load_topology(f"{path}{suffix}")
    assert "--topology" in str(err.value) and message in str(err.value)


def test_unknown_names_and_malformed_specs_are_parameter_errors():
    with pytest.raises(ParameterError) as err:
        load_topology("mesh")
    assert err.value.parameter == "topology" and "two_pops" in err.value.allowed
    for spec in ("mesh", "x.txt", "x.py:1bad"):
        with pytest.raises(ParameterError):
            scenario_from_mapping({"topology": {"name": spec}})
    assert scenario_from_mapping({"topology": {"name": "a/b.py:C"}}).topology == "a/b.py:C"


def test_absolute_spec_keeps_names_and_resolves_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_spec("two_pops") == "two_pops"
    assert absolute_spec("./t.py:Cls") == f"{tmp_path}/t.py:Cls"


def _imported_top_packages(path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_network_layer_files_do_not_import_topologies():
    """The network receives its topology from above; these testbed modules never import
    `topologies` (lint-imports enforces the whole layering; this pins the files of issue
    16 item 5 without needing it)."""
    names = ["network.py", "graph.py", "roles.py", "smoke.py", "nodes.py", "netns.py",
             "attach.py", "probe.py", "addressing.py", "scenario.py"]
    files = [REPO_ROOT / "testbed" / n for n in names]
    files += sorted((REPO_ROOT / "testbed" / "services").glob("*.py"))
    offenders = [str(f.relative_to(REPO_ROOT)) for f in files
                 if "topologies" in _imported_top_packages(f)]
    assert offenders == []


def test_roles_is_a_frozen_dataclass_the_network_can_record():
    _, roles = describe_two_pops(Scenario())
    assert isinstance(roles, Roles)
    with pytest.raises(AttributeError):
        roles.relay = "x"  # type: ignore[misc]
    d = roles.to_dict()
    assert d["pops"][1]["front_door"] == "fd2" and d["cfr_hosts"] == ("rp",)
    assert d["client"] == "s1" and d["dns"] == "dns"
