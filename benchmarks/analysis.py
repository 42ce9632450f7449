"""Raw records -> summaries and path comparisons (the numbers in results.json).

Why a separate step: the runner only measures; this module decides nothing about the network.
It reads records, drops warm-ups, and for every (benchmark, measurement, path, metric, sweep
point) reports n, median, p95, p99 and the order-statistic CI of the median; then compares
path pairs within the same run on their per-block differences (both paths measured in the
same block): the median of the per-block differences (B - A) and ratios (B / A, from log
ratios) with sign-test (order-statistic) CIs, and the verdict of the sequential equivalence
test (benchmarks/sequential.py)
the runner used to decide when to stop. Re-analysing the finished records replays the same
looks, so it reaches the runner's decisions, in any record order.

Verdicts: latency "equivalent" / "slower" / "faster" ("no added delay"); throughput, rate,
loss and cost "equivalent" / "worse" / "better"; "undecided" (with the samples per path it
would need) when the budget ran out first; "insufficient data" below the n at which the
interval exists; "report only" for measurements that never give a verdict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks import paths as path_table
from benchmarks import sequential, stats
from benchmarks.definitions import AnalysisSpec, BenchmarkDefinition, Measurement
from benchmarks.registry import PATHS, MetricSpec, metric_spec
from testbed.errors import UsageError

SweepKey = tuple[tuple[str, float], ...]
GroupKey = tuple[str, str, str, str, SweepKey]  # benchmark, measurement, path, metric, sweep

#: verdict words by metric direction, for the "above"/"below" outcomes of a test on B vs A
_LOWER_BETTER = {"higher": "worse", "lower": "better"}
_HIGHER_BETTER = {"higher": "better", "lower": "worse"}


def sweep_key(sweep: Mapping[str, float]) -> SweepKey:
    return tuple(sorted((k, float(v)) for k, v in sweep.items()))


def group_records(
    records: Iterable[Mapping[str, Any]],
) -> tuple[dict[GroupKey, list[float]], dict[GroupKey, dict[str, Any]]]:
    """Measured values per group (warm-ups dropped, failed samples counted apart), and per
    group its unit and counts. Raises UsageError if one group mixes units."""
    values: dict[GroupKey, list[float]] = defaultdict(list)
    meta: dict[GroupKey, dict[str, Any]] = {}
    for r in records:
        key = (r["benchmark"], r["measurement"], r["path"], r["metric"], sweep_key(r["sweep"]))
        m = meta.setdefault(key, {"unit": r["unit"], "n_failed": 0, "n_warmup": 0})
        if m["unit"] != r["unit"]:
            raise UsageError(f"records of {key[:4]} mix units {m['unit']} and {r['unit']}")
        if r["warmup"]:
            m["n_warmup"] += 1
        elif r["value"] is None:
            m["n_failed"] += 1
        else:
            values[key].append(float(r["value"]))
    for key in meta:
        values.setdefault(key, [])
    return dict(values), meta


#: per group: measured block -> (rep, value), failed samples and warm-ups left out
Blocks = dict[int, tuple[int, float]]


def block_values(records: Iterable[Mapping[str, Any]]) -> dict[GroupKey, Blocks]:
    """Measured values per group keyed by their block, for pairing paths block by block."""
    out: dict[GroupKey, Blocks] = defaultdict(dict)
    for r in records:
        if r["warmup"] or r["value"] is None:
            continue
        key = (r["benchmark"], r["measurement"], r["path"], r["metric"], sweep_key(r["sweep"]))
        out[key][int(r["block"])] = (int(r["rep"]), float(r["value"]))
    return dict(out)


def _order(
    keys: Iterable[GroupKey], definitions: Mapping[str, BenchmarkDefinition]
) -> list[GroupKey]:
    """Stable, readable order independent of record order: benchmarks and measurements as
    defined (alphabetical for unknown ones), then sweep point, path-table order, metric."""
    path_rank = {p: i for i, p in enumerate(PATHS)}
    bench_rank = {b: i for i, b in enumerate(definitions)}
    meas_rank = {(b, m.name): i for b, d in definitions.items()
                 for i, m in enumerate(d.measurements)}
    return sorted(
        keys,
        key=lambda k: (bench_rank.get(k[0], len(bench_rank)), k[0],
                       meas_rank.get((k[0], k[1]), len(meas_rank)), k[1],
                       k[4], path_rank.get(k[2], 99), k[3]),
    )


def summarise(
    key: GroupKey, values: Sequence[float], meta: Mapping[str, Any], spec: AnalysisSpec,
) -> dict[str, Any]:
    """One summary row: every figure with unit, n, median, p95, p99 and CI of the median."""
    bench, meas, path, metric, sw = key
    d = stats.describe(values)
    ci = stats.median_ci(values, spec.confidence)
    return {
        "benchmark": bench,
        "measurement": meas,
        "path": path,
        "metric": metric,
        "unit": meta["unit"],
        "sweep": dict(sw),
        "n": d.n,
        "n_failed": meta["n_failed"],
        "n_warmup": meta["n_warmup"],
        "median": d.median,
        "p95": d.p95,
        "p99": d.p99,
        "mean": d.mean,
        "min": d.min,
        "max": d.max,
        "ci": ci.to_dict(),
    }


def comparison_scale(ms: MetricSpec) -> str:
    """How B is compared with A: "difference" for latency and loss (ms, percentage points,
    often 0 on the baseline), "ratio" (log scale) for throughput, rates, jitter and cost."""
    return "difference" if ms.kind in ("latency", "loss") else "ratio"


def paired_diffs(a: Blocks, b: Blocks, scale: str) -> list[tuple[int, float]]:
    """(rep, B - A) or (rep, log(B / A)) for every block both paths measured, in block order.
    A ratio needs positive values: blocks with a value <= 0 are left out."""
    out = []
    for block in sorted(set(a) & set(b)):
        rep, va = a[block]
        _, vb = b[block]
        if scale == "ratio":
            if va <= 0 or vb <= 0:
                continue
            out.append((rep, math.log(vb / va)))
        else:
            out.append((rep, vb - va))
    return out


def region_for(ms: MetricSpec, metric: str, spec: AnalysisSpec, measurement: Measurement | None,
               a: Blocks) -> Callable[[int], sequential.Region]:
    """The equivalence region after `blocks` measured blocks. Latency: +-max(abs_ms, rel x
    median of A so far); loss: +-max(0.1 pp, ratio_margin x median of A so far); ratios:
    [log(1 - m), log(1 + m)]."""
    scale = comparison_scale(ms)

    def baseline_median(blocks: int) -> float:
        vals = [v for rep, v in a.values() if rep < blocks]
        return float(np.median(vals)) if vals else 0.0

    if ms.kind == "latency":
        margin_spec = spec.margin_for(metric, measurement)

        def latency(blocks: int) -> sequential.Region:
            m = margin_spec.resolve(baseline_median(blocks))
            return sequential.Region(-m, m, m, False)
        return latency
    ratio_margin = spec.ratio_margin_for(metric, measurement)
    if scale == "difference":
        def loss(blocks: int) -> sequential.Region:
            m = max(0.1, ratio_margin * abs(baseline_median(blocks)))
            return sequential.Region(-m, m, m, False)
        return loss
    fixed = sequential.Region(math.log1p(-ratio_margin), math.log1p(ratio_margin),
                              ratio_margin, True)
    return lambda _blocks: fixed


def look_plan(measurement: Measurement | None, spec: AnalysisSpec,
              blocks_seen: int) -> sequential.LookPlan:
    """The measurement's plan; without a definition, one look over the blocks seen."""
    if measurement is None:
        return sequential.LookPlan(max(1, blocks_seen), None, spec.alpha)
    return sequential.LookPlan(measurement.repetitions, measurement.look_every, spec.alpha)


