"""Regression gate: each regression the gate exists for, injected into a copy of the committed
baseline (ci/baselines/quick), fails the build; an unchanged copy passes; the decision rule
has the error rates ci/README.md states (simulation); the CLI passes the gate's options.

Injections edit a copy's raw records AND its results.json rows together, the way a run with
that change would have written them (the gate reads results.json; raw/ stays consistent for
a re-analysis). They select rows by measurement, metric and path name, so they keep working
when the baseline is re-recorded. Measurements the committed baseline does not have yet
(`subscriber_rate`, `forwarding_cost`) are SYNTHESIZED into both copies first, and say so.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from benchmarks.registry import metric_spec
from ci.gate import (
    FLIPPED,
    IMPROVED,
    MISSING,
    OK,
    REGRESSED,
    UNDECIDED,
    GateError,
    GateRow,
    compare,
    load_tolerances,
    main_compare,
)
from ci.gate_change import Estimate, change_between, classify, threshold_for

BASELINE = Path(__file__).resolve().parents[2] / "ci" / "baselines" / "quick"
_LATENCY_CMP = ("direct", "cfr-flow")


# ----------------------------------------------------------------------------- run copies


class RunCopy:
    """A copy of the committed baseline run; edit `results` and `records`, then `save()`."""

    def __init__(self, dst: Path) -> None:
        shutil.copytree(BASELINE, dst)
        self.dir = dst
        self.results: dict[str, Any] = json.loads((dst / "results.json").read_text())
        raw = (dst / "raw" / "measurements.jsonl").read_text().splitlines()
        self.records: list[dict[str, Any]] = [json.loads(line) for line in raw if line]

    def save(self) -> Path:
        (self.dir / "results.json").write_text(json.dumps(self.results, indent=1))
        (self.dir / "raw" / "measurements.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in self.records))
        return self.dir

    def summaries(self, **match: str) -> Iterator[dict[str, Any]]:
        return (s for s in self.results["summaries"] if _matches(s, match))

    def comparisons(self, **match: str) -> Iterator[dict[str, Any]]:
        return (c for c in self.results["comparisons"] if _matches(c, match))

    def margin(self, metric: str, path: str, reference: str = "direct") -> float:
        c = next(self.comparisons(metric=metric, path=path, baseline=reference))
        return float(c["test"]["margin"])


def _matches(row: dict[str, Any], match: dict[str, str]) -> bool:
    return all(row.get(k) == v for k, v in match.items() if v is not None)


def _ci_add(ci: dict[str, Any], d: float) -> None:
    for b in ("low", "high"):
        if ci.get(b) is not None:
            ci[b] += d


def _ci_mul(ci: dict[str, Any], f: float) -> None:
    lo, hi = ci.get("low"), ci.get("high")
    if lo is not None and hi is not None:
        ci["low"], ci["high"] = sorted((lo * f, hi * f))


def _retest(c: dict[str, Any]) -> None:
    """The comparison's verdict from its (edited) test CI, by the analysis's rule."""
    t = c["test"]
    lo, hi, m = t["ci"]["low"], t["ci"]["high"], t["margin"]
    if lo is None or hi is None:
        return
    centre = 0.0 if t["test"] == "tost" else 1.0
    if centre - m <= lo and hi <= centre + m:
        v = "equivalent"
    elif lo > centre or hi < centre:
        up = lo > centre
        if c["kind"] == "latency":
            v = "slower" if up else "faster"
        else:
            v = "worse" if up == (c["better"] == "lower") else "better"
    else:
        v = "not equivalent"
    t["verdict"] = c["verdict"] = v


def shift(run: RunCopy, metric: str, path: str, delta: float,
          measurement: str | None = None) -> RunCopy:
    """Every sample of `path`'s `metric` `delta` larger (metric units): a latency regression."""
    for r in run.records:
        if _matches(r, {"metric": metric, "path": path, "measurement": measurement}) and (
                r["value"] is not None):
            r["value"] += delta
    for s in run.summaries(metric=metric, path=path, measurement=measurement):
        for f in ("median", "p95", "p99", "mean", "min", "max"):
            if s.get(f) is not None:
                s[f] += delta
        _ci_add(s["ci"], delta)
    for c in run.comparisons(metric=metric, measurement=measurement):
        sign = 1.0 if c["path"] == path else -1.0 if c["baseline"] == path else 0.0
        if not sign:
            continue
        c["median_path" if sign > 0 else "median_baseline"] += delta
        d = sign * delta
        c["difference"]["value"] += d
        _ci_add(c["difference"]["ci"], d)
        c["ratio"]["value"] = c["median_path"] / c["median_baseline"]
        _ci_add(c["ratio"]["ci"], d / c["median_baseline"])
        if c["test"]["test"] == "tost":
            if c["test"].get("difference") is not None:
                c["test"]["difference"] += d
            _ci_add(c["test"]["ci"], d)
            _retest(c)
    return run


