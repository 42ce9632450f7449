"""Performance-regression gate: compare a current run with a baseline run.

Why within-run figures: absolute times from shared machines drift between runs far more than
the effects we care about, but both paths of a within-run comparison (cfr-flow - direct, run
interleaved) drift together. So the gate compares, for every comparison row of results.json,
the baseline run's figure with the current run's: the shift of the DIFFERENCE for latency
(threshold: a multiple of the equivalence margin, in ms) and the change of the RATIO for
rates and costs (threshold: a fraction). Which rows are gated, and how tightly, is the table
in ci/tolerances.toml (benchmarks/gate_rules.py); how a change and its CI are judged is
benchmarks/gate_change.py. Besides the shifts, the build fails on a comparison that was
`equivalent` in the baseline and is anything else now, and on a path or metric of the
baseline missing from the current run.

Exit status of `main_compare`: 0 pass, 1 fail (a gating row regressed, undecided, flipped
or missing), 2 unreadable/invalid baseline, current run or tolerances file.

Over 400 lines on purpose: the four row families of one gate decision (within-run, medians,
verdicts, presence) and its command share the row type and tolerances; the change
arithmetic, rules and output already live in gate_change, gate_rules and gate_report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import paths as path_table
from benchmarks.gate_change import (
    FAILING,
    FLIPPED,
    IMPROVED,
    INFO,
    MISSING,
    OK,
    REGRESSED,
    UNDECIDED,
    Estimate,
    change_between,
    classify,
    threshold_for,
)
from benchmarks.gate_report import print_rows, write_json, write_markdown
from benchmarks.gate_rules import (
    DEFAULT_TOLERANCES,
    GATE_ON,
    GateError,
    Rule,
    Tolerances,
    load_tolerances,
)
from benchmarks.registry import BASELINE_PATH, metric_spec
from benchmarks.results import load_results
from testbed.errors import CfrbenchError

__all__ = [
    "DEFAULT_TOLERANCES", "GATE_ON", "OK", "REGRESSED", "IMPROVED", "UNDECIDED", "MISSING",
    "FLIPPED", "INFO", "GateError", "GateRow", "Rule", "Tolerances", "compare",
    "load_tolerances", "main_compare",
]

EQUIVALENT = "equivalent"
#: verdict words of a comparison that did not decide (old files say "not equivalent")
_UNDECIDED_VERDICTS = ("undecided", "not equivalent", "insufficient data")
#: kinds compared by difference when no rule says otherwise (a ratio of near-zero loss
#: rates, or of two latencies that mostly share fixed link delay, hides what matters)
_DIFFERENCE_KINDS = ("latency", "loss")


@dataclass
class GateRow:
    """One line of the gate's answer.

    `figure`: "within-run" (a comparison path/reference of each run), "median" (a path's own
    median), "verdict" (an equivalence verdict that flipped), "presence" (missing or new) or
    "rule" (a rule that selected nothing). `change` is new - old (difference) or new / old
    (ratio) with its CI; `threshold` is the bound it must not cross, in the same units."""

    figure: str
    benchmark: str
    measurement: str
    metric: str
    unit: str
    sweep: str
    path: str
    comparator: str
    old: float | None
    new: float | None
    change: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float | None
    rule: str
    verdict: str
    gating: bool
    note: str = ""
    #: whose CI the change was built from: "estimate" (the comparison's own), "test" (its
    #: equivalence test's, when the own one is missing), "" (none)
    ci_source: str = ""


# ----------------------------------------------------------------------------- keys


def _sweep_text(sw: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={float(v):g}" for k, v in sorted(sw.items())) or "-"


def _skey(s: Mapping[str, Any]) -> tuple[Any, ...]:
    return (s["benchmark"], s["measurement"], s["path"], s["metric"], _sweep_text(s["sweep"]))


def _ckey(c: Mapping[str, Any]) -> tuple[Any, ...]:
    return (c["benchmark"], c["measurement"], c["metric"], _sweep_text(c["sweep"]),
            c["baseline"], c["path"])


def _load(source: str | Path, label: str) -> dict[str, Any]:
    try:
        return load_results(source)
    except CfrbenchError as e:
        raise GateError(f"{label}: {e}") from e


# ----------------------------------------------------------------------------- rows


def _margin(c: Mapping[str, Any] | None) -> float | None:
    """The equivalence margin a comparison was tested against (metric units)."""
    m = ((c or {}).get("test") or {}).get("margin")
    return float(m) if isinstance(m, (int, float)) and m > 0 else None


def _default_margin(reference_median: float | None) -> float | None:
    """The analysis's default latency margin, max(0.1 ms, 1% of the reference median), for
    a figure whose comparison stored none."""
    return None if reference_median is None else max(0.1, 0.01 * abs(reference_median))


def _shift_row(figure: str, common: dict[str, Any], rule: Rule | None, comparator: str,
               better: str, old: Estimate, new: Estimate, margin: float | None,
               tol: Tolerances, gating: bool) -> GateRow:
    """A row judging the change old -> new against the rule's (or the info) threshold."""
    if comparator == "difference":
        factor = rule.margin_factor if rule else tol.info_margin_factor
        assert factor is not None
        tolerance = None if margin is None else factor * margin
    else:
        tolerance = rule.max_change if rule else tol.info_max_change
    base = dict(common, figure=figure, comparator=comparator, old=old.value, new=new.value,
                rule=rule.name if rule else "", gating=gating)
    ch = change_between(old, new, comparator, tol.confidence)
    if tolerance is None:
        return GateRow(**base, change=None, ci_low=None, ci_high=None, threshold=None,
                       verdict=UNDECIDED if gating else INFO,
                       note="no equivalence margin stored: threshold unknown")
    th = threshold_for(comparator, better, tolerance)
    if isinstance(ch, str):
        return GateRow(**base, change=None, ci_low=None, ci_high=None, threshold=th.bound,
                       verdict=UNDECIDED if gating else INFO,
                       note=ch + ("; rerun with more repetitions of this measurement (or the "
                                  "full profile)" if gating else ""))
    verdict, note = classify(ch, th, tol.lean)
    if not rule and verdict == UNDECIDED:
        verdict, note = INFO, "CI contains the information threshold"
    source = "test" if "test" in (old.source, new.source) else "estimate"
    return GateRow(**base, change=ch.value, ci_low=ch.low, ci_high=ch.high,
                   threshold=th.bound, verdict=verdict, note=note, ci_source=source)