def decide(ms: MetricSpec, metric: str, spec: AnalysisSpec, measurement: Measurement | None,
           a: Blocks, b: Blocks, available_blocks: int | None = None) -> sequential.Decision:
    """The sequential test of B vs A for one metric (shared by the runner and analyse)."""
    diffs = paired_diffs(a, b, comparison_scale(ms))
    seen = 1 + max((rep for rep, _ in (*a.values(), *b.values())), default=0)
    plan = look_plan(measurement, spec, seen)
    return sequential.run(diffs, region_for(ms, metric, spec, measurement, a), plan,
                          available_blocks)


def verdict_word(raw: str, ms: MetricSpec) -> str:
    """above/below -> slower/faster (latency) or worse/better by the metric's direction."""
    if ms.kind == "latency":
        return {sequential.ABOVE: stats.SLOWER, sequential.BELOW: stats.FASTER}.get(raw, raw)
    words = _LOWER_BETTER if ms.better == "lower" else _HIGHER_BETTER
    return words.get({sequential.ABOVE: "higher", sequential.BELOW: "lower"}.get(raw, raw), raw)


def _estimate(diffs: Sequence[tuple[int, float]], level: float, log_scale: bool
              ) -> dict[str, Any]:
    shift = stats.paired_median_shift([d for _, d in diffs], level, exact=False)
    ci = shift.ci
    if log_scale:
        value = None if shift.estimate is None else math.exp(shift.estimate)
        ci = stats.CI(None if ci.low is None else math.exp(ci.low),
                      None if ci.high is None else math.exp(ci.high), ci.level, ci.method, 0)
        return {"value": value, "ci": ci.to_dict()}
    return {"value": shift.estimate, "ci": ci.to_dict()}


