"""The gate's answer for people: a terminal table, a markdown table for the CI step summary,
and JSON for tools.

Why three: the terminal shows why the build failed where it failed; $GITHUB_STEP_SUMMARY is
where a reviewer looks first; JSON keeps every row (information rows included) for scripts.
Failing rows come first everywhere, each with the message that says what to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from benchmarks.gate_change import (
    FAILING,
    FLIPPED,
    IMPROVED,
    INFO,
    MISSING,
    OK,
    REGRESSED,
    UNDECIDED,
)
from benchmarks.gate_rules import Tolerances

if TYPE_CHECKING:  # benchmarks.gate imports this module: no runtime import back
    from benchmarks.gate import GateRow as Row

_STYLE = {OK: "green", REGRESSED: "bold red", UNDECIDED: "bold yellow", IMPROVED: "cyan",
          MISSING: "bold red", FLIPPED: "bold red", INFO: "dim"}
_ORDER = {v: i for i, v in enumerate((REGRESSED, FLIPPED, MISSING, UNDECIDED, IMPROVED, OK,
                                      INFO))}


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def _figure(r: Row) -> str:
    return f"{r.benchmark}:{r.measurement}/{r.metric}" + (
        f" @{r.sweep}" if r.sweep != "-" else "")


def _change(r: Row) -> str:
    if r.change is None:
        return "–"
    ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]"
    if r.comparator == "difference":
        unit = f" {r.unit}" if r.unit else ""
        return f"Δ{r.change:+.4g}{unit} {ci}"
    return f"×{r.change:.4g} {ci}"


def _limit(r: Row) -> str:
    if r.threshold is None:
        return "–"
    if r.comparator == "difference":
        return f"{'>' if r.threshold > 0 else '<'}{r.threshold:+.3g}"
    return f"{'>' if r.threshold > 1 else '<'}×{r.threshold:.3g}"


def _sorted(rows: Sequence[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: _ORDER.get(r.verdict, 99))


def _counts(rows: Sequence[Row]) -> str:
    out = {}
    for r in rows:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    return ", ".join(f"{k} {out[k]}" for k in sorted(out, key=lambda v: _ORDER.get(v, 99)))


def rows_table(rows: Sequence[Row], title: str) -> Table:
    """Figure, path, rule, old and new within-run figure, change with CI, limit, verdict."""
    t = Table(title=title, title_justify="left")
    for col in ("figure", "path", "rule"):
        t.add_column(col)
    for col in ("old", "new", "change [CI]", "fails if"):
        t.add_column(col, justify="right")
    t.add_column("verdict")
    for r in _sorted(rows):
        verdict = f"[{_STYLE.get(r.verdict, '')}]{r.verdict}[/]" + (
            f" ({r.note})" if r.note else "")
        t.add_row(_figure(r), r.path, r.rule, _num(r.old), _num(r.new), _change(r),
                  _limit(r), verdict)
    return t


def print_rows(rows: Sequence[Row], console: Console, code: int) -> None:
    """Every gating row; of the rest only those worth a look (not ok, not plain info)."""
    gating = [r for r in rows if r.gating]
    notable = [r for r in rows if not r.gating and r.verdict not in (OK, INFO)]
    notes = [r for r in rows if r.figure == "rule"]
    if gating:
        console.print(rows_table(gating, "gating (change from baseline to current run)"))
    if notable:
        console.print(rows_table(notable, "information only (not gating)"))
    for r in notes:
        console.print(f"note: rule '{r.rule}' {r.note}", markup=False, highlight=False)
    console.print(f"gating rows: {len(gating)} ({_counts(gating) or 'none'}); "
                  f"information rows: {len(rows) - len(gating)} -> "
                  f"{'FAIL' if code else 'PASS'}", markup=False, highlight=False)


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(rows: Sequence[Row]) -> list[str]:
    out = ["| verdict | figure | path | rule | change [CI] | fails if | note |",
           "|---|---|---|---|---|---|---|"]
    for r in _sorted(rows):
        mark = "❌ " if r.gating and r.verdict in FAILING else ""
        out.append("| " + " | ".join(_md_cell(x) for x in (
            f"{mark}{r.verdict}", _figure(r), r.path, r.rule, _change(r), _limit(r),
            r.note)) + " |")
    return out


def write_markdown(path: Path, rows: Sequence[Row], code: int, baseline: str,
                   current: str) -> None:
    """Append the verdict table (append: $GITHUB_STEP_SUMMARY collects several steps)."""
    gating = [r for r in rows if r.gating]
    notable = [r for r in rows if not r.gating and r.verdict not in (OK, INFO)]
    lines = [f"## Regression gate: {'FAIL' if code else 'PASS'}", "",
             f"Baseline `{baseline}`, current `{current}`. Gating rows: {len(gating)} "
             f"({_counts(gating) or 'none'}).", ""]
    lines += _md_table(gating) if gating else ["No gating rows."]
    if notable:
        lines += ["", "<details><summary>Information only (not gating): "
                  f"{len(notable)} rows</summary>", "", *_md_table(notable), "", "</details>"]
    for r in rows:
        if r.figure == "rule":
            lines += ["", f"Note: rule '{r.rule}' {r.note}."]
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_json(path: Path, rows: Sequence[Mapping[str, Any]], code: int,
               tol: Tolerances) -> None:
    """Every row (information rows too), the exit status and the tolerances used."""
    path.write_text(json.dumps({"exit_code": code, "tolerances": tol.source,
                                "gate_on": tol.gate_on, "confidence": tol.confidence,
                                "lean": tol.lean,
                                "rows": list(rows)}, indent=1, allow_nan=False) + "\n",
                    encoding="utf-8")
