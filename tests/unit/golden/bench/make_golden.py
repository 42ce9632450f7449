"""Generate the golden run directories for the benchmark unit tests.

Run once (`python tests/unit/golden/bench/make_golden.py`) and commit the output; the tests
never regenerate it, so a change in the analysis shows up as a diff against these files.

The samples are synthetic but built so every group's median is known *by construction*
(half the values below it, half above, the middle one(s) exactly on it), which lets tests
check exact medians without trusting the code under test. Records go through the real
schedule (interleaved, warm-ups first) and the real RecordWriter.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.definitions import (  # noqa: E402
    DEFINITIONS_DIR,
    BenchmarkDefinition,
    load_definition,
    parse_definition,
)
from benchmarks.records import RecordWriter, make_record  # noqa: E402
from benchmarks.results import build_results, write_results  # noqa: E402
from benchmarks.schedule import plan  # noqa: E402

SEED = 20260101
T0 = 1767225600.0  # 2026-01-01T00:00:00Z
CREATED = "2026-01-01T00:00:00+00:00"

#: direct-path medians and, per metric, how many round trips the operation takes
LATENCY_BASE = {"connect_time": (22.0, 1), "handshake_time": (44.0, 2), "ttfb": (66.5, 3),
                "page_load_time": (180.0, 6), "rtt": (22.0, 1)}
#: extra one-way detour per proxy hop (ms): a proxy adds 2 x detour per round trip
DETOUR_MS = 5.0
PROXY_HOPS = {"direct": 0, "cfr-flow": 0, "cfr-epoch": 0, "cgn": 0, "proxy": 1,
              "proxy-chain": 2}
#: tiny, practically irrelevant offsets (fraction of the median) for the on-path variants
ON_PATH_SHIFT = {"cfr-epoch": 0.001}
OTHER_MEDIANS: dict[str, dict[str, float]] = {
    # metric -> path -> median
    "throughput@tcp_1stream": {"direct": 940.0, "cfr-flow": 936.0, "cfr-epoch": 937.0,
                               "cgn": 938.0, "proxy": 610.0, "proxy-chain": 420.0},
    "throughput@tcp_4streams": {"direct": 945.0, "cfr-flow": 941.0, "cfr-epoch": 942.0,
                                "cgn": 943.0, "proxy": 700.0, "proxy-chain": 505.0},
    "throughput@udp": {"direct": 199.5, "cfr-flow": 199.4, "cfr-epoch": 199.4, "cgn": 199.5},
    "jitter@udp": {"direct": 0.05, "cfr-flow": 0.05, "cfr-epoch": 0.05, "cgn": 0.05},
    "cpu_per_gbit@relay_cpu": {"direct": 0.8, "cfr-flow": 0.9, "cfr-epoch": 0.9, "cgn": 0.85,
                               "proxy": 6.0, "proxy-chain": 12.0},
    "throughput@subscriber_rate": {"direct": 948.0, "cfr-flow": 947.0, "cfr-epoch": 947.5,
                                   "cgn": 947.0},
    "forwarding_cost@forwarding_cost": {"cgn": 1200.0, "cfr-flow": 1210.0, "cfr-epoch": 1205.0},
    "conn_rate@conn_rate": {"direct": 2000.0, "cfr-flow": 1985.0, "cfr-epoch": 1990.0,
                            "cgn": 1990.0, "proxy": 900.0, "proxy-chain": 610.0},
}
ZERO_MEDIAN_METRICS = ("loss", "conn_fail")


def known_median(metric: str, measurement: str, path: str, sweep: dict[str, float]) -> float:
    """The median a group is constructed to have."""
    if metric in LATENCY_BASE:
        base, rtts = LATENCY_BASE[metric]
        extra = rtts * 2 * (DETOUR_MS * PROXY_HOPS[path] + sweep.get("delay_ms", 0.0))
        return round(base * (1 + ON_PATH_SHIFT.get(path, 0.0)) + extra, 4)
    if metric in ZERO_MEDIAN_METRICS:
        return 0.0
    # a measurement added to the shipped definitions after these tables: equal medians on
    # every path (still exact by construction)
    return OTHER_MEDIANS.get(f"{metric}@{measurement}", {}).get(path, 100.0)


def samples_with_median(rng: np.random.Generator, m: float, n: int, rel_sd: float) -> list[float]:
    """n values whose median is exactly m: the middle one (two, for even n) equal m, the rest
    are m -/+ half-normal deviates (sd = rel_sd * m, at least 1e-4), rounded to 4 decimals."""
    if m == 0.0:  # loss-like: mostly zero, a few small positives, median 0
        vals = np.zeros(n)
        k = (n - 1) // 2
        vals[:k] = np.round(rng.uniform(0.001, 0.02, size=k), 4)
        return list(rng.permutation(vals))
    sd = max(rel_sd * m, 1e-4)
    centre = 1 if n % 2 else 2
    k = (n - centre) // 2
    lo = m - np.maximum(np.abs(rng.normal(0, sd, k)), 1e-4)
    hi = m + np.maximum(np.abs(rng.normal(0, sd, k)), 1e-4)
    vals = np.round(np.concatenate([lo, [m] * centre, hi]), 4)
    return [float(v) for v in rng.permutation(vals)]


def write_run(run_dir: Path, definitions: list[BenchmarkDefinition], profile: str,
              seed: int, rel_sd: float = 0.008) -> list[dict[str, Any]]:
    """Raw records for every planned sample of `definitions`, then results.json.

    Returns the expected medians (one entry per group)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    rng = np.random.default_rng(seed)
    expected: list[dict[str, Any]] = []
    ts = T0
    with RecordWriter(run_dir) as w:
        for d in definitions:
            for step in plan(d, seed):
                m = step.measurement
                per_metric: dict[tuple[str, str], list[float]] = {}
                for metric in m.metrics:
                    for path in m.paths:
                        med = known_median(metric, m.name, path, step.sweep)
                        per_metric[(metric, path)] = samples_with_median(
                            rng, med, m.repetitions, rel_sd)
                        expected.append({"benchmark": d.name, "measurement": m.name,
                                         "path": path, "metric": metric,
                                         "sweep": step.sweep, "median": med,
                                         "n": m.repetitions})
                for item in step.schedule:
                    ts += 0.05
                    for metric in m.metrics:
                        if item.warmup:  # warm-ups are slow (cold caches): must be dropped
                            value = known_median(metric, m.name, item.path, step.sweep) * 3 + 1
                        else:
                            value = per_metric[(metric, item.path)][item.rep]
                        w.write(make_record(d.name, m.name, metric, value, item, step.sweep,
                                            ts=round(ts, 3), extra={"golden": True}))
    provenance = {
        "git_commit": "0" * 40, "git_dirty": False, "kernel": "6.1.0-golden",
        "os": "Debian GNU/Linux 12 (bookworm)", "cpu_model": "golden CPU", "cores": 2,
        "tool_versions": {"go": "1.27.0", "iperf3": "3.12", "nft": "1.0.6", "named": None,
                          "tinyproxy": "1.11.1", "python": "3.11.2", "mininet": "2.3.0"},
        "probe": {"netem": False, "nft_nat": True},
        "link_emulation": {"mechanism": "delayline", "calibration": {
            "configured_ms": 10.0, "measured_ms": 10.04, "error_median_ms": 0.04,
            "error_p99_ms": 0.21}},
    }
    from benchmarks.analysis import analyse
    from benchmarks.records import read_records

    analysis = analyse(read_records(run_dir), {d.name: d for d in definitions}, seed)
    results = build_results(
        analysis=analysis, definitions=definitions, provenance=provenance,
        run_id=run_dir.name, profile=profile, seed=seed, created=CREATED,
        parameters={"golden": True}, leak_check={},
    )
    write_results(run_dir, results)
    return expected