def scale(run: RunCopy, measurement: str, metric: str, path: str, factor: float) -> RunCopy:
    """Every sample of `path`'s `metric` times `factor`: a throughput, rate or cost change."""
    for r in run.records:
        if _matches(r, {"measurement": measurement, "metric": metric, "path": path}) and (
                r["value"] is not None):
            r["value"] *= factor
    for s in run.summaries(measurement=measurement, metric=metric, path=path):
        for f in ("median", "p95", "p99", "mean", "min", "max"):
            if s.get(f) is not None:
                s[f] *= factor
        _ci_mul(s["ci"], factor)
    for c in run.comparisons(measurement=measurement, metric=metric):
        f = factor if c["path"] == path else 1 / factor if c["baseline"] == path else 0.0
        if not f:
            continue
        c["median_path" if c["path"] == path else "median_baseline"] *= factor
        old = c["difference"]["value"]
        c["difference"]["value"] = c["median_path"] - c["median_baseline"]
        _ci_add(c["difference"]["ci"], c["difference"]["value"] - old)
        c["ratio"]["value"] *= f
        _ci_mul(c["ratio"]["ci"], f)
        if c["test"]["test"] == "ratio":
            if c["test"].get("ratio") is not None:
                c["test"]["ratio"] *= f
            _ci_mul(c["test"]["ci"], f)
            _retest(c)
    return run


def drop(run: RunCopy, **match: str) -> RunCopy:
    """Remove a path, metric or measurement from the run (records, summaries, comparisons)."""
    path = match.pop("path", None)

    def gone(row: dict[str, Any]) -> bool:
        on_path = path is None or path in (row.get("path"), row.get("baseline"))
        return on_path and _matches(row, match)

    run.records = [r for r in run.records if not gone(r)]
    for table in ("summaries", "comparisons"):
        run.results[table] = [x for x in run.results[table] if not gone(x)]
    return run


def synthesize(run: RunCopy, benchmark: str, measurement: str, metric: str, unit: str,
               reference: str, medians: dict[str, float], rel_half_width: float) -> RunCopy:
    """SYNTHETIC rows, not measured: a measurement the committed baseline does not have yet,
    so the rule for it can be tested now. Ten samples per path spread +-rel_half_width around
    the given median, the summary CI +-rel_half_width, each comparison's ratio CI
    +-1.4 rel_half_width (two paths' widths), an equivalence test at 1% margin."""
    if any(run.summaries(measurement=measurement)):
        return run  # a re-recorded baseline has the real rows: test those
    spec = metric_spec(metric, unit)
    level = {"level": 0.95, "method": "synthetic (test)", "resamples": 0}
    for i, (path, m) in enumerate(medians.items()):
        for k, v in enumerate(m * (1 + rel_half_width * np.linspace(-1, 1, 11))):
            if k == 5:
                continue  # ten samples, median = m
            run.records.append({
                "benchmark": benchmark, "measurement": measurement, "path": path,
                "metric": metric, "unit": unit, "value": float(v), "rep": k, "block": k,
                "order": i, "warmup": False, "ts": 1.0e9 + k, "sweep": {},
                "extra": {"synthetic": True}})
        run.results["summaries"].append({
            "benchmark": benchmark, "measurement": measurement, "path": path,
            "metric": metric, "unit": unit, "sweep": {}, "n": 10, "n_failed": 0,
            "n_warmup": 0, "median": m, "p95": m * (1 + rel_half_width),
            "p99": m * (1 + rel_half_width), "mean": m, "min": m * (1 - rel_half_width),
            "max": m * (1 + rel_half_width),
            "ci": {"low": m * (1 - rel_half_width), "high": m * (1 + rel_half_width),
                   **level}})
    ref = medians[reference]
    for path, m in medians.items():
        if path == reference:
            continue
        r, w = m / ref, 1.4 * rel_half_width
        c = {
            "benchmark": benchmark, "measurement": measurement, "metric": metric,
            "unit": unit, "kind": spec.kind, "better": spec.better, "sweep": {},
            "baseline": reference, "path": path, "n_baseline": 10, "n_path": 10,
            "median_baseline": ref, "median_path": m,
            "difference": {"value": m - ref, "ci": {"low": m - ref - w * ref,
                                                    "high": m - ref + w * ref, **level}},
            "ratio": {"value": r, "ci": {"low": r * (1 - w), "high": r * (1 + w), **level}},
            "test": {"test": "ratio", "margin": 0.01, "alpha": 0.05, "ratio": r,
                     "ci": {"low": r * (1 - w), "high": r * (1 + w), **level,
                            "level": 0.9}, "verdict": "equivalent"},
            "mann_whitney": {"u": None, "p_value": None}, "verdict": "equivalent"}
        _retest(c)
        run.results["comparisons"].append(c)
    return run