def compare_pair(
    bench: str, meas: str, metric: str, unit: str, sw: SweepKey, a_path: str, b_path: str,
    a: Blocks, b: Blocks, spec: AnalysisSpec, measurement: Measurement | None = None,
    in_verdict: bool = True,
) -> dict[str, Any]:
    """B relative to A: median paired shift and ratio with CIs (at the analysis' confidence,
    all paired blocks), the sequential equivalence test and its verdict, Mann-Whitney for
    information."""
    ms = metric_spec(metric, unit)
    report_only = bool(measurement and measurement.report_only)
    decision = decide(ms, metric, spec, measurement, a, b)
    scale = comparison_scale(ms)
    log_ci = decision.ci
    if decision.region is not None and decision.region.log_scale:
        log_ci = stats.CI(None if log_ci.low is None else math.exp(log_ci.low),
                          None if log_ci.high is None else math.exp(log_ci.high),
                          log_ci.level, log_ci.method, 0)
    verdict = stats.REPORT_ONLY if report_only else verdict_word(decision.verdict, ms)
    margin = decision.region.margin if decision.region is not None else 0.0
    test: dict[str, Any] = {
        "test": "tost" if scale == "difference" else "ratio",
        "margin": margin,
        "alpha": decision.plan.alpha_per_look,
        "ci": log_ci.to_dict(),
        "verdict": verdict,
        "sequential": {**decision.plan.to_dict(), "look": decision.look,
                       "blocks": decision.blocks, "n": decision.n,
                       "stopped_early": decision.stopped_early},
    }
    if scale == "difference":
        test["difference"] = decision.estimate
    else:
        test["ratio"] = None if decision.estimate is None else math.exp(decision.estimate)
    va = [v for _, v in sorted(a.values())]
    vb = [v for _, v in sorted(b.values())]
    diff_pairs = paired_diffs(a, b, "difference")
    ratio_pairs = paired_diffs(a, b, "ratio")
    return {
        "benchmark": bench,
        "measurement": meas,
        "metric": metric,
        "unit": unit,
        "kind": ms.kind,
        "better": ms.better,
        "sweep": dict(sw),
        "baseline": a_path,
        "path": b_path,
        "n_baseline": len(a),
        "n_path": len(b),
        "median_baseline": _median_or_none(va),
        "median_path": _median_or_none(vb),
        "difference": _estimate(diff_pairs, spec.confidence, False),
        "ratio": _estimate(ratio_pairs, spec.confidence, True),
        "test": test,
        "mann_whitney": stats.mann_whitney(va, vb),
        "verdict": verdict,
        "samples_needed": None if report_only else decision.samples_needed,
        "in_verdict": in_verdict and not report_only,
    }


def _median_or_none(x: Sequence[float]) -> float | None:
    return float(np.median(x)) if len(x) else None


def verdict_text(verdict: str, samples_needed: int | None) -> str:
    """The verdict as printed: `undecided (needs ~N samples)` names the samples per path."""
    if verdict == stats.UNDECIDED and samples_needed:
        return f"undecided (needs ~{samples_needed} samples)"
    return verdict


_UNDECIDED_WORDS = (stats.UNDECIDED, stats.NOT_EQUIVALENT)