def quick_definitions() -> list[BenchmarkDefinition]:
    return [load_definition(DEFINITIONS_DIR / f"{n}.toml", "quick")
            for n in ("latency", "throughput", "connrate")]


def sweep_definition() -> BenchmarkDefinition:
    """latency with a delay sweep, trimmed (connection and ping, 3 paths, 30 blocks with a
    look every 10) to stay small."""
    raw = copy.deepcopy(dict(load_definition(DEFINITIONS_DIR / "latency.toml").raw))
    raw.pop("profiles")
    raw["benchmark"]["paths"] = ["direct", "cfr-flow", "proxy"]
    raw["measurements"] = [dict(m, repetitions=30, warmup=1, look_every=10)
                           for m in raw["measurements"]
                           if m["name"] in ("connection", "icmp_rtt")]
    raw["analysis"]["compare"] = [["direct", "cfr-flow"], ["direct", "proxy"]]
    raw["analysis"].pop("margins")
    raw["plots"] = [p for p in raw["plots"] if p["kind"] != "added_delay"]
    raw["sweep"] = {"link": "detour", "delay_ms": [0.0, 5.0, 20.0, 50.0]}
    d = parse_definition(raw, source="latency-sweep")
    from dataclasses import replace

    return replace(d, profile="full")


def generate(root: Path = HERE, seed: int = SEED) -> dict[str, list[dict[str, Any]]]:
    """Write run_quick/ and run_sweep/ under root; returns and writes expected.json."""
    expected = {
        "run_quick": write_run(root / "run_quick", quick_definitions(), "quick", seed),
        "run_sweep": write_run(root / "run_sweep", [sweep_definition()], "full", seed + 1),
    }
    (root / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    return expected


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    exp = generate(out)
    print({k: len(v) for k, v in exp.items()})