def _within_run_rows(base: Mapping[str, Any], cur: Mapping[str, Any],
                     tol: Tolerances) -> list[GateRow]:
    old = {_ckey(c): c for c in base["comparisons"]}
    new = {_ckey(c): c for c in cur["comparisons"]}
    gate = tol.gate_on in ("ratios", "both")
    rows = []
    for k, o in old.items():
        n = new.get(k)
        if n is None:
            continue  # reported by _presence_rows
        spec = metric_spec(o["metric"], o.get("unit"))
        rule = tol.rule_for(o["measurement"], o["metric"], spec.kind, o["path"], o["baseline"])
        comparator = rule.comparator if rule else (
            "difference" if spec.kind in _DIFFERENCE_KINDS else "ratio")
        common = dict(benchmark=k[0], measurement=k[1], metric=k[2], unit=o.get("unit", ""),
                      sweep=k[3], path=f"{k[5]}/{k[4]}")
        rows.append(_shift_row(
            "within-run", common, rule, comparator, spec.better, _stored(o, comparator),
            _stored(n, comparator),
            _margin(o) or _margin(n) or _default_margin(o.get("median_baseline")),
            tol, gate and rule is not None))
    return rows


def _stored(c: Mapping[str, Any], comparator: str) -> Estimate:
    """A comparison's estimate on the comparator's scale with its CI: the comparison's own
    (all blocks, the analysis's confidence), or else its equivalence test's, when the test
    is on the same scale and has one. Why the fallback: the exact signed-rank CI needs 6
    paired blocks at 95% but only 5 at the test's 90%, and the quick profile measures some
    comparisons in 5 blocks; the gate rescales the test's level to its own
    (benchmarks/gate_change.py)."""
    field = "difference" if comparator == "difference" else "ratio"
    own = c.get(field) or {}
    e = Estimate.from_stored(own.get("value"), own.get("ci"))
    if e.complete:
        return e
    test = c.get("test") or {}
    if test.get("test") == ("tost" if comparator == "difference" else "ratio"):
        t = Estimate.from_stored(test.get(field), test.get("ci"), source="test")
        if t.complete:
            return t
    return e


def _is_baseline(path: str) -> bool:
    return path in path_table.NAMES and path_table.base_of(path) == BASELINE_PATH


def _family(path: str) -> int:
    return path_table.family_of(path) if path in path_table.NAMES else 4


