"""Raw records -> summaries and path comparisons (the numbers in results.json).

Why a separate step: the runner only measures; this module decides nothing about the network.
It reads records, drops warm-ups, and for every (benchmark, measurement, path, metric, sweep
point) reports n, median, p95, p99 and a bootstrap CI of the median; then compares each path
with the baseline (`direct`) within the same run: difference and ratio of medians with CIs,
TOST equivalence for latency metrics ("no added delay"), a ratio-equivalence test otherwise.
Seeds are derived from the group's names, so re-analysing the same records gives the same
numbers regardless of record order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks import stats
from benchmarks.definitions import AnalysisSpec, BenchmarkDefinition
from benchmarks.registry import PATHS, metric_spec
from benchmarks.schedule import derive_seed
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


def _order(
    keys: Iterable[GroupKey], definitions: Mapping[str, BenchmarkDefinition]
) -> list[GroupKey]:
    """Stable, readable order independent of record order: benchmarks and measurements as
    defined (alphabetical for unknown ones), then sweep point, registry path order, metric."""
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
    seed: int,
) -> dict[str, Any]:
    """One summary row: every figure with unit, n, median, p95, p99 and CI of the median."""
    bench, meas, path, metric, sw = key
    d = stats.describe(values)
    ci = stats.median_ci(
        values, spec.confidence, spec.bootstrap_resamples,
        derive_seed(seed, "summary", bench, meas, path, metric, sw),
    )
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


def compare_pair(
    bench: str, meas: str, metric: str, unit: str, sw: SweepKey, a_path: str, b_path: str,
    a: Sequence[float], b: Sequence[float], spec: AnalysisSpec, seed: int,
) -> dict[str, Any]:
    """B relative to A: difference and ratio of medians with CIs, the equivalence test the
    metric's class calls for, Mann-Whitney for information, and a verdict word."""
    ms = metric_spec(metric, unit)
    s = derive_seed(seed, "compare", bench, meas, metric, sw, a_path, b_path)
    pb = stats.pair_bootstrap(a, b, spec.bootstrap_resamples, s)
    level, resamples = spec.confidence, spec.bootstrap_resamples
    none_ci = stats.CI(None, None, level, resamples=resamples).to_dict()
    if ms.kind == "latency":
        margin = spec.margin_for(metric).resolve(pb.median_a if pb else 0.0)
        test = stats.tost_from_bootstrap(pb, margin, spec.alpha, resamples)
        test_d, verdict = test.to_dict(), test.verdict
    elif ms.kind == "loss":
        # Loss is often 0 on the baseline, where a ratio means nothing: test the difference
        # in percentage points against max(0.1 pp, ratio_margin x baseline).
        margin = max(0.1, spec.ratio_margin * abs(pb.median_a if pb else 0.0))
        test = stats.tost_from_bootstrap(pb, margin, spec.alpha, resamples)
        test_d = test.to_dict()
        verdict = {"slower": "worse", "faster": "better"}.get(test.verdict, test.verdict)
    else:
        rt = stats.ratio_test_from_bootstrap(pb, spec.ratio_margin, spec.alpha, resamples)
        test_d = rt.to_dict()
        words = _LOWER_BETTER if ms.better == "lower" else _HIGHER_BETTER
        verdict = words.get(rt.verdict, rt.verdict)
    test_d["verdict"] = verdict
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
        "median_baseline": pb.median_a if pb else _median_or_none(a),
        "median_path": pb.median_b if pb else _median_or_none(b),
        "difference": {
            "value": pb.diff_value if pb else None,
            "ci": pb.diff_ci(level).to_dict() if pb else none_ci,
        },
        "ratio": {
            "value": pb.ratio_value if pb else None,
            "ci": pb.ratio_ci(level).to_dict() if pb else none_ci,
        },
        "test": test_d,
        "mann_whitney": stats.mann_whitney(a, b),
        "verdict": verdict,
    }


def _median_or_none(x: Sequence[float]) -> float | None:
    return float(np.median(x)) if len(x) else None


def aggregate_verdicts(
    comparisons: Sequence[Mapping[str, Any]], specs: Mapping[str, AnalysisSpec]
) -> dict[str, Any]:
    """Per path, one verdict over all its comparisons with the benchmark's baseline: any
    slower/worse wins; then any inconclusive; all equivalent -> equivalent; else faster/better.
    Latency metrics answer "no added delay"; the rest "no capacity loss"."""
    groups: dict[str, dict[str, dict[str, int]]] = {"no_added_delay": {}, "no_capacity_loss": {}}
    for c in comparisons:
        spec = specs.get(c["benchmark"], AnalysisSpec())
        if c["baseline"] != spec.baseline:
            continue
        group = "no_added_delay" if c["kind"] == "latency" else "no_capacity_loss"
        counts = groups[group].setdefault(c["path"], {})
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    out: dict[str, Any] = {}
    questions = {
        "no_added_delay": "Is each path's latency equivalent to the baseline's "
        "(TOST: 90% CI of the difference of medians within +-margin)?",
        "no_capacity_loss": "Is each path's throughput, rate and cost equivalent to the "
        "baseline's (90% CI of the ratio within 1 +- ratio_margin)?",
    }
    for group, per_path in groups.items():
        paths = {}
        for path, counts in per_path.items():
            if counts.get("slower") or counts.get("worse"):
                verdict = "slower" if group == "no_added_delay" else "worse"
            elif counts.get(stats.NOT_EQUIVALENT) or counts.get(stats.INSUFFICIENT):
                verdict = stats.NOT_EQUIVALENT
            elif set(counts) == {stats.EQUIVALENT}:
                verdict = stats.EQUIVALENT
            else:
                verdict = "faster" if group == "no_added_delay" else "better"
            paths[path] = {"verdict": verdict, "comparisons": sum(counts.values()),
                           "counts": dict(sorted(counts.items()))}
        out[group] = {"question": questions[group], "paths": paths}
    return out


def analyse(
    records: Iterable[Mapping[str, Any]],
    definitions: Mapping[str, BenchmarkDefinition] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """{"summaries": [...], "comparisons": [...], "verdicts": {...}} for results.json.

    `definitions` (by benchmark name) supplies the comparison pairs, margins and bootstrap
    settings; a benchmark without one gets the defaults (every path vs direct)."""
    definitions = definitions or {}
    values, meta = group_records(records)
    specs = {name: d.analysis for name, d in definitions.items()}
    keys = _order(values, definitions)
    summaries = [
        summarise(k, values[k], meta[k], specs.get(k[0], AnalysisSpec()), seed) for k in keys
    ]
    # comparisons: per (benchmark, measurement, metric, sweep), every requested pair present
    paths_of: dict[tuple[str, str, str, SweepKey], list[str]] = defaultdict(list)
    for k in keys:
        paths_of[(k[0], k[1], k[3], k[4])].append(k[2])
    comparisons = []
    for (bench, meas, metric, sw), present in paths_of.items():
        spec = specs.get(bench, AnalysisSpec())
        pairs = spec.compare or tuple((spec.baseline, p) for p in PATHS if p != spec.baseline)
        for a_path, b_path in pairs:
            if a_path not in present or b_path not in present:
                continue
            ka, kb = (bench, meas, a_path, metric, sw), (bench, meas, b_path, metric, sw)
            comparisons.append(compare_pair(
                bench, meas, metric, meta[ka]["unit"], sw, a_path, b_path,
                values[ka], values[kb], spec, seed,
            ))
    return {
        "summaries": summaries,
        "comparisons": comparisons,
        "verdicts": aggregate_verdicts(comparisons, specs),
    }
