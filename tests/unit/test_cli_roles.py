"""The CLI and leak check take topologies and node roles from the topology, not from names.

No root: topologies are built as Mininet Topo objects (graph and roles) without starting
anything; the CLI is exercised through its parser and `scenario_from_args`.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.environment import POLICY_OF_PATH
from benchmarks.leakcheck import ALIASING_POLICIES, path_of, subscriber_nodes, ttl_to_relay
from benchmarks.linkability_run import LinkabilityParams
from cfrbench.cli import VISIBLE_COMMANDS, build_parser, main, scenario_argv, scenario_from_args
from relay.policies import CFR_POLICIES
from testbed.scenario import TOPOLOGIES, Scenario
from topologies import load_topology


def _net(name: str) -> SimpleNamespace:
    """What the leak-check helpers read from a network: its graph and roles."""
    topo = load_topology(name)(scenario=Scenario(topology=name), mechanism="netem",
                               workdir=None)
    return SimpleNamespace(graph=topo.graph, roles=topo.roles)


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_ttl_to_relay_expires_at_the_relay_node(name):
    """The reply's TTL counts the links front door -> relay; on both built-ins that is
    fd -> cdn -> core -> edge, the 3 the leak check used to hard-code."""
    net = _net(name)
    assert ttl_to_relay(net) == 3
    assert net.roles.relay == "edge" and net.roles.front_door == "fd"


def test_subscriber_nodes_are_the_roles_subscriber_hosts():
    net = _net("isp_cdn")
    assert subscriber_nodes(net) == ["s1", "s2", "s3", "s4", "crowd"]


def test_leak_check_policies_and_paths_come_from_the_one_tables():
    assert ALIASING_POLICIES == CFR_POLICIES == ("cfr-flow", "cfr-epoch")
    assert path_of("route") == "direct"  # the first path under route
    for policy in ALIASING_POLICIES:
        assert POLICY_OF_PATH[path_of(policy)] == policy
    with pytest.raises(KeyError, match="nptv6"):
        path_of("nptv6")


def test_help_lists_no_internal_command(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "_serve" not in out and "SUPPRESS" not in out
    assert all(c in out for c in VISIBLE_COMMANDS)
    # the detached controller is still a command
    args = build_parser().parse_args(["_serve", "--prefix", "cbabcd"])
    assert args.prefix == "cbabcd"


def test_run_has_no_policy_option(capsys):
    """`run` measured every path under the path table's policy whatever --policy said."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "--policy", "cgn"])
    assert exc.value.code == 2
    assert "--policy" in capsys.readouterr().err
    assert build_parser().parse_args(["up", "--policy", "cgn"]).policy == "cgn"


@pytest.mark.parametrize(("profile", "households", "duration"),
                         [("quick", 200, 60.0), ("tiny", 200, 60.0), ("full", 500, 600.0)])
def test_linkability_defaults_follow_the_profile(profile, households, duration):
    args = build_parser().parse_args(["run", "--profile", profile])
    assert args.households is None and args.workload_duration is None
    expected = LinkabilityParams.for_profile(profile)
    assert (expected.households, expected.duration_s) == (households, duration)


def test_topology_file_is_made_absolute_for_a_detached_controller(monkeypatch, tmp_path):
    mine = tmp_path / "my_topo.py"
    mine.write_text(
        "from topologies.two_pops import TwoPopsTopo as _Base\n\n\n"
        "class Mine(_Base):\n    pass\n\n\ntopos = {'mine': Mine}\n")
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["up", "--topology", "my_topo.py"])
    scenario = scenario_from_args(args)
    assert scenario.topology == str(mine)
    assert scenario_argv(args)[-2:] == ["--topology", str(mine)]
    assert load_topology(scenario.topology).__name__ == "Mine"


def test_bad_topology_file_exits_2_naming_the_parameter(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    assert main(["run", "--topology", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--topology" in err and "GraphTopo" in err