def aggregate_verdicts(comparisons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per path, one verdict over all its comparisons that carry a verdict (`in_verdict`:
    against the benchmark's baseline, or a measurement's own pairs; never report-only):
    any slower/worse wins; then undecided (needing the most samples of its comparisons);
    then insufficient data; all equivalent -> equivalent; else faster/better.
    Latency metrics answer "no added delay"; the rest "no capacity loss"."""
    groups: dict[str, dict[str, dict[str, int]]] = {"no_added_delay": {}, "no_capacity_loss": {}}
    needed: dict[tuple[str, str], int] = {}
    for c in comparisons:
        if not c.get("in_verdict", True):
            continue
        group = "no_added_delay" if c["kind"] == "latency" else "no_capacity_loss"
        counts = groups[group].setdefault(c["path"], {})
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
        if c["verdict"] == stats.UNDECIDED and c.get("samples_needed"):
            key = (group, c["path"])
            needed[key] = max(needed.get(key, 0), int(c["samples_needed"]))
    out: dict[str, Any] = {}
    questions = {
        "no_added_delay": "Is each path's latency equivalent to the baseline's "
        "(sequential TOST on paired blocks: the CI of the median per-block shift within "
        "+-margin, alpha corrected for the looks)?",
        "no_capacity_loss": "Is each path's throughput, rate and cost equivalent to its "
        "comparison path's (CI of the paired ratio within 1 +- ratio_margin, alpha corrected "
        "for the looks)?",
    }
    for group, per_path in groups.items():
        paths = {}
        for path, counts in per_path.items():
            entry: dict[str, Any] = {}
            if counts.get("slower") or counts.get("worse"):
                verdict = "slower" if group == "no_added_delay" else "worse"
            elif any(counts.get(w) for w in _UNDECIDED_WORDS):
                verdict = stats.UNDECIDED
                if (group, path) in needed:
                    entry["samples_needed"] = needed[(group, path)]
            elif counts.get(stats.INSUFFICIENT):
                verdict = stats.INSUFFICIENT
            elif set(counts) == {stats.EQUIVALENT}:
                verdict = stats.EQUIVALENT
            else:
                verdict = "faster" if group == "no_added_delay" else "better"
            paths[path] = {"verdict": verdict, "comparisons": sum(counts.values()),
                           "counts": dict(sorted(counts.items())), **entry}
        out[group] = {"question": questions[group], "paths": paths}
    return out


def _measurement(definitions: Mapping[str, BenchmarkDefinition], bench: str,
                 meas: str) -> Measurement | None:
    d = definitions.get(bench)
    if d is None:
        return None
    for m in d.measurements:
        if m.name == meas:
            return m
    return None


def analyse(
    records: Iterable[Mapping[str, Any]],
    definitions: Mapping[str, BenchmarkDefinition] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """{"summaries": [...], "comparisons": [...], "verdicts": {...}} for results.json.

    `definitions` (by benchmark name) supply the comparison pairs, margins and sequential
    budgets; a benchmark without one gets the defaults (every path vs direct, one look).
    `seed` is accepted for the callers' signature: every interval here is exact, none is
    resampled, so the results do not depend on it."""
    del seed
    definitions = definitions or {}
    records = list(records)
    values, meta = group_records(records)
    by_block = block_values(records)
    specs = {name: d.analysis for name, d in definitions.items()}
    keys = _order(values, definitions)
    summaries = [summarise(k, values[k], meta[k], specs.get(k[0], AnalysisSpec())) for k in keys]
    paths_of: dict[tuple[str, str, str, SweepKey], list[str]] = defaultdict(list)
    for k in keys:
        paths_of[(k[0], k[1], k[3], k[4])].append(k[2])
    comparisons = []
    for (bench, meas, metric, sw), present in paths_of.items():
        spec = specs.get(bench, AnalysisSpec())
        measurement = _measurement(definitions, bench, meas)
        if measurement is not None:
            pairs = spec.pairs_for(measurement)
        else:
            pairs = spec.compare or tuple(
                (base, p) for p in PATHS
                if p != (base := path_table.baseline_for(p, spec.baseline)))
        own_pairs = bool(measurement and measurement.compare)
        for a_path, b_path in pairs:
            if a_path not in present or b_path not in present:
                continue
            ka, kb = (bench, meas, a_path, metric, sw), (bench, meas, b_path, metric, sw)
            comparisons.append(compare_pair(
                bench, meas, metric, meta[ka]["unit"], sw, a_path, b_path,
                by_block.get(ka, {}), by_block.get(kb, {}), spec, measurement,
                in_verdict=own_pairs or a_path == path_table.baseline_for(a_path,
                                                                          spec.baseline),
            ))
    return {
        "summaries": summaries,
        "comparisons": comparisons,
        "verdicts": aggregate_verdicts(comparisons),
    }
