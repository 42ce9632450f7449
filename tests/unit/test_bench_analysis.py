"""Analysis of the golden run: exact medians known by construction, warm-ups dropped, CIs
that contain the truth, the expected verdicts, and byte-stable re-analysis."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.analysis import analyse
from benchmarks.records import make_record, read_records
from benchmarks.results import definitions_from_results, load_results
from benchmarks.schedule import ScheduleItem

GOLDEN = Path(__file__).resolve().parent / "golden" / "bench"


def _key(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["benchmark"], d["measurement"], d["path"], d["metric"],
            tuple(sorted(d["sweep"].items())))


@functools.cache
def _analysed(name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    run = GOLDEN / name
    stored = load_results(run)
    analysis = analyse(read_records(run), definitions_from_results(stored),
                       stored["parameters"]["seed"])
    return name, stored, analysis


@pytest.fixture(scope="module", params=["run_quick", "run_sweep"])
def golden(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return _analysed(request.param)


def test_medians_are_exactly_the_constructed_ones(golden: Any) -> None:
    name, _, analysis = golden
    expected = json.loads((GOLDEN / "expected.json").read_text())[name]
    got = {_key(s): s for s in analysis["summaries"]}
    assert len(got) == len(expected)
    for e in expected:
        s = got[_key(e)]
        # warm-ups (3 x median + 1) would pull the median up if they were not dropped
        assert s["median"] == pytest.approx(e["median"], abs=1e-9), e
        assert s["n"] == e["n"]
        if s["benchmark"] == "latency":  # iperf3 omits its own first second instead
            assert s["n_warmup"] >= 1
        if s["n"] < 6:  # no order-statistic interval reaches 95% below n = 6
            assert s["ci"]["low"] is None and s["ci"]["high"] is None
            continue
        assert s["ci"]["method"] == "order statistics (Hettmansperger-Sheather)"
        assert s["ci"]["low"] <= e["median"] <= s["ci"]["high"]
        if e["median"] > 0:
            assert (s["ci"]["high"] - s["ci"]["low"]) < 0.1 * e["median"]
        assert s["p95"] >= s["median"] and s["p99"] >= s["p95"]


def test_reanalysis_reproduces_golden_results(golden: Any) -> None:
    _, stored, analysis = golden
    assert json.loads(json.dumps(analysis["summaries"])) == stored["summaries"]
    assert json.loads(json.dumps(analysis["comparisons"])) == stored["comparisons"]
    assert analysis["verdicts"] == stored["verdicts"]


def test_expected_verdicts_quick() -> None:
    _, _, analysis = _analysed("run_quick")
    v = analysis["verdicts"]["no_added_delay"]["paths"]
    assert v["cfr-flow"]["verdict"] == "equivalent"
    assert v["cgn"]["verdict"] == "equivalent"
    assert v["proxy"]["verdict"] == "slower"
    assert v["proxy-chain"]["verdict"] == "slower"
    comps = {(c["measurement"], c["metric"], c["baseline"], c["path"]): c
             for c in analysis["comparisons"]}
    hs = comps[("connection", "handshake_time", "direct", "proxy")]
    assert hs["difference"]["value"] == pytest.approx(20.0, abs=0.5)  # 2 RTTs x 2 x 5 ms
    assert hs["difference"]["ci"]["low"] < 20.0 < hs["difference"]["ci"]["high"]
    assert hs["difference"]["ci"]["method"] == \
        "median of paired differences, sign test (interpolated)"
    assert hs["test"]["ci"]["method"] == "median of paired differences, sign test (exact)"
    assert hs["test"]["test"] == "tost" and hs["verdict"] == "slower"
    # 20 ms against a 0.44 ms margin: decided at the first look, after 20 of 80 blocks, at
    # the Bonferroni alpha of one of four looks
    seq = hs["test"]["sequential"]
    assert (seq["look"], seq["blocks"], seq["stopped_early"]) == (1, 20, True)
    assert seq["looks"] == [20, 40, 60, 80]
    assert hs["test"]["alpha"] == pytest.approx(0.05 / 4)
    assert hs["test"]["ci"]["level"] == pytest.approx(1 - 2 * 0.05 / 4)
    flow = comps[("connection", "handshake_time", "direct", "cfr-flow")]
    assert flow["verdict"] == "equivalent"
    assert -flow["test"]["margin"] <= flow["test"]["ci"]["low"]
    assert flow["test"]["ci"]["high"] <= flow["test"]["margin"]
    # throughput and rates at 2-3 blocks: no 90% interval exists, so no verdict either way
    rate = comps[("conn_rate", "conn_rate", "direct", "cgn")]
    assert rate["test"]["test"] == "ratio" and rate["verdict"] == "equivalent"
    assert rate["ratio"]["value"] == pytest.approx(1990 / 2000, rel=0.01)
    assert 0.95 <= rate["test"]["ci"]["low"] <= rate["test"]["ci"]["high"] <= 1.05
    assert comps[("conn_rate", "conn_fail", "direct", "cfr-flow")]["test"]["test"] == "tost"
    # the extra pair of the definition (proxy -> cfr-flow) is compared but not aggregated
    extra = comps[("connection", "handshake_time", "proxy", "cfr-flow")]
    assert extra["verdict"] == "faster" and extra["in_verdict"] is False
    # icmp has no proxy samples, so no proxy comparison
    assert ("icmp_rtt", "rtt", "direct", "proxy") not in comps


def test_sweep_points_are_analysed_separately() -> None:
    _, _, analysis = _analysed("run_sweep")
    pts = sorted({c["sweep"]["delay_ms"] for c in analysis["comparisons"]})
    assert pts == [0.0, 5.0, 20.0, 50.0]
    undecided = []
    for c in analysis["comparisons"]:
        if c["path"] == "proxy":
            assert c["verdict"] == "slower"
        elif c["verdict"] != "equivalent":
            undecided.append(c)
    # two comparisons of the synthetic data are too noisy for their 30-block budget: they
    # say so, with the samples they would need, and the path's aggregate names the larger
    assert [c["verdict"] for c in undecided] == ["undecided", "undecided"]
    assert all(c["samples_needed"] > 30 for c in undecided)
    agg = analysis["verdicts"]["no_added_delay"]["paths"]["cfr-flow"]
    assert agg["verdict"] == "undecided"
    assert agg["samples_needed"] == max(c["samples_needed"] for c in undecided)


def test_sequential_replay_matches_every_look() -> None:
    """What the runner decides after each look from the samples so far is what the analysis
    reports from the finished records."""
    from benchmarks.analysis import block_values, decide
    from benchmarks.registry import metric_spec

    run = GOLDEN / "run_quick"
    stored = load_results(run)
    definition = definitions_from_results(stored)["latency"]
    m = definition.measurement("connection")
    groups = block_values(read_records(run))
    for c in stored["comparisons"]:
        if c["measurement"] != "connection":
            continue
        a = groups[("latency", "connection", c["baseline"], c["metric"], ())]
        b = groups[("latency", "connection", c["path"], c["metric"], ())]
        ms = metric_spec(c["metric"], c["unit"])
        blocks = c["test"]["sequential"]["blocks"]
        online = decide(ms, c["metric"], definition.analysis, m,
                        {k: v for k, v in a.items() if v[0] < blocks},
                        {k: v for k, v in b.items() if v[0] < blocks}, available_blocks=blocks)
        assert online.decided and online.look == c["test"]["sequential"]["look"]
        assert online.ci.low == pytest.approx(c["test"]["ci"]["low"])


def test_record_order_does_not_change_results() -> None:
    run = GOLDEN / "run_sweep"
    stored = load_results(run)
    recs = read_records(run)
    random.Random(0).shuffle(recs)
    again = analyse(recs, definitions_from_results(stored), stored["parameters"]["seed"])
    assert json.loads(json.dumps(again["comparisons"])) == stored["comparisons"]


def test_failed_samples_counted_not_used() -> None:
    recs = []
    for i in range(10):
        for path in ("direct", "cfr-flow"):
            item = ScheduleItem(path, i, i, 0 if path == "direct" else 1, False)
            value = None if (path == "cfr-flow" and i < 3) else 10.0 + i
            recs.append(make_record("latency", "ttfb", "ttfb", value, item, ts=float(i),
                                    extra={"error": "timeout"} if value is None else {}))
    out = analyse(recs)
    s = {x["path"]: x for x in out["summaries"]}
    assert s["cfr-flow"]["n"] == 7 and s["cfr-flow"]["n_failed"] == 3
    assert s["cfr-flow"]["median"] == 16.0
    assert s["direct"]["n"] == 10 and s["direct"]["median"] == 14.5
    (c,) = out["comparisons"]
    assert (c["baseline"], c["path"], c["n_baseline"], c["n_path"]) == ("direct", "cfr-flow",
                                                                         10, 7)


def test_only_warmups_gives_empty_summary_and_insufficient_verdict() -> None:
    recs = [make_record("latency", "ttfb", "ttfb", 5.0, ScheduleItem(p, 0, 0, i, True), ts=0.0)
            for i, p in enumerate(("direct", "cfr-flow"))]
    out = analyse(recs)
    assert [s["n"] for s in out["summaries"]] == [0, 0]
    assert out["summaries"][0]["median"] is None
    assert out["comparisons"][0]["verdict"] == "insufficient data"


def _paired_records(measurement: str, metric: str, values: dict[str, list[float]],
                    bench: str = "demo") -> list[dict[str, Any]]:
    recs = []
    for path_i, (path, vals) in enumerate(values.items()):
        for rep, v in enumerate(vals):
            item = ScheduleItem(path, rep, rep, path_i, False)
            recs.append(make_record(bench, measurement, metric, v, item, ts=float(rep)))
    return recs


def _demo_definition(measurements: list[dict[str, Any]]) -> Any:
    from benchmarks.definitions import parse_definition

    return parse_definition({
        "benchmark": {"name": "demo", "paths": ["direct", "cfr-flow", "cgn"]},
        "measurements": measurements,
        "analysis": {"ratio_margin": 0.05},
    }, source="demo")


def test_report_only_and_own_pairs_and_ratio_margins() -> None:
    """A report-only measurement gives figures but no verdict and stays out of the
    aggregate; a measurement's own pair (cgn -> cfr-flow) is aggregated; its own ratio
    margin (1%) decides instead of the analysis' 5%."""
    rng = np.random.default_rng(3)
    n = 12
    base = 1000.0 * (1 + 0.001 * rng.normal(size=n))
    d = _demo_definition([
        {"name": "veth", "tool": "iperf3_tcp", "repetitions": n, "report_only": True},
        {"name": "cost", "tool": "relay_cpu", "repetitions": n,
         "paths": ["cgn", "cfr-flow"], "compare": [["cgn", "cfr-flow"]]},
        {"name": "rate", "tool": "iperf3_tcp", "repetitions": n,
         "margins": {"throughput": {"ratio_margin": 0.01}}},
    ])
    recs = (_paired_records("veth", "throughput", {"direct": list(base),
                                                   "cfr-flow": list(base * 0.5)})
            + _paired_records("cost", "cpu_per_gbit", {"cgn": list(base / 1000),
                                                       "cfr-flow": list(base / 1000 * 1.02)})
            + _paired_records("rate", "throughput", {"direct": list(base),
                                                     "cfr-flow": list(base * 0.97),
                                                     "cgn": list(base * 1.0)}))
    out = analyse(recs, {"demo": d})
    comps = {(c["measurement"], c["baseline"], c["path"]): c for c in out["comparisons"]}
    veth = comps[("veth", "direct", "cfr-flow")]
    assert veth["verdict"] == "report only" and veth["in_verdict"] is False
    assert veth["ratio"]["value"] == pytest.approx(0.5, rel=1e-3)
    cost = comps[("cost", "cgn", "cfr-flow")]
    assert cost["verdict"] == "equivalent" and cost["in_verdict"] is True
    assert cost["test"]["margin"] == 0.05
    rate = comps[("rate", "direct", "cfr-flow")]
    assert rate["test"]["margin"] == 0.01
    assert rate["verdict"] == "worse"  # x0.97: beyond a 1% margin, equivalent at 5%
    assert comps[("rate", "direct", "cgn")]["verdict"] == "equivalent"
    agg = out["verdicts"]["no_capacity_loss"]["paths"]
    assert agg["cfr-flow"]["verdict"] == "worse"
    assert agg["cfr-flow"]["comparisons"] == 2  # rate + cost; veth is report-only
    assert agg["cgn"]["verdict"] == "equivalent"


def test_paired_blocks_cancel_drift_that_unpaired_medians_would_not() -> None:
    """A shared slow phase in half of the blocks: the paired shift is exact, and the
    sequential test decides `equivalent` at its first look."""
    drift = np.where(np.arange(40) < 20, 0.0, 30.0)
    d = _demo_definition([{"name": "c", "tool": "tls_handshake", "repetitions": 40,
                           "look_every": 10, "paths": ["direct", "cfr-flow"]}])
    noise = np.random.default_rng(4).normal(0, 0.01, 40)
    recs = _paired_records("c", "handshake_time", {"direct": list(50 + drift),
                                                   "cfr-flow": list(50 + drift + noise)})
    (c,) = analyse(recs, {"demo": d})["comparisons"]
    assert c["verdict"] == "equivalent"
    assert c["test"]["sequential"]["look"] == 1 and c["test"]["sequential"]["blocks"] == 10
    assert abs(c["difference"]["value"]) < 0.02
