"""Performance-regression gate: compare a current run with a baseline run.

Why ratios: absolute times from shared machines drift between runs far more than the effects
we care about, but both paths of a within-run ratio (e.g. cfr-flow / direct, run interleaved)
drift together. So the gate compares each run's path ratios (gating by default) and reports
the raw medians for information. A metric only "regresses" when the whole CI of its change is
beyond the tolerance: noise alone never fails the build.

Exit status of `main_compare`: 0 no regression, 1 regression (or a missing metric with
fail_on_missing), 2 unreadable/invalid baseline, current run or tolerances file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from benchmarks import stats
from benchmarks.analysis import group_records, sweep_key
from benchmarks.records import read_records
from benchmarks.registry import metric_spec
from benchmarks.results import load_results, results_path
from benchmarks.schedule import derive_seed
from testbed.errors import CfrbenchError, UsageError

DEFAULT_TOLERANCES = Path(__file__).resolve().parent / "tolerances.toml"
GATE_ON = ("ratios", "medians", "both")
OK, REGRESSED, IMPROVED, MISSING = "ok", "regressed", "improved", "missing"
_GATE_KEYS = ("gate_on", "fail_on_missing", "confidence", "resamples", "seed")
_KINDS = ("latency", "throughput", "rate", "cpu", "jitter", "loss")


class GateError(UsageError):
    """A results or tolerances file the gate cannot use (exit status 2)."""


@dataclass(frozen=True)
class Tolerances:
    """Per-class and per-metric tolerances plus gate settings (see ci/tolerances.toml)."""

    kind: Mapping[str, float] = field(default_factory=lambda: {
        "latency": 0.10, "throughput": 0.10, "rate": 0.10, "cpu": 0.20, "jitter": 0.50,
        "loss": 1.0})
    metric: Mapping[str, float] = field(default_factory=dict)
    gate_on: str = "ratios"
    fail_on_missing: bool = False
    confidence: float = 0.95
    resamples: int = 5000
    seed: int = 0

    def for_metric(self, metric: str, unit: str | None = None) -> float:
        if metric in self.metric:
            return self.metric[metric]
        return self.kind.get(metric_spec(metric, unit).kind, 0.10)


def load_tolerances(path: str | Path | None = None) -> Tolerances:
    """Read a tolerances TOML (default ci/tolerances.toml); GateError on unknown keys."""
    path = Path(path) if path is not None else DEFAULT_TOLERANCES
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise GateError(f"{path}: cannot read tolerances: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise GateError(f"{path}: invalid TOML: {e}") from e
    for key in data:
        if key not in ("gate", "kind", "metric"):
            raise GateError(f"{path}: unknown key '{key}'; allowed: gate, kind, metric")
    gate = data.get("gate", {})
    for key in gate:
        if key not in _GATE_KEYS:
            raise GateError(f"{path}: unknown key 'gate.{key}'; allowed: {', '.join(_GATE_KEYS)}")
    kinds = dict(Tolerances().kind)
    for key, v in data.get("kind", {}).items():
        if key not in _KINDS:
            raise GateError(f"{path}: unknown key 'kind.{key}'; allowed: {', '.join(_KINDS)}")
        kinds[key] = _tolerance(path, f"kind.{key}", v)
    metrics = {k: _tolerance(path, f"metric.{k}", v) for k, v in data.get("metric", {}).items()}
    gate_on = gate.get("gate_on", "ratios")
    if gate_on not in GATE_ON:
        raise GateError(f"{path}: invalid gate.gate_on={gate_on!r}; allowed: {', '.join(GATE_ON)}")
    return Tolerances(
        kind=kinds, metric=metrics, gate_on=gate_on,
        fail_on_missing=bool(gate.get("fail_on_missing", False)),
        confidence=float(gate.get("confidence", 0.95)),
        resamples=int(gate.get("resamples", 5000)), seed=int(gate.get("seed", 0)),
    )


def _tolerance(path: Path, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise GateError(f"{path}: {key} must be a number >= 0, got {v!r}")
    return float(v)


@dataclass
class GateRow:
    """One compared figure. `kind` is "ratio" (a path ratio B/A of each run) or "median"
    (a raw median); `change` is new/old (or new-old for loss), with its CI."""

    kind: str
    benchmark: str
    measurement: str
    metric: str
    unit: str
    sweep: str
    path: str
    old: float | None
    new: float | None
    change: float | None
    ci_low: float | None
    ci_high: float | None
    comparator: str  # "ratio" | "difference"
    tolerance: float
    verdict: str
    gating: bool
    source: str  # "raw" | "stored" | ""
    note: str = ""


# ----------------------------------------------------------------------------- loading


@dataclass
class _Run:
    results: dict[str, Any]
    raw: dict[Any, list[float]] | None


def _load_run(source: str | Path, label: str) -> _Run:
    try:
        results = load_results(source)
    except CfrbenchError as e:
        raise GateError(f"{label}: {e}") from e
    run_dir = results_path(source).parent
    raw = None
    try:
        raw, _ = group_records(read_records(run_dir))
    except CfrbenchError:
        raw = None  # no or unreadable raw/: fall back to the stored CIs
    return _Run(results, raw)


# ----------------------------------------------------------------------------- verdicts


def _verdict(lo: float | None, hi: float | None, better: str, comparator: str,
             tol: float) -> str:
    """Regressed/improved only if the whole CI of the change is beyond the tolerance."""
    if lo is None or hi is None:
        return OK
    if comparator == "difference":  # change = new - old, tolerance in the metric's unit
        if better == "lower":
            return REGRESSED if lo > tol else IMPROVED if hi < -tol else OK
        return REGRESSED if hi < -tol else IMPROVED if lo > tol else OK
    if better == "lower":
        return REGRESSED if lo > 1 + tol else IMPROVED if hi < 1 - tol else OK
    return REGRESSED if hi < 1 - tol else IMPROVED if lo > 1 + tol else OK


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _percentiles(boot: np.ndarray, level: float) -> tuple[float | None, float | None]:
    ci = stats.percentile_ci(boot, level)
    return ci.low, ci.high


# ----------------------------------------------------------------------------- rows


def _sweep_text(sw: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(sw.items())) or "-"


def _median_rows(base: _Run, cur: _Run, tol: Tolerances) -> list[GateRow]:
    def key(s: Mapping[str, Any]) -> tuple[Any, ...]:
        return (s["benchmark"], s["measurement"], s["path"], s["metric"], sweep_key(s["sweep"]))

    old = {key(s): s for s in base.results["summaries"]}
    new = {key(s): s for s in cur.results["summaries"]}
    gating = tol.gate_on in ("medians", "both")
    rows = []
    for k in list(old) + [k for k in new if k not in old]:
        s = old.get(k) or new[k]
        spec = metric_spec(s["metric"], s["unit"])
        comparator = "difference" if spec.kind == "loss" else "ratio"
        t = tol.for_metric(s["metric"], s["unit"])
        common = dict(kind="median", benchmark=k[0], measurement=k[1], metric=k[3],
                      unit=s["unit"], sweep=_sweep_text(s["sweep"]), path=k[2],
                      comparator=comparator, tolerance=t)
        if k not in old or k not in new:
            rows.append(_missing_row(common, old.get(k), new.get(k), gating, tol))
            continue
        o, n = old[k], new[k]
        op = _sub if comparator == "difference" else _div
        change = op(n["median"], o["median"])
        lo = hi = None
        source = "stored"
        if base.raw is not None and cur.raw is not None and base.raw.get(k) and cur.raw.get(k):
            seed = derive_seed(tol.seed, "gate-median", *k)
            rng = np.random.default_rng(seed)
            bo = stats.bootstrap_medians(base.raw[k], tol.resamples, rng)
            bn = stats.bootstrap_medians(cur.raw[k], tol.resamples, rng)
            with np.errstate(divide="ignore", invalid="ignore"):
                boot = bn - bo if comparator == "difference" else bn / bo
            lo, hi = _percentiles(boot, tol.confidence)
            source = "raw"
        else:
            lo, hi = _stored_change(o["ci"], n["ci"], comparator)
        verdict = _verdict(lo, hi, spec.better, comparator, t)
        rows.append(GateRow(**common, old=o["median"], new=n["median"], change=change,
                            ci_low=lo, ci_high=hi, verdict=verdict, gating=gating,
                            source=source))
    return rows


def _stored_change(old_ci: Mapping[str, Any], new_ci: Mapping[str, Any],
                   comparator: str) -> tuple[float | None, float | None]:
    """Conservative CI of the change from two stored CIs (interval arithmetic)."""
    ol, oh, nl, nh = old_ci.get("low"), old_ci.get("high"), new_ci.get("low"), new_ci.get("high")
    if None in (ol, oh, nl, nh):
        return None, None
    if comparator == "difference":
        return nl - oh, nh - ol
    if ol <= 0 or oh <= 0:
        return None, None
    return nl / oh, nh / ol


def _missing_row(common: dict[str, Any], old: Mapping[str, Any] | None,
                 new: Mapping[str, Any] | None, gating: bool, tol: Tolerances) -> GateRow:
    in_base = old is not None
    vo = (old or {}).get("median") if "median" in (old or {}) else (old or {}).get("value")
    vn = (new or {}).get("median") if "median" in (new or {}) else (new or {}).get("value")
    return GateRow(
        **common, old=vo, new=vn, change=None, ci_low=None, ci_high=None, verdict=MISSING,
        gating=gating and in_base and tol.fail_on_missing, source="",
        note="absent in current run" if in_base else "absent in baseline",
    )


def _ratio_rows(base: _Run, cur: _Run, tol: Tolerances) -> list[GateRow]:
    def key(c: Mapping[str, Any]) -> tuple[Any, ...]:
        return (c["benchmark"], c["measurement"], c["metric"], sweep_key(c["sweep"]),
                c["baseline"], c["path"])

    old = {key(c): c for c in base.results["comparisons"]}
    new = {key(c): c for c in cur.results["comparisons"]}
    gating = tol.gate_on in ("ratios", "both")
    rows = []
    for k in list(old) + [k for k in new if k not in old]:
        c = old.get(k) or new[k]
        spec = metric_spec(c["metric"], c["unit"])
        comparator = "difference" if spec.kind == "loss" else "ratio"
        t = tol.for_metric(c["metric"], c["unit"])
        common = dict(kind="ratio", benchmark=k[0], measurement=k[1], metric=k[2],
                      unit=c["unit"], sweep=_sweep_text(c["sweep"]), path=f"{k[5]}/{k[4]}",
                      comparator=comparator, tolerance=t)
        if k not in old or k not in new:
            o, n = old.get(k), new.get(k)
            field_ = "difference" if comparator == "difference" else "ratio"
            rows.append(_missing_row(
                common, {"value": o[field_]["value"]} if o else None,
                {"value": n[field_]["value"]} if n else None, gating, tol))
            continue
        rows.append(_ratio_row(common, old[k], new[k], k, base, cur, spec.better, tol, gating))
    return rows


def _ratio_row(common: dict[str, Any], o: Mapping[str, Any], n: Mapping[str, Any],
               k: tuple[Any, ...], base: _Run, cur: _Run, better: str, tol: Tolerances,
               gating: bool) -> GateRow:
    comparator = common["comparator"]
    t = common["tolerance"]
    field_ = "difference" if comparator == "difference" else "ratio"
    vo, vn = o[field_]["value"], n[field_]["value"]
    op = _sub if comparator == "difference" else _div
    change = op(vn, vo)
    bench, meas, metric, sw, a_path, b_path = k
    ka, kb = (bench, meas, a_path, metric, sw), (bench, meas, b_path, metric, sw)
    have_raw = all(r.raw is not None and r.raw.get(x) and len(r.raw[x]) >= stats.MIN_N
                   for r in (base, cur) for x in (ka, kb))
    if vo is None or vn is None:
        return GateRow(**common, old=vo, new=vn, change=None, ci_low=None, ci_high=None,
                       verdict=OK, gating=False, source="",
                       note="not comparable (undefined ratio: zero baseline median)")
    if have_raw:
        rng = np.random.default_rng(derive_seed(tol.seed, "gate-ratio", *k))
        boots = []
        for r in (base, cur):
            assert r.raw is not None
            ma = stats.bootstrap_medians(r.raw[ka], tol.resamples, rng)
            mb = stats.bootstrap_medians(r.raw[kb], tol.resamples, rng)
            with np.errstate(divide="ignore", invalid="ignore"):
                boots.append(mb - ma if comparator == "difference" else mb / ma)
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = boots[1] - boots[0] if comparator == "difference" else boots[1] / boots[0]
        lo, hi = _percentiles(boot, tol.confidence)
        source = "raw"
    else:
        lo, hi = _stored_change(o[field_]["ci"], n[field_]["ci"], comparator)
        source = "stored"
    verdict = _verdict(lo, hi, better, comparator, t)
    return GateRow(**common, old=vo, new=vn, change=change, ci_low=lo, ci_high=hi,
                   verdict=verdict, gating=gating, source=source)


def compare(
    baseline_results_path: str | Path, current_results_path: str | Path,
    tolerances: Tolerances | str | Path | None = None,
) -> tuple[list[GateRow], int]:
    """Compare two runs (results.json files or run directories).

    Returns (rows, exit_code): exit 1 if any gating row regressed (or is missing with
    fail_on_missing), else 0. Raises GateError (exit 2) for unreadable/invalid inputs."""
    tol = tolerances if isinstance(tolerances, Tolerances) else load_tolerances(tolerances)
    base = _load_run(baseline_results_path, "baseline")
    cur = _load_run(current_results_path, "current")
    rows = _ratio_rows(base, cur, tol) + _median_rows(base, cur, tol)
    failed = any(r.gating and r.verdict in (REGRESSED, MISSING) for r in rows)
    return rows, 1 if failed else 0


# ----------------------------------------------------------------------------- output

_STYLE = {OK: "green", REGRESSED: "bold red", IMPROVED: "cyan", MISSING: "yellow"}


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def rows_table(rows: Sequence[GateRow], title: str) -> Table:
    """Every row: figure, path, old, new, change with CI, tolerance, verdict."""
    t = Table(title=title, title_justify="left")
    t.add_column("figure")
    t.add_column("path")
    for col in ("old", "new", "change [CI]", "tol"):
        t.add_column(col, justify="right")
    t.add_column("verdict")
    for r in rows:
        sym = "Δ" if r.comparator == "difference" else "×"
        change = f"{sym}{_num(r.change)} [{_num(r.ci_low)}, {_num(r.ci_high)}]"
        tol = f"±{r.tolerance:g}" + ("pp" if r.comparator == "difference" else "")
        verdict = f"[{_STYLE[r.verdict]}]{r.verdict}[/]" + (f" ({r.note})" if r.note else "")
        figure = f"{r.benchmark}:{r.measurement}/{r.metric}" + (
            f" @{r.sweep}" if r.sweep != "-" else "")
        t.add_row(figure, r.path, _num(r.old), _num(r.new), change, tol, verdict)
    return t


def print_rows(rows: Sequence[GateRow], console: Console, code: int) -> None:
    gating = [r for r in rows if r.gating]
    info = [r for r in rows if not r.gating]
    if gating:
        console.print(rows_table(gating, "gating: within-run path ratios B/A (new vs old)"
                                 if gating[0].kind == "ratio" else "gating"))
    if info:
        console.print(rows_table(info, "information (not gating)"))
    counts = {v: sum(r.verdict == v for r in gating) for v in _STYLE}
    console.print(f"gating rows: {len(gating)}, "
                  + ", ".join(f"{k} {n}" for k, n in counts.items())
                  + f" -> {'FAIL' if code else 'PASS'}")


def main_compare(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """`cfrbench compare BASELINE CURRENT [--tolerances F] [--gate-on X] [--json OUT]`."""
    parser = argparse.ArgumentParser(
        prog="cfrbench compare",
        description="Compare a run with a baseline run; exit 1 on a confident regression.")
    parser.add_argument("baseline", help="baseline run directory or results.json")
    parser.add_argument("current", help="current run directory or results.json")
    parser.add_argument("--tolerances", help=f"tolerances TOML (default {DEFAULT_TOLERANCES})")
    parser.add_argument("--gate-on", choices=GATE_ON, help="override [gate] gate_on")
    parser.add_argument("--json", dest="json_out", help="also write the rows as JSON here")
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    # CI logs are not terminals: print wide rather than wrapping every cell.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True)
    try:
        tol = load_tolerances(args.tolerances)
        if args.gate_on:
            tol = Tolerances(tol.kind, tol.metric, args.gate_on, tol.fail_on_missing,
                             tol.confidence, tol.resamples, tol.seed)
        rows, code = compare(args.baseline, args.current, tol)
    except CfrbenchError as e:
        err.print(f"cfrbench compare: {e}", markup=False, highlight=False)
        return 2
    print_rows(rows, console, code)
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"exit_code": code, "rows": [asdict(r) for r in rows]}, indent=1,
                       allow_nan=False) + "\n", encoding="utf-8")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_compare())