def _median_rows(base: Mapping[str, Any], cur: Mapping[str, Any],
                 tol: Tolerances) -> list[GateRow]:
    old = {_skey(s): s for s in base["summaries"]}
    new = {_skey(s): s for s in cur["summaries"]}
    # the reference of a path is its own family's twin of the baseline (direct, direct6)
    margins = {(_ckey(c)[:4], c["path"]): _margin(c) for c in base["comparisons"]
               if _is_baseline(c["baseline"])}
    refs = {_skey(s)[:2] + _skey(s)[3:] + (_family(s["path"]),): s["median"]
            for s in base["summaries"] if _is_baseline(s["path"])}
    gate = tol.gate_on in ("medians", "both")
    rows = []
    for k, o in old.items():
        n = new.get(k)
        if n is None:
            continue
        bench, meas, path, metric, sw = k
        spec = metric_spec(metric, o.get("unit"))
        rule = tol.rule_for(meas, metric, spec.kind, path, None)
        comparator = rule.comparator if rule else (
            "difference" if spec.kind in _DIFFERENCE_KINDS else "ratio")
        margin = margins.get(((bench, meas, metric, sw), path)) or _default_margin(
            refs.get((bench, meas, metric, sw, _family(path)), o.get("median")))
        common = dict(benchmark=bench, measurement=meas, metric=metric,
                      unit=o.get("unit", ""), sweep=sw, path=path)
        rows.append(_shift_row(
            "median", common, rule, comparator, spec.better,
            Estimate.from_stored(o.get("median"), o.get("ci")),
            Estimate.from_stored(n.get("median"), n.get("ci")), margin, tol,
            gate and rule is not None))
    return rows


def _verdict_rows(base: Mapping[str, Any], cur: Mapping[str, Any],
                  tol: Tolerances) -> list[GateRow]:
    """Every comparison equivalent in the baseline must still be equivalent.

    A flip to a decided verdict (slower, worse, faster, better) always gates. A flip to
    `undecided` gates only on a figure a rule selects (the relay's own paths): there it is
    a gated row too imprecise to decide. On an information-only figure (cgn, the proxies)
    an undecided run is not a changed answer, and failing on it made an A/A pair of real
    quick runs fail on cgn's connection rate (equivalent -> undecided, x0.985 [0.948, 1.010]).
    """
    new = {_ckey(c): c for c in cur["comparisons"]}
    rows = []
    for c in base["comparisons"]:
        n = new.get(_ckey(c))
        if c.get("verdict") != EQUIVALENT or n is None or n.get("verdict") == EQUIVALENT:
            continue
        k = _ckey(c)
        undecided = n.get("verdict") in _UNDECIDED_VERDICTS
        selected = tol.rule_for(c["measurement"], c["metric"], c.get("kind", ""), c["path"],
                                c["baseline"]) is not None
        rows.append(GateRow(
            figure="verdict", benchmark=k[0], measurement=k[1], metric=k[2],
            unit=c.get("unit", ""), sweep=k[3], path=f"{k[5]}/{k[4]}", comparator="",
            old=None, new=None, change=None, ci_low=None, ci_high=None, threshold=None,
            rule="verdict flip", verdict=FLIPPED,
            gating=tol.fail_on_verdict_flip and (selected or not undecided),
            note=_flip_note(n)))
    return rows


def _flip_note(n: Mapping[str, Any]) -> str:
    """What a flip means for the user: a decided difference is a regression to fix (or an
    intended change: re-record the baseline); an undecided one needs more samples."""
    verdict = n.get("verdict")
    if verdict in _UNDECIDED_VERDICTS:
        need = n.get("samples_needed")
        more = f" (the analysis estimates ~{need} samples per path)" if need else ""
        return (f"equivalent -> {verdict}: the current run could not show equivalence"
                f"{more}; rerun with more repetitions of this measurement, or fix the cause")
    return (f"equivalent -> {verdict}: fix the cause, or re-record the baseline if the "
            "change is intended")


def _presence_rows(base: Mapping[str, Any], cur: Mapping[str, Any],
                   tol: Tolerances) -> list[GateRow]:
    """Figures of the baseline absent now (fail with fail_on_missing) and new figures."""
    old_s = {_skey(s): s for s in base["summaries"]}
    new_s = {_skey(s): s for s in cur["summaries"]}
    rows = []

    def row(k: tuple[Any, ...], s: Mapping[str, Any], path: str, verdict: str,
            gating: bool, note: str) -> GateRow:
        return GateRow(figure="presence", benchmark=k[0], measurement=k[1], metric=k[2],
                       unit=s.get("unit", ""), sweep=k[3], path=path, comparator="",
                       old=None, new=None, change=None, ci_low=None, ci_high=None,
                       threshold=None, rule="presence", verdict=verdict, gating=gating,
                       note=note)

    for k, s in old_s.items():
        if k not in new_s:
            rows.append(row((k[0], k[1], k[3], k[4]), s, k[2], MISSING, tol.fail_on_missing,
                            "path/metric absent in the current run"))
    for k, s in new_s.items():
        if k not in old_s:
            rows.append(row((k[0], k[1], k[3], k[4]), s, k[2], INFO, False,
                            "new in the current run (absent in the baseline)"))
    new_c = {_ckey(c) for c in cur["comparisons"]}
    for c in base["comparisons"]:
        k = _ckey(c)
        both = all((k[0], k[1], p, k[2], k[3]) in new_s for p in (k[4], k[5]))
        if k not in new_c and both:
            rows.append(row((k[0], k[1], k[2], k[3]), c, f"{k[5]}/{k[4]}", MISSING,
                            tol.fail_on_missing, "comparison absent in the current run"))
    return rows


