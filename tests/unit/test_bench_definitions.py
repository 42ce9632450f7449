"""Benchmark definitions: the shipped TOML files load under every profile, and every kind of
typo is rejected with an error that names the key and the allowed values (exit status 2)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from benchmarks.definitions import (
    DEFINITIONS_DIR,
    DefinitionError,
    available_benchmarks,
    definition_from_parameters,
    load_benchmarks,
    load_definition,
    parse_definition,
)
from benchmarks.registry import PROFILES, TOOLS
from testbed.errors import UsageError


def minimal() -> dict[str, Any]:
    return {
        "benchmark": {"name": "demo", "paths": ["direct", "cfr-flow", "proxy"]},
        "scenario": {"link_delay_ms": {"access": 1.0, "transit": 10.0}},
        "measurements": [
            {"name": "hs", "tool": "tls_handshake", "repetitions": 10, "warmup": 1},
            {"name": "ping", "tool": "icmp_rtt", "repetitions": 10},
        ],
        "profiles": {"tiny": {"repetitions": 2, "warmup": 0}},
    }


def expect_error(data: dict[str, Any], *needles: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as ei:
        parse_definition(data, source="demo")
    for n in needles:
        assert n in str(ei.value), f"{n!r} not in {ei.value}"
    return ei.value


def test_shipped_definitions_load_under_every_profile() -> None:
    shipped = available_benchmarks()
    assert {"connrate", "latency", "throughput"} <= set(shipped)
    for profile in PROFILES:
        defs = load_benchmarks(None, profile)
        assert [d.profile for d in defs] == [profile] * len(shipped)
        for d in defs:  # every budget with looks has a look before its end, or one look
            for m in d.measurements:
                assert m.look_every is None or m.look_every >= 1
    lat = load_definition(DEFINITIONS_DIR / "latency.toml")
    assert {m.tool for m in lat.measurements} == {"https_request", "page_load", "icmp_rtt"}
    assert set(lat.metrics()) >= {"connect_time", "handshake_time", "ttfb", "page_load_time"}
    # margins no wider than max(0.1 ms, 1% of the baseline) (page load: its own, unchanged)
    assert (lat.analysis.equivalence_margin_ms, lat.analysis.equivalence_margin_rel) == \
        (0.1, 0.01)
    conn = load_definition(DEFINITIONS_DIR / "connrate.toml")
    assert [m.tool for m in conn.measurements] == ["conn_rate"]


def test_profiles_override_repetitions_and_add_sweep() -> None:
    base = load_definition(DEFINITIONS_DIR / "latency.toml")
    quick = base.with_profile("quick")
    full = base.with_profile("full")
    tiny = base.with_profile("tiny")
    # quick: per-measurement budgets with sequential looks
    assert quick.measurement("connection").repetitions == 80
    assert quick.measurement("connection").look_every == 20
    assert quick.measurement("page_load").repetitions == 60
    assert quick.measurement("page_load").warmup == 1
    assert quick.measurement("icmp_rtt").look_every == 25
    assert full.measurement("connection").repetitions == 100
    assert full.measurement("page_load").repetitions == 40
    assert full.measurement("icmp_rtt").repetitions == 200
    assert quick.sweep_points() == [{}]
    assert full.sweep_points() == [{"delay_ms": d} for d in (0.0, 5.0, 20.0, 50.0)]
    assert full.sweep is not None and full.sweep.link == "detour"
    assert tiny.paths == base.paths  # the integration test's profile covers every path
    assert tiny.sweep_points() == [{"delay_ms": 0.0}, {"delay_ms": 20.0}]
    assert tiny.measurement("connection").repetitions == 5
    assert tiny.measurement("connection").look_every == 5  # profile-level look_every


def test_profile_paths_cut_paths_and_compare_pairs() -> None:
    import tomllib

    raw = tomllib.loads((DEFINITIONS_DIR / "latency.toml").read_text())
    raw["profiles"]["tiny"]["paths"] = ["direct", "cfr-flow", "proxy"]
    tiny = parse_definition(raw, source="latency.toml").with_profile("tiny")
    assert tiny.paths == ("direct", "cfr-flow", "proxy")
    # compare pairs are cut down to the profile's paths
    assert tiny.analysis.compare
    assert all(a in tiny.paths and b in tiny.paths for a, b in tiny.analysis.compare)


def test_profile_paths_cut_a_measurements_own_compare_pairs() -> None:
    """A profile narrowing the paths must not fail on a measurement-level `compare` that
    names a removed path (measurement without its own `paths`): the pair is dropped, like
    the analysis' pairs, and a measurement left with none falls back to the analysis'."""
    import tomllib

    raw = tomllib.loads((DEFINITIONS_DIR / "latency.toml").read_text())
    raw["measurements"][0]["compare"] = [["direct", "cfr-flow"], ["cgn", "cfr-epoch"]]
    raw["profiles"]["tiny"]["paths"] = ["direct", "cfr-flow"]
    tiny = parse_definition(raw, source="latency.toml").with_profile("tiny")
    assert tiny.measurement("connection").compare == (("direct", "cfr-flow"),)
    raw["profiles"]["tiny"]["paths"] = ["direct", "proxy"]
    tiny = parse_definition(raw, source="latency.toml").with_profile("tiny")
    assert tiny.measurement("connection").compare == ()
    assert tiny.analysis.compare == (("direct", "proxy"),)


def test_link_queue_packets_reach_the_scenario() -> None:
    """The throughput definition gives the delayed, rate-limited cdn link a queue of about
    one BDP; a non-integer or zero queue is rejected naming the key."""
    from benchmarks.runner import scenario_for
    from testbed.scenario import Scenario

    thr = load_definition(DEFINITIONS_DIR / "throughput.toml")
    assert thr.scenario.link_queue_packets == {"cdn": 2000}
    assert scenario_for(Scenario(), thr, {}).links["cdn"].queue_packets == 2000
    data = minimal()
    data["scenario"]["link_queue_packets"] = {"cdn": 0}
    expect_error(data, "link_queue_packets")


def test_tools_that_cannot_cross_a_proxy_skip_it() -> None:
    d = load_definition(DEFINITIONS_DIR / "latency.toml")
    assert "proxy" not in d.measurement("icmp_rtt").paths
    assert "proxy" in d.measurement("connection").paths
    data = minimal()
    data["measurements"][1]["paths"] = ["direct", "proxy"]
    expect_error(data, "proxy", "icmp_rtt", "allowed: direct, cfr-flow")


def test_unknown_top_level_key() -> None:
    data = minimal()
    data["measurement"] = []
    expect_error(data, "unknown key 'measurement'", "allowed: benchmark, scenario, measurements")


def test_unknown_tool_names_allowed_tools() -> None:
    data = minimal()
    data["measurements"][0]["tool"] = "tls_handshak"
    e = expect_error(data, "'tls_handshak'", "tcp_connect", "iperf3_udp")
    assert e.allowed == tuple(sorted(TOOLS))


def test_unknown_path() -> None:
    data = minimal()
    data["benchmark"]["paths"] = ["direct", "cfr"]
    expect_error(data, "'cfr'", "unknown path", "cfr-flow", "proxy-chain")


def test_unknown_profile_in_file() -> None:
    data = minimal()
    data["profiles"]["fast"] = {"repetitions": 1}
    expect_error(data, "profiles.fast", "unknown profile", "quick, full, tiny")


def test_unknown_measurement_key_and_option() -> None:
    data = minimal()
    data["measurements"][0]["repetitons"] = 5
    expect_error(data, "repetitons", "allowed: name, tool")
    data = minimal()
    data["measurements"][0]["options"] = {"ech": True, "streams": 4}
    expect_error(data, "streams", "unknown option for tool tls_handshake", "resume")


def test_bad_values() -> None:
    data = minimal()
    data["measurements"][0]["repetitions"] = 0
    expect_error(data, "repetitions")
    data = minimal()
    data["measurements"][0]["repetitions"] = "10"
    expect_error(data, "expected an integer")
    data = minimal()
    data["scenario"]["ech_mode"] = "both"
    expect_error(data, "ech_mode", "shared, split")
    data = minimal()
    data["measurements"][1]["name"] = "hs"
    expect_error(data, "duplicate measurement name")


def test_congestion_control_is_a_checked_tcp_option() -> None:
    data = minimal()
    data["measurements"][0] = {"name": "bulk", "tool": "iperf3_tcp", "repetitions": 3,
                               "options": {"congestion_control": "bbr"}}
    assert parse_definition(data, source="demo").measurement("bulk").options == {
        "congestion_control": "bbr"}
    data["measurements"][0]["options"] = {"congestion_control": "vegas"}
    expect_error(data, "congestion_control", "allowed: cubic, reno, bbr")


def test_profile_errors_are_found_at_load_not_at_run() -> None:
    data = minimal()
    data["profiles"]["full"] = {"measurements": {"hs": {"options": {"eck": True}}}}
    expect_error(data, "profile full", "eck")
    data = minimal()
    data["profiles"]["full"] = {"measurements": {"nope": {"repetitions": 3}}}
    expect_error(data, "profiles.full.measurements.nope", "allowed: hs, ping")
    data = minimal()
    data["profiles"]["full"] = {"sweep": {"link": "core", "delay_ms": [0, 5]}}
    expect_error(data, "core", "access, transit")


def test_analysis_and_plots_validate_names() -> None:
    data = minimal()
    data["analysis"] = {"margins": {"ttfb": {"abs_ms": 1.0}}}
    expect_error(data, "analysis.margins.ttfb", "handshake_time, rtt")
    data = minimal()
    data["analysis"] = {"baseline": "cgn"}
    expect_error(data, "baseline", "direct, cfr-flow, proxy")
    data = minimal()
    data["plots"] = [{"kind": "histogram"}]
    expect_error(data, "histogram", "cdf, added_delay, throughput, sweep")


def test_load_benchmarks_rejects_unknown_names_and_profiles() -> None:
    with pytest.raises(DefinitionError) as ei:
        load_benchmarks(["latncy"], "quick")
    assert "latncy" in str(ei.value) and "connrate, latency, throughput" in str(ei.value)
    with pytest.raises(DefinitionError) as ei:
        load_benchmarks(["latency"], "fast")
    assert "fast" in str(ei.value) and "quick, full, tiny" in str(ei.value)
    assert isinstance(ei.value, UsageError) and ei.value.exit_code == 2


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[benchmark\nname = 1\n")
    with pytest.raises(DefinitionError, match="invalid TOML"):
        load_definition(bad)
    misnamed = tmp_path / "other.toml"
    misnamed.write_text(
        '[benchmark]\nname = "latency"\n[[measurements]]\ntool = "icmp_rtt"\n')
    with pytest.raises(DefinitionError, match="file name 'other'"):
        load_definition(misnamed)
    with pytest.raises(DefinitionError, match="cannot read"):
        load_definition(tmp_path / "missing.toml")


def test_resolved_definition_round_trips_through_results_parameters() -> None:
    full = load_definition(DEFINITIONS_DIR / "latency.toml", "full")
    entry = {"name": full.name, "profile": full.profile,
             "definition": copy.deepcopy(full.to_dict())}
    again = definition_from_parameters(entry)
    assert again.measurements == full.measurements
    assert again.sweep == full.sweep
    assert again.analysis == full.analysis
    assert again.profile == "full"


def test_sequential_and_per_measurement_keys_parse() -> None:
    data = minimal()
    data["measurements"][0].update({
        "look_every": 5, "compare": [["proxy", "cfr-flow"]],
        "margins": {"handshake_time": {"abs_ms": 0.2, "rel": 0.005}}})
    data["measurements"].append({"name": "tp", "tool": "iperf3_tcp", "repetitions": 6,
                                 "report_only": True,
                                 "margins": {"throughput": {"ratio_margin": 0.01}}})
    data["analysis"] = {"ratio_margin": 0.05, "margins": {"throughput": {"ratio_margin": 0.02}}}
    data["profiles"]["tiny"]["measurements"] = {"hs": {"look_every": 2, "report_only": True}}
    d = parse_definition(data, source="demo")
    hs, tp = d.measurement("hs"), d.measurement("tp")
    assert (hs.look_every, hs.compare) == (5, (("proxy", "cfr-flow"),))
    assert d.analysis.pairs_for(hs) == (("proxy", "cfr-flow"),)
    assert d.analysis.pairs_for(d.measurement("ping")) == (("direct", "cfr-flow"),)
    assert d.analysis.margin_for("handshake_time", hs).resolve(100.0) == pytest.approx(0.5)
    assert tp.report_only and tp.look_every is None
    # the measurement's ratio margin beats the analysis', which beats the default
    assert d.analysis.ratio_margin_for("throughput", tp) == 0.01
    assert d.analysis.ratio_margin_for("throughput", None) == 0.02
    assert d.analysis.ratio_margin_for("conn_rate", None) == 0.05
    tiny = d.with_profile("tiny")
    assert tiny.measurement("hs").look_every == 2 and tiny.measurement("hs").report_only
    assert tiny.measurement("ping").look_every is None


def test_sequential_and_per_measurement_keys_are_validated() -> None:
    def bad(update: dict[str, Any], *needles: str) -> None:
        data = minimal()
        data["measurements"][0].update(update)
        expect_error(data, *needles)

    bad({"look_every": 0}, "measurements[0](hs).look_every")
    bad({"look_every": 2.5}, "expected an integer", "look_every")
    bad({"report_only": "yes"}, "expected true/false", "report_only")
    bad({"compare": [["direct", "cgn"]]}, "unknown path", "compare[0]")
    bad({"compare": [["direct"]]}, "exactly two paths")
    bad({"compare": []}, "non-empty list")
    bad({"margins": {"throughput": {"ratio_margin": 0.01}}}, "unknown metric",
        "margins.throughput", "handshake_time")
    bad({"margins": {"handshake_time": {"ratio_margin": 1.5}}}, ">= 1", "ratio_margin")
    bad({"margins": {"handshake_time": {"ratio": 0.1}}}, "unknown key", "ratio_margin")
    data = minimal()
    data["profiles"]["tiny"]["measurements"] = {"hs": {"report_only": 1}}
    expect_error(data, "profiles.tiny.measurements.hs.report_only", "true/false")
    data = minimal()
    data["profiles"]["tiny"]["look_every"] = -1
    expect_error(data, "profiles.tiny.look_every")


def test_every_path_has_a_relay_policy_of_the_one_table() -> None:
    """A path added to the registry without a policy, or a policy renamed in relay.policies,
    fails here instead of at the first switch of a run."""
    from benchmarks.environment import POLICY_OF_PATH
    from benchmarks.registry import PATHS
    from relay.policies import POLICIES

    assert set(POLICY_OF_PATH) == set(PATHS)
    assert set(POLICY_OF_PATH.values()) <= set(POLICIES)
