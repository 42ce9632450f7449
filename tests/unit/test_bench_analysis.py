"""Analysis of the golden run: exact medians known by construction, warm-ups dropped, CIs
that contain the truth, the expected verdicts, and byte-stable re-analysis."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

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
        assert s["n_warmup"] >= 1  # golden runs have warm-ups in every group
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
    hs = comps[("tls_handshake", "handshake_time", "direct", "proxy")]
    assert hs["difference"]["value"] == pytest.approx(20.0)  # 2 RTTs x 2 x 5 ms detour
    assert hs["difference"]["ci"]["low"] < 20.0 < hs["difference"]["ci"]["high"]
    assert hs["test"]["test"] == "tost" and hs["verdict"] == "slower"
    tp = comps[("tcp_1stream", "throughput", "direct", "proxy")]
    assert tp["test"]["test"] == "ratio" and tp["verdict"] == "worse"
    assert tp["ratio"]["ci"]["low"] < 610 / 940 < tp["ratio"]["ci"]["high"]
    assert comps[("tcp_1stream", "throughput", "direct", "cfr-flow")]["verdict"] == "equivalent"
    assert comps[("relay_cpu", "cpu_per_gbit", "direct", "proxy")]["verdict"] == "worse"
    assert comps[("udp", "loss", "direct", "cfr-flow")]["test"]["test"] == "tost"
    # the extra pair of the definition (proxy -> cfr-flow) is compared too
    assert comps[("tls_handshake", "handshake_time", "proxy", "cfr-flow")]["verdict"] == "faster"
    # icmp has no proxy samples, so no proxy comparison
    assert ("icmp_rtt", "rtt", "direct", "proxy") not in comps


def test_sweep_points_are_analysed_separately() -> None:
    _, _, analysis = _analysed("run_sweep")
    pts = sorted({c["sweep"]["delay_ms"] for c in analysis["comparisons"]})
    assert pts == [0.0, 5.0, 20.0, 50.0]
    for c in analysis["comparisons"]:
        assert c["verdict"] == ("slower" if c["path"] == "proxy" else "equivalent")


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