def with_new_measurements(run: RunCopy) -> RunCopy:
    """The two measurements helper H2 adds, SYNTHESIZED (see `synthesize`): shaped 1 Gbit/s
    subscriber throughput vs direct, and relay CPU per Gbit/s vs cgn."""
    synthesize(run, "throughput", "subscriber_rate", "throughput", "Mbit/s", "direct",
               {"direct": 948.0, "cfr-flow": 947.0, "cfr-epoch": 946.5}, 0.004)
    synthesize(run, "throughput", "forwarding_cost", "forwarding_cost", "ns/packet", "cgn",
               {"cgn": 4600.0, "cfr-flow": 4620.0, "cfr-epoch": 4650.0}, 0.004)
    return run


def pair(tmp_path: Path, synth: bool = False) -> tuple[RunCopy, RunCopy]:
    """(baseline copy, current copy), both with the synthesized measurements if `synth`."""
    base, cur = RunCopy(tmp_path / "baseline"), RunCopy(tmp_path / "current")
    if synth:
        with_new_measurements(base)
        with_new_measurements(cur)
    base.save()
    return base, cur


def failing(rows: list[GateRow]) -> list[GateRow]:
    return [r for r in rows if r.gating and r.verdict in (REGRESSED, UNDECIDED, MISSING,
                                                             FLIPPED)]


def row(rows: list[GateRow], rule: str, path: str, metric: str) -> GateRow:
    return next(r for r in rows if r.rule == rule and r.path == path and r.metric == metric
                and r.figure == "within-run")


# ----------------------------------------------------------------------------- unchanged