def _rule_rows(base: Mapping[str, Any], rows: Sequence[GateRow],
               tol: Tolerances) -> list[GateRow]:
    """A note per rule that selected no figure of the baseline: it gates nothing yet."""
    used = {r.rule for r in rows if r.figure in ("within-run", "median")}
    return [GateRow(figure="rule", benchmark="-", measurement=rule.measurement or "*",
                    metric=rule.metric or "*", unit="", sweep="-", path=",".join(rule.paths),
                    comparator=rule.comparator, old=None, new=None, change=None, ci_low=None,
                    ci_high=None, threshold=None, rule=rule.name, verdict=INFO, gating=False,
                    note="selects no figure of the baseline: not gated until the baseline "
                         "is re-recorded with it (see ci/README.md)")
            for rule in tol.rules if rule.name not in used]


def compare(
    baseline_results_path: str | Path, current_results_path: str | Path,
    tolerances: Tolerances | str | Path | None = None,
) -> tuple[list[GateRow], int]:
    """Compare two runs (results.json files or run directories).

    Returns (rows, exit_code): exit 1 if any gating row is regressed, undecided, flipped or
    missing, else 0. Raises GateError (exit 2) for unreadable/invalid inputs."""
    tol = tolerances if isinstance(tolerances, Tolerances) else load_tolerances(tolerances)
    base = _load(baseline_results_path, "baseline")
    cur = _load(current_results_path, "current")
    rows = (_within_run_rows(base, cur, tol) + _median_rows(base, cur, tol)
            + _verdict_rows(base, cur, tol) + _presence_rows(base, cur, tol))
    rows += _rule_rows(base, rows, tol)
    failed = any(r.gating and r.verdict in FAILING for r in rows)
    return rows, 1 if failed else 0


# ----------------------------------------------------------------------------- command


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, like every other cfrbench command's (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def main_compare(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """`cfrbench compare BASELINE CURRENT [--tolerances F] [--gate-on X] [--json F]
    [--markdown F]`."""
    parser = _Parser(
        prog="cfrbench compare",
        description="Compare a run with a baseline run; exit 1 on a regression, an undecided "
                    "gated figure, a flipped equivalence verdict or a missing figure.")
    parser.add_argument("baseline", help="baseline run directory or results.json")
    parser.add_argument("current", help="current run directory or results.json")
    parser.add_argument("--tolerances", metavar="F",
                        help="tolerances TOML (default: the package's ci/tolerances.toml)")
    parser.add_argument("--gate-on", choices=GATE_ON,
                        help="override [gate] gate_on: gate within-run comparisons (ratios), "
                             "each path's own median (medians) or both")
    parser.add_argument("--json", dest="json_out", metavar="F",
                        help="also write every row as JSON here")
    parser.add_argument("--markdown", dest="markdown_out", metavar="F",
                        help="also append a markdown verdict table here (e.g. "
                             "$GITHUB_STEP_SUMMARY)")
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    # CI logs are not terminals: print wide rather than wrapping every cell.
    console = console or Console(width=None if sys.stdout.isatty() else 180)
    err = Console(stderr=True)
    try:
        tol = load_tolerances(args.tolerances)
        if args.gate_on:
            tol = replace(tol, gate_on=args.gate_on)
        rows, code = compare(args.baseline, args.current, tol)
    except CfrbenchError as e:
        err.print(f"cfrbench compare: {e}", markup=False, highlight=False)
        return 2
    print_rows(rows, console, code)
    try:
        if args.json_out:
            write_json(Path(args.json_out), [asdict(r) for r in rows], code, tol)
        if args.markdown_out:
            write_markdown(Path(args.markdown_out), rows, code, args.baseline, args.current)
    except OSError as e:
        err.print(f"cfrbench compare: cannot write output: {e}", markup=False,
                  highlight=False)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_compare())
