"""The one table of benchmark paths (benchmarks/paths.py): every row is consistent with the
relay's policies and the tools, twins pair up, and the definitions, the environment, the
plots and the leak check read it rather than their own lists."""

from __future__ import annotations

import json

import pytest

from benchmarks import paths as P
from benchmarks.definitions import (
    DefinitionError,
    available_benchmarks,
    load_benchmarks,
    parse_definition,
)
from benchmarks.registry import BASELINE_PATH, PATHS, PROFILES, TOOLS
from relay.policies import FAMILY_MODES, POLICIES


def test_every_path_runs_under_a_policy_of_relay_policies() -> None:
    for p in P.PATH_TABLE:
        assert p.policy in POLICIES, p
        assert p.family in (4, 6)
        assert p.proxy_hops >= 0


def test_every_ipv4_path_has_exactly_one_ipv6_twin_with_the_same_facts() -> None:
    v4 = [p for p in P.PATH_TABLE if p.family == 4]
    v6 = [p for p in P.PATH_TABLE if p.family == 6]
    assert [p.base for p in v6] == [p.name for p in v4]  # one twin each, same order
    for p in v4:
        assert p.base == p.name
        t = P.get(P.twin(p.name, 6))
        assert (t.policy, t.proxy_hops, t.cannot_carry) == (p.policy, p.proxy_hops,
                                                             p.cannot_carry)
        assert P.twin(t.name, 4) == p.name


def test_colours_and_labels_are_unique_and_colours_are_hex() -> None:
    colours = [p.colour for p in P.PATH_TABLE]
    labels = [p.label for p in P.PATH_TABLE]
    assert len(set(colours)) == len(colours)
    assert len(set(labels)) == len(labels)
    for c in colours:
        assert len(c) == 7 and c.startswith("#") and int(c[1:], 16) >= 0


def test_cannot_carry_names_tools_of_the_registry_and_registry_derives_from_it() -> None:
    for p in P.PATH_TABLE:
        assert set(p.cannot_carry) <= set(TOOLS), p
    for name, spec in TOOLS.items():
        assert spec.unsupported_paths == P.not_carrying(name)
    assert TOOLS["icmp_rtt"].unsupported_paths == ("proxy", "proxy-chain", "proxy6",
                                                   "proxy-chain6")
    assert list(PATHS) == list(P.NAMES) and BASELINE_PATH == P.BASELINE


def test_cgn_over_ipv6_is_routed_as_the_relay_policy_defines() -> None:
    assert P.policy_of("cgn6") == "cgn"
    assert P.relay_mode("cgn6") == FAMILY_MODES["cgn"][1] == "route"
    assert P.relay_mode("cgn") == "cgn"
    assert P.relay_mode("cfr-flow6") == "flow"


def test_helpers() -> None:
    assert P.is_proxied("proxy-chain6") and not P.is_proxied("cfr-epoch6")
    assert P.paths_of_policy("cfr-flow") == ("cfr-flow", "cfr-flow6")
    assert P.paths_of_policy("route", family=6) == ("direct6", "proxy6", "proxy-chain6")
    assert P.of_families([6])[0] == "direct6"
    assert P.expand(["direct", "cgn"], (4, 6)) == ("direct", "cgn", "direct6", "cgn6")
    assert P.expand_pairs([("direct", "cgn")], (6,)) == (("direct6", "cgn6"),)
    assert P.baseline_for("proxy6") == "direct6" and P.baseline_for("proxy") == "direct"
    assert not P.carries("proxy6", "icmp_rtt") and P.carries("direct6", "icmp_rtt")
    with pytest.raises(P.UnknownPathError, match="allowed: direct, cfr-flow"):
        P.get("masque")
    assert P.parse_family_option("both") == "dual"
    with pytest.raises(ValueError, match="--family: unknown value '5'; allowed: 4, 6, both"):
        P.parse_family_option("5")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_definition_measures_paths_of_the_table_within_one_family(profile: str) -> None:
    for d in load_benchmarks(available_benchmarks(), profile):
        assert set(d.paths) <= set(P.NAMES)
        assert {P.family_of(p) for p in d.paths} == set(d.families)
        for m in d.measurements:
            assert all(P.carries(p, m.tool) for p in m.paths), (d.name, m.name)
            for a, b in d.analysis.pairs_for(m):
                assert P.family_of(a) == P.family_of(b), (d.name, m.name, a, b)