def test_unchanged_copy_passes(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    rows, code = compare(base.dir, cur.save())
    assert code == 0, failing(rows)
    gated = [r for r in rows if r.gating]
    assert all(r.verdict == OK and r.change is not None for r in gated)
    # every cfr-* latency comparison against direct of the baseline is gated
    latency = {(c["path"], c["metric"]) for c in base.comparisons(baseline="direct")
               if c["kind"] == "latency" and c["path"].startswith("cfr-")}
    assert {(r.path.split("/")[0], r.metric) for r in gated if r.rule == "added delay"} == \
        latency
    # rules for measurements the baseline predates gate nothing and say so; the rest gate
    rules = {r.name: r for r in load_tolerances().rules}
    measured = {c["measurement"] for c in base.comparisons()}
    unarmed = {n for n, r in rules.items() if r.measurement and r.measurement not in measured}
    assert {r.rule for r in rows if r.figure == "rule"} == unarmed
    assert {r.rule for r in gated} == set(rules) - unarmed


def test_unchanged_copy_with_new_measurements_passes(tmp_path: Path) -> None:
    base, cur = pair(tmp_path, synth=True)
    rows, code = compare(base.dir, cur.save())
    assert code == 0, failing(rows)
    rules = {r.rule for r in rows if r.gating}
    assert {"subscriber rate", "forwarding cost"} <= rules
    assert not [r for r in rows if r.figure == "rule"]
    fc = row(rows, "forwarding cost", "cfr-flow/cgn", "forwarding_cost")
    assert fc.threshold == pytest.approx(1.2)


# ----------------------------------------------------------------------------- latency


@pytest.mark.parametrize("path", ["cfr-flow", "cfr-epoch"])
@pytest.mark.parametrize("metric", ["connect_time", "handshake_time", "ttfb", "page_load_time",
                                    "rtt"])
def test_latency_shift_of_twice_the_margin_fails(tmp_path: Path, path: str,
                                                 metric: str) -> None:
    base, cur = pair(tmp_path)
    if not any(base.comparisons(metric=metric, path=path, baseline="direct")):
        pytest.skip(f"{metric} is not in this baseline")  # a re-recorded baseline may drop it
    delta = 2 * base.margin(metric, path)
    rows, code = compare(base.dir, shift(cur, metric, path, delta).save())
    assert code == 1
    r = row(rows, "added delay", f"{path}/direct", metric)
    assert r.verdict in (REGRESSED, UNDECIDED) and r.gating
    assert r.change == pytest.approx(delta, rel=1e-6)
    assert r.threshold == pytest.approx(delta, rel=1e-6)
    # only that figure moved: every other shift row still passes
    others = [x for x in failing(rows) if x.figure == "within-run" and x is not r]
    assert not others


def test_handshake_plus_one_ms_fails(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    rows, code = compare(base.dir, shift(cur, "handshake_time", "cfr-flow", 1.0).save())
    assert code == 1
    r = row(rows, "added delay", "cfr-flow/direct", "handshake_time")
    assert r.verdict in (REGRESSED, UNDECIDED)
    assert r.change == pytest.approx(1.0)


def test_latency_shift_beyond_ci_is_a_confident_regression(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    delta = 4 * base.margin("handshake_time", "cfr-flow")
    rows, code = compare(base.dir, shift(cur, "handshake_time", "cfr-flow", delta).save())
    r = row(rows, "added delay", "cfr-flow/direct", "handshake_time")
    assert code == 1 and r.verdict == REGRESSED
    assert r.ci_low > r.threshold


def test_latency_shift_well_below_threshold_passes(tmp_path: Path) -> None:
    """A quarter of the margin on the cfr-flow latency figure whose equivalence has the most
    room: neither the shift rule nor the verdict moves."""
    base, cur = pair(tmp_path)

    def room(c: dict[str, Any]) -> float:
        hi = c["test"]["ci"]["high"]
        return -1.0 if hi is None or c["verdict"] != "equivalent" else c["test"]["margin"] - hi

    c = max((c for c in base.comparisons(path="cfr-flow", baseline="direct", kind="latency")),
            key=room)
    delta = 0.25 * c["test"]["margin"]
    assert room(c) > delta, "no cfr-flow latency figure with room for the test"
    rows, code = compare(base.dir, shift(cur, c["metric"], "cfr-flow", delta,
                                         c["measurement"]).save())
    assert code == 0, failing(rows)
    assert row(rows, "added delay", "cfr-flow/direct", c["metric"]).verdict == OK


def test_whole_machine_slower_is_not_a_within_run_regression(tmp_path: Path) -> None:
    """Every path +3 ms on the handshake (a busier machine): within-run differences are
    unchanged, so the gate passes; gating the absolute medians as well fails."""
    base, cur = pair(tmp_path)
    for p in {s["path"] for s in cur.summaries(metric="handshake_time")}:
        shift(cur, "handshake_time", p, 3.0)
    cur.save()
    rows, code = compare(base.dir, cur.dir)
    assert code == 0, failing(rows)
    med = next(r for r in rows if r.figure == "median" and r.path == "cfr-flow"
               and r.metric == "handshake_time")
    assert not med.gating and med.change == pytest.approx(3.0)
    tol = replace(load_tolerances(), gate_on="both")
    rows, code = compare(base.dir, cur.dir, tol)
    assert code == 1
    assert any(r.figure == "median" and r.gating and r.verdict in (REGRESSED, UNDECIDED)
               for r in rows)


# ----------------------------------------------------------------------------- rates, costs


def test_connection_rate_minus_20_percent_fails(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    rows, code = compare(base.dir, scale(cur, "conn_rate", "conn_rate", "cfr-flow", 0.8).save())
    assert code == 1
    r = row(rows, "connection rate", "cfr-flow/direct", "conn_rate")
    assert r.verdict in (REGRESSED, UNDECIDED)
    assert r.change == pytest.approx(0.8) and r.threshold == pytest.approx(0.8)


def test_connection_rate_halved_is_a_confident_regression(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    rows, code = compare(base.dir, scale(cur, "conn_rate", "conn_rate", "cfr-epoch", 0.5).save())
    r = row(rows, "connection rate", "cfr-epoch/direct", "conn_rate")
    assert code == 1 and r.verdict == REGRESSED and r.ci_high < 0.8


def test_subscriber_rate_minus_10_percent_fails(tmp_path: Path) -> None:
    base, cur = pair(tmp_path, synth=True)
    cur = scale(cur, "subscriber_rate", "throughput", "cfr-flow", 0.9)
    rows, code = compare(base.dir, cur.save())
    assert code == 1
    r = row(rows, "subscriber rate", "cfr-flow/direct", "throughput")
    assert r.verdict in (REGRESSED, UNDECIDED)
    assert r.change == pytest.approx(0.9) and r.threshold == pytest.approx(0.9)
    rows, code = compare(base.dir, scale(cur, "subscriber_rate", "throughput", "cfr-flow",
                                         0.85 / 0.9).save())
    assert row(rows, "subscriber rate", "cfr-flow/direct", "throughput").verdict == REGRESSED


def test_subscriber_rate_small_change_passes_the_shift_rule(tmp_path: Path) -> None:
    base, cur = pair(tmp_path, synth=True)
    rows, _ = compare(base.dir, scale(cur, "subscriber_rate", "throughput", "cfr-flow",
                                      0.98).save())
    assert row(rows, "subscriber rate", "cfr-flow/direct", "throughput").verdict == OK


def test_forwarding_cost_plus_20_percent_fails(tmp_path: Path) -> None:
    base, cur = pair(tmp_path, synth=True)
    cur = scale(cur, "forwarding_cost", "forwarding_cost", "cfr-epoch", 1.2)
    rows, code = compare(base.dir, cur.save())
    assert code == 1
    r = row(rows, "forwarding cost", "cfr-epoch/cgn", "forwarding_cost")
    assert r.verdict in (REGRESSED, UNDECIDED)
    assert r.change == pytest.approx(1.2) and r.threshold == pytest.approx(1.2)
    # twice the threshold's distance: confident even with the real baseline's wide CIs
    rows, _ = compare(base.dir, scale(cur, "forwarding_cost", "forwarding_cost", "cfr-epoch",
                                      1.6 / 1.2).save())
    assert row(rows, "forwarding cost", "cfr-epoch/cgn", "forwarding_cost").verdict == REGRESSED


# ----------------------------------------------------------------------------- verdicts


def _an_equivalent(run: RunCopy, ungated: bool) -> dict[str, Any]:
    """An equivalent comparison, preferably one no shift rule gates (ungated) or one it
    does; the other kind if the baseline has none of the preferred."""
    tol = load_tolerances()
    eq = [c for c in run.comparisons() if c["verdict"] == "equivalent"]
    assert eq, "the baseline has no equivalent comparison"
    for c in eq:
        rule = tol.rule_for(c["measurement"], c["metric"], c["kind"], c["path"],
                            c["baseline"])
        if (rule is None) == ungated:
            return c
    return eq[0]


@pytest.mark.parametrize("new_verdict", ["slower", "worse", "faster"])
def test_flip_to_a_decided_verdict_fails_on_any_comparison(tmp_path: Path,
                                                          new_verdict: str) -> None:
    """Only the verdict word changes, on a comparison no shift rule gates (e.g. cgn): a
    decided different answer fails the build on the verdict check alone."""
    base, cur = pair(tmp_path)
    c = _an_equivalent(cur, ungated=True)
    c["verdict"] = c["test"]["verdict"] = new_verdict
    rows, code = compare(base.dir, cur.save())
    assert code == 1
    flips = [r for r in rows if r.verdict == FLIPPED]
    assert [(r.path, r.metric, r.gating) for r in flips] == [
        (f"{c['path']}/{c['baseline']}", c["metric"], True)]
    assert f"equivalent -> {new_verdict}" in flips[0].note
    assert "re-record the baseline" in flips[0].note
    tol = replace(load_tolerances(), fail_on_verdict_flip=False)
    assert compare(base.dir, cur.dir, tol)[1] == 0


@pytest.mark.parametrize("new_verdict", ["not equivalent", "undecided", "insufficient data"])
@pytest.mark.parametrize("gated", [True, False])
def test_flip_to_undecided_fails_only_where_a_rule_gates(tmp_path: Path, new_verdict: str,
                                                        gated: bool) -> None:
    """A run that could not decide is a changed answer only on the relay's gated figures;
    on an information-only one (cgn's connection rate went equivalent -> undecided in a
    real A/A pair) it is listed with a rerun hint and passes."""
    base, cur = pair(tmp_path)
    c = _an_equivalent(cur, ungated=not gated)
    tol = load_tolerances()
    is_gated = tol.rule_for(c["measurement"], c["metric"], c["kind"], c["path"],
                            c["baseline"]) is not None
    c["verdict"] = c["test"]["verdict"] = new_verdict
    rows, code = compare(base.dir, cur.save())
    flips = [r for r in rows if r.verdict == FLIPPED]
    assert len(flips) == 1 and "more repetitions" in flips[0].note
    assert flips[0].gating is is_gated
    assert code == (1 if is_gated else 0)


# ----------------------------------------------------------------------------- missing


def _present(run: RunCopy, key: str, preferred: str) -> str:
    """`preferred` if the baseline has it, else another value of `key` that dropping leaves
    the run with other figures (so the test keeps working on a re-recorded baseline)."""
    values = [s[key] for s in run.summaries()]
    if preferred in values:
        return preferred
    if key == "metric":  # a metric that shares its measurement with another metric
        per_meas: dict[str, set[str]] = {}
        for s in run.summaries():
            per_meas.setdefault(s["measurement"], set()).add(s["metric"])
        return next(sorted(m)[0] for m in per_meas.values() if len(m) > 1)
    return values[-1]


@pytest.mark.parametrize("key, preferred", [("path", "cfr-epoch"), ("path", "cgn"),
                                            ("measurement", "icmp_rtt"), ("metric", "ttfb")])
def test_missing_path_or_metric_fails(tmp_path: Path, key: str, preferred: str) -> None:
    base, cur = pair(tmp_path)
    value = _present(base, key, preferred)
    rows, code = compare(base.dir, drop(cur, **{key: value}).save())
    assert code == 1
    missing = [r for r in rows if r.verdict == MISSING]
    assert missing and all(r.gating for r in missing)
    assert all(value in (r.path if key == "path" else getattr(r, key)) for r in missing)
    tol = replace(load_tolerances(), fail_on_missing=False)
    assert compare(base.dir, cur.dir, tol)[1] == 0


def test_new_figure_is_information_only(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    drop(base, measurement=_present(base, "measurement", "icmp_rtt")).save()
    rows, code = compare(base.dir, cur.save())
    assert code == 0
    assert any(r.figure == "presence" and "new in the current run" in r.note for r in rows)


# ----------------------------------------------------------------------------- too wide


def test_gated_row_too_wide_to_decide_fails_with_rerun_advice(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    c = next(cur.comparisons(measurement="conn_rate", metric="conn_rate", path="cfr-flow"))
    r0 = c["ratio"]["value"]
    c["ratio"]["ci"]["low"], c["ratio"]["ci"]["high"] = r0 * 0.6, r0 * 1.6
    rows, code = compare(base.dir, cur.save())
    assert code == 1
    r = row(rows, "connection rate", "cfr-flow/direct", "conn_rate")
    assert r.verdict == UNDECIDED
    assert r.change == pytest.approx(1.0, abs=1e-9)
    assert "too wide" in r.note and "repetitions" in r.note


def test_gated_row_without_ci_fails_with_rerun_advice(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    c = next(cur.comparisons(metric="ttfb", path="cfr-epoch", baseline="direct"))
    for ci in (c["difference"]["ci"], c["test"]["ci"]):
        ci["low"] = ci["high"] = None  # "insufficient data": too few blocks for any CI
    rows, code = compare(base.dir, cur.save())
    assert code == 1
    r = row(rows, "added delay", "cfr-epoch/direct", "ttfb")
    assert r.verdict == UNDECIDED and "no CI in the current run" in r.note
    assert "repetitions" in r.note


def test_test_ci_stands_in_for_a_missing_comparison_ci(tmp_path: Path) -> None:
    """Five paired blocks give the test's 90% signed-rank CI but no 95% one: the gate uses
    the test's CI (rescaled to 95%) and still catches a shift."""
    base, cur = pair(tmp_path)
    for run in (base, cur):
        c = next(run.comparisons(metric="handshake_time", path="cfr-flow", baseline="direct"))
        c["difference"]["ci"]["low"] = c["difference"]["ci"]["high"] = None
    base.save()
    rows, code = compare(base.dir, cur.save())
    r = row(rows, "added delay", "cfr-flow/direct", "handshake_time")
    assert code == 0 and r.verdict == OK and r.ci_source == "test"
    own = next(base.comparisons(metric="connect_time", path="cfr-flow", baseline="direct"))
    assert own["difference"]["ci"]["low"] is not None
    assert row(rows, "added delay", "cfr-flow/direct", "connect_time").ci_source == "estimate"
    delta = 4 * base.margin("handshake_time", "cfr-flow")
    rows, code = compare(base.dir, shift(cur, "handshake_time", "cfr-flow", delta).save())
    r = row(rows, "added delay", "cfr-flow/direct", "handshake_time")
    assert code == 1 and r.verdict == REGRESSED and r.ci_source == "test"


def test_imprecise_baseline_is_named(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    c = next(base.comparisons(measurement="conn_rate", metric="conn_rate", path="cfr-flow"))
    r0 = c["ratio"]["value"]
    c["ratio"]["ci"]["low"], c["ratio"]["ci"]["high"] = r0 * 0.5, r0 * 2.0
    base.save()
    rows, code = compare(base.dir, cur.save())
    r = row(rows, "connection rate", "cfr-flow/direct", "conn_rate")
    assert code == 1 and r.verdict == UNDECIDED and "re-record the baseline" in r.note


# ----------------------------------------------------------------------------- the rule


def _estimate(d: float, half: float) -> Estimate:
    return Estimate(d, d - half, d + half, 0.95)


def _fails(old: Estimate, new: Estimate, comparator: str, better: str, tol: float) -> bool:
    ch = change_between(old, new, comparator, 0.95)
    assert not isinstance(ch, str)
    return classify(ch, threshold_for(comparator, better, tol))[0] in (REGRESSED, UNDECIDED)


@pytest.mark.parametrize("h_over_t", [0.4, 0.5, 0.68, 0.95])
def test_rule_error_rates_by_simulation(h_over_t: float) -> None:
    """Pairs of runs whose within-run difference is N(mu, s), each with a 95% CI +-1.96 s,
    so the change's CI has half-width h: an unchanged figure fails with the chance
    ci/tolerances.toml states, P(N(0,1) > 1.96 max(T - h, T/2) / h); a change of exactly T
    passes with P(N(0,1) > 1.96 min(h, T/2) / h); a change of 2 T fails > 99%."""
    t, trials = 1.0, 2500
    h = h_over_t * t
    s = h / (1.96 * math.sqrt(2.0))
    rng = np.random.default_rng(14)
    tail = NormalDist().cdf
    aa_fail = 1.0 - tail(1.96 * max(t - h, t / 2) / h)
    t_pass = 1.0 - tail(1.96 * min(h, t / 2) / h)
    for shift_, expect in ((0.0, aa_fail), (t, 1.0 - t_pass), (2 * t, None)):
        old = rng.normal(0.0, s, trials)
        new = rng.normal(shift_, s, trials)
        fails = np.mean([_fails(_estimate(o, 1.96 * s), _estimate(n, 1.96 * s),
                                "difference", "lower", t)
                         for o, n in zip(old, new, strict=True)])
        if expect is None:
            assert fails > 0.99
        else:
            assert abs(fails - expect) < 0.02, (shift_, fails, expect)


def test_rule_too_wide_fails_whatever_the_estimate() -> None:
    """Half-width above the threshold and the CI containing it: undecided even with the
    estimate at or below zero (the row cannot tell no change from a change of T). Only a CI
    wholly short of T passes."""
    for d in (-0.2, 0.0, 0.2):
        ch = change_between(_estimate(0.0, 0.9), _estimate(d, 0.9), "difference", 0.95)
        assert not isinstance(ch, str)
        verdict, note = classify(ch, threshold_for("difference", "lower", 1.0))
        assert verdict == UNDECIDED and "too wide" in note and "repetitions" in note
    ch = change_between(_estimate(0.0, 0.9), _estimate(-0.5, 0.9), "difference", 0.95)
    assert not isinstance(ch, str)
    assert classify(ch, threshold_for("difference", "lower", 1.0))[0] == OK


def test_rule_estimate_below_half_with_admitted_precision_passes_with_a_note() -> None:
    """The CI reaches T, but the estimate is below T/2 and the half-width at most T: ok,
    noted as imprecise (failing it would fail a third of unchanged runs at this precision)."""
    ch = change_between(_estimate(0.0, 0.5), _estimate(0.3, 0.5), "difference", 0.95)
    assert not isinstance(ch, str) and ch.high > 1.0
    verdict, note = classify(ch, threshold_for("difference", "lower", 1.0))
    assert verdict == OK and "imprecise" in note
    ch = change_between(_estimate(0.0, 0.5), _estimate(0.55, 0.5), "difference", 0.95)
    assert not isinstance(ch, str)
    verdict, note = classify(ch, threshold_for("difference", "lower", 1.0))
    assert verdict == UNDECIDED and "likely a regression" in note
    # a larger lean ([gate] lean) lets the same estimate pass, noted
    verdict, note = classify(ch, threshold_for("difference", "lower", 1.0), lean=0.75)
    assert verdict == OK and "imprecise" in note


@pytest.mark.parametrize(
    "old, new, better, tol, verdict",
    [
        ((1.0, 0.98, 1.02), (0.70, 0.68, 0.72), "higher", 0.2, REGRESSED),
        ((1.0, 0.98, 1.02), (0.85, 0.83, 0.87), "higher", 0.2, OK),     # -15% < 20%
        ((1.0, 0.98, 1.02), (0.81, 0.70, 0.92), "higher", 0.2, UNDECIDED),
        ((1.0, 0.98, 1.02), (1.30, 1.28, 1.32), "lower", 0.2, REGRESSED),  # cost +30%
        ((1.0, 0.98, 1.02), (0.70, 0.68, 0.72), "lower", 0.2, IMPROVED),
        ((1.0, 0.9, 1.1), (1.0, 0.9, 1.1), "higher", 0.2, OK),
    ],
)
def test_ratio_rule_table(old: tuple[float, float, float], new: tuple[float, float, float],
                          better: str, tol: float, verdict: str) -> None:
    ch = change_between(Estimate(*old, 0.95), Estimate(*new, 0.95), "ratio", 0.95)
    assert not isinstance(ch, str)
    assert classify(ch, threshold_for("ratio", better, tol))[0] == verdict


def test_mover_combines_two_cis() -> None:
    """Symmetric CIs combine by root-sum-square; a 90% CI is widened to the 95% level."""
    ch = change_between(_estimate(1.0, 0.3), _estimate(1.5, 0.4), "difference", 0.95)
    assert not isinstance(ch, str)
    assert (ch.value, ch.low, ch.high) == pytest.approx((0.5, 0.0, 1.0))
    z = NormalDist().inv_cdf(0.975) / NormalDist().inv_cdf(0.95)
    ch90 = change_between(Estimate(1.0, 0.7, 1.3, 0.90), Estimate(1.0, 0.7, 1.3, 0.90),
                          "difference", 0.95)
    assert not isinstance(ch90, str)
    assert ch90.high == pytest.approx(math.sqrt(2) * 0.3 * z)
    assert isinstance(change_between(Estimate(1.0, None, None, 0.95), _estimate(1.0, 0.1),
                                     "difference", 0.95), str)


# ----------------------------------------------------------------------------- tolerances


def test_default_tolerances_table() -> None:
    t = load_tolerances()
    assert t.gate_on == "ratios" and t.fail_on_missing and t.fail_on_verdict_flip
    assert t.lean == 0.5 and t.confidence == 0.95
    by = {r.name: r for r in t.rules}
    assert by["added delay"].margin_factor == 2.0 and by["added delay"].paths == ("cfr-*",)
    assert by["subscriber rate"].max_change == 0.10
    assert by["connection rate"].max_change == 0.20
    assert by["forwarding cost"].max_change == 0.20
    assert all(r.why for r in t.rules)
    assert t.rule_for("connection", "handshake_time", "latency", "cfr-flow", "direct") is \
        by["added delay"]
    assert t.rule_for("connection", "handshake_time", "latency", "cgn", "direct") is None
    assert t.rule_for("connection", "handshake_time", "latency", "cfr-flow", "proxy") is None


@pytest.mark.parametrize("text, word", [
    ("[gate]\nfail_on_mising = true\n", "fail_on_mising"),
    ("[gate]\ngate_on = 'all'\n", "gate_on"),
    ("[[rule]]\nname = 'x'\nmax_change = 0.1\nmargin_factor = 2\n", "exactly one"),
    ("[[rule]]\nname = 'x'\n", "exactly one"),
    ("[[rule]]\nname = 'x'\nmax_change = 1.5\n", "max_change"),
    ("[[rule]]\nname = 'x'\nkinds = ['latencyy']\nmax_change = 0.1\n", "latencyy"),
    ("[[rule]]\nname = 'x'\nmetricc = 'rtt'\nmax_change = 0.1\n", "metricc"),
    ("[gate]\nconfidence = 1.5\n", "confidence"),
    ("[gate]\nlean = 0\n", "lean"),
    ("[gate]\nlean = 'half'\n", "lean"),
])
def test_bad_tolerances_are_named(tmp_path: Path, text: str, word: str) -> None:
    f = tmp_path / "tol.toml"
    f.write_text(text)
    with pytest.raises(GateError, match=word):
        load_tolerances(f)


# ----------------------------------------------------------------------------- command line


def test_main_compare_outputs(tmp_path: Path) -> None:
    base, cur = pair(tmp_path)
    shift(cur, "handshake_time", "cfr-flow", 4 * base.margin("handshake_time", "cfr-flow"))
    cur.save()
    out, md = tmp_path / "gate.json", tmp_path / "summary.md"
    md.write_text("# earlier step\n")
    con = Console(record=True, width=250)
    code = main_compare([str(base.dir), str(cur.dir), "--json", str(out), "--markdown",
                         str(md)], console=con)
    assert code == 1
    text = con.export_text()
    assert "regressed" in text and "FAIL" in text and "added delay" in text
    data = json.loads(out.read_text())
    assert data["exit_code"] == 1 and data["gate_on"] == "ratios"
    bad = [r for r in data["rows"] if r["gating"] and r["verdict"] == REGRESSED]
    assert [(r["path"], r["metric"]) for r in bad] == [("cfr-flow/direct", "handshake_time")]
    summary = md.read_text()
    assert summary.startswith("# earlier step\n")  # appended, as $GITHUB_STEP_SUMMARY needs
    assert "## Regression gate: FAIL" in summary and "| ❌ regressed |" in summary


def test_main_compare_unreadable_inputs_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    con = Console(record=True)
    assert main_compare([str(tmp_path / "missing"), str(BASELINE)], console=con) == 2
    assert "baseline" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main_compare([str(BASELINE), str(bad)], console=con) == 2
    assert "current" in capsys.readouterr().err
    tol = tmp_path / "tol.toml"
    tol.write_text("[info]\nmax_chang = 0.1\n")
    assert main_compare([str(BASELINE), str(BASELINE), "--tolerances", str(tol)],
                        console=con) == 2
    assert "max_chang" in capsys.readouterr().err
    assert main_compare(["--no-such-flag"], console=con) == 2


def test_cfrbench_compare_passes_the_gate_options(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Through the `cfrbench` entry point: --json, --markdown and --gate-on reach the gate
    (they used to be rejected as unrecognized arguments)."""
    from cfrbench.cli import main

    base, cur = pair(tmp_path)
    for p in {s["path"] for s in cur.summaries(metric="handshake_time")}:
        shift(cur, "handshake_time", p, 3.0)  # absolute shift only: within-run unchanged
    cur.save()
    out, md = tmp_path / "g.json", tmp_path / "g.md"
    assert main(["compare", str(base.dir), str(cur.dir), "--json", str(out),
                 "--markdown", str(md)]) == 0
    assert json.loads(out.read_text())["exit_code"] == 0 and "PASS" in md.read_text()
    assert main(["compare", str(base.dir), str(cur.dir), "--gate-on", "medians",
                 "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["gate_on"] == "medians"
    assert {r["figure"] for r in data["rows"] if r["gating"]} >= {"median"}
    assert main(["compare", str(base.dir), str(cur.dir), "--gate-on", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    tol = tmp_path / "strict.toml"
    tol.write_text("[[rule]]\nname = 'any latency'\nkinds = ['latency']\nmargin_factor = 0.1\n")
    assert main(["compare", str(base.dir), str(cur.dir), "--tolerances", str(tol),
                 "--gate-on", "medians"]) == 1