def test_quick_and_tiny_keep_ipv4_and_full_measures_both_families() -> None:
    for d in load_benchmarks(None, "quick") + load_benchmarks(None, "tiny"):
        assert d.families == (4,), d.name
        assert d.paths == tuple(p for p in d.paths if P.family_of(p) == 4)
    for d in load_benchmarks(None, "full"):
        assert d.families == (4, 6), d.name
        v4 = [p for p in d.paths if P.family_of(p) == 4]
        assert [p for p in d.paths if P.family_of(p) == 6] == [P.twin(p, 6) for p in v4]


def test_family_parameter_replaces_the_definitions_and_is_stored() -> None:
    (d,) = load_benchmarks(["latency"], "quick", family="ipv6")
    assert d.paths[0] == "direct6" and d.families == (6,)
    assert d.analysis.compare[0] == ("direct6", "cfr-flow6")
    again = parse_definition(json.loads(json.dumps(d.to_dict())), source="stored")
    assert again.paths == d.paths  # the stored definition says what ran
    assert load_benchmarks(["latency"], "quick")[0].families == (4,)  # default: its own
    with pytest.raises(DefinitionError, match="allowed: ipv4, ipv6, dual"):
        load_benchmarks(["latency"], "quick", family="ipv5")


def test_a_definition_lists_ipv4_names_only() -> None:
    data = {"benchmark": {"name": "x", "paths": ["direct", "direct6"]},
            "measurements": [{"tool": "tcp_connect"}]}
    with pytest.raises(DefinitionError, match="unknown path"):
        parse_definition(data)


def test_environment_plots_and_leak_check_read_the_table() -> None:
    from benchmarks.environment import POLICY_OF_PATH, endpoint
    from benchmarks.leakcheck import path_of
    from benchmarks.plots import PATH_COLOURS
    from benchmarks.runner import aliasing_policies

    assert {p.name: p.policy for p in P.PATH_TABLE} == POLICY_OF_PATH
    assert {p.name: p.colour for p in P.PATH_TABLE} == PATH_COLOURS
    assert path_of("cfr-epoch") == "cfr-epoch" and path_of("route") == "direct"
    assert aliasing_policies(["cfr-epoch6", "direct6"]) == ["cfr-epoch"]
    assert endpoint("2001:db8::1", 3128) == "[2001:db8::1]:3128"
    assert endpoint("198.18.0.1", 3128) == "198.18.0.1:3128"


def test_dual_definition_compares_within_each_family_and_both_reach_the_verdicts() -> None:
    """IPv6 paths are compared with direct6, never with direct, and count in the verdict;
    without a definition the analysis pairs by family too."""
    import numpy as np

    from benchmarks.analysis import analyse
    from benchmarks.records import make_record
    from benchmarks.schedule import ScheduleItem

    rng = np.random.default_rng(5)
    n = 12
    d = parse_definition({
        "benchmark": {"name": "demo", "paths": ["direct", "cfr-flow"]},
        "scenario": {"family": "dual"},
        "measurements": [{"name": "rate", "tool": "iperf3_tcp", "repetitions": n}],
    }, source="demo")
    assert d.paths == ("direct", "cfr-flow", "direct6", "cfr-flow6")
    base = 900.0 * (1 + 0.001 * rng.normal(size=n))
    values = {"direct": base, "cfr-flow": base * 1.0005, "direct6": base * 0.9,
              "cfr-flow6": base * 0.9}
    recs = [make_record("demo", "rate", "throughput", float(v),
                        ScheduleItem(path, rep, rep, i, False), ts=float(rep))
            for i, (path, vals) in enumerate(values.items()) for rep, v in enumerate(vals)]
    for defs in ({"demo": d}, {}):
        out = analyse(recs, defs)
        pairs = {(c["baseline"], c["path"]) for c in out["comparisons"]}
        assert pairs == {("direct", "cfr-flow"), ("direct6", "cfr-flow6")}, defs
        assert all(c["in_verdict"] for c in out["comparisons"])
    verdicts = out["verdicts"]["no_capacity_loss"]["paths"]
    assert verdicts["cfr-flow"]["verdict"] == verdicts["cfr-flow6"]["verdict"] == "equivalent"


def test_the_results_schema_takes_its_path_names_from_the_table() -> None:
    from benchmarks.results import schema

    assert schema()["$defs"]["path"]["enum"] == list(P.NAMES)
