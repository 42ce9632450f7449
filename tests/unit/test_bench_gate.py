"""Regression gate: an unchanged run passes, an injected regression fails on exactly that
metric, a fresh run of the same distributions passes, unreadable inputs exit 2."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from benchmarks.records import dumps, read_records
from benchmarks.results import reanalyse_run
from ci.gate import (
    IMPROVED,
    MISSING,
    OK,
    REGRESSED,
    Tolerances,
    compare,
    load_tolerances,
    main_compare,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "bench"
BASE = GOLDEN / "run_quick"


def derived_run(tmp_path: Path, name: str,
                change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Path:
    """A copy of the golden run with records changed (None drops a record), re-analysed."""
    dst = tmp_path / name
    shutil.copytree(BASE, dst)
    recs = [change(dict(r)) for r in read_records(dst)]
    (dst / "raw" / "measurements.jsonl").write_text(
        "".join(dumps(r) + "\n" for r in recs if r is not None))
    reanalyse_run(dst)
    return dst


def scale(path: str, metric: str, factor: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def f(r: dict[str, Any]) -> dict[str, Any]:
        if r["path"] == path and r["metric"] == metric and r["value"] is not None:
            r["value"] = round(r["value"] * factor, 4)
        return r
    return f


def gating(rows: list[Any], verdict: str) -> list[Any]:
    return [r for r in rows if r.gating and r.verdict == verdict]


def test_unchanged_run_passes() -> None:
    rows, code = compare(BASE, BASE / "results.json")
    assert code == 0
    assert rows and all(r.verdict == OK for r in rows)
    assert {r.kind for r in rows} == {"ratio", "median"}
    assert all(r.gating == (r.kind == "ratio") for r in rows)
    assert all(r.source == "raw" for r in rows if r.change is not None)


def test_injected_regression_fails_on_that_metric(tmp_path: Path) -> None:
    cur = derived_run(tmp_path, "slow", scale("cfr-flow", "handshake_time", 1.3))
    rows, code = compare(BASE, cur)
    assert code == 1
    bad = gating(rows, REGRESSED)
    assert {(r.metric, r.path) for r in bad} == {
        ("handshake_time", "cfr-flow/direct"), ("handshake_time", "cfr-flow/proxy")}
    r = next(r for r in bad if r.path == "cfr-flow/direct")
    assert r.change == pytest.approx(1.3, rel=0.01)
    assert r.ci_low > 1.1
    # the raw median regressed too, but only informationally
    info = [x for x in rows if x.kind == "median" and x.path == "cfr-flow"
            and x.metric == "handshake_time"]
    assert info[0].verdict == REGRESSED and not info[0].gating


def test_regression_within_tolerance_passes(tmp_path: Path) -> None:
    cur = derived_run(tmp_path, "bit", scale("cfr-flow", "handshake_time", 1.05))
    rows, code = compare(BASE, cur)
    assert code == 0
    assert not gating(rows, REGRESSED)


def test_throughput_drop_is_a_regression_and_gain_an_improvement(tmp_path: Path) -> None:
    cur = derived_run(tmp_path, "tp", scale("proxy", "throughput", 0.5))
    rows, code = compare(BASE, cur)
    assert code == 1
    assert {(r.measurement, r.path) for r in gating(rows, REGRESSED)} == {
        ("tcp_1stream", "proxy/direct"), ("tcp_4streams", "proxy/direct")}
    cur = derived_run(tmp_path, "fast", scale("cfr-flow", "handshake_time", 0.7))
    rows, code = compare(BASE, cur)
    assert code == 0
    assert any(r.metric == "handshake_time" for r in gating(rows, IMPROVED))


def test_whole_machine_slower_is_not_a_ratio_regression(tmp_path: Path) -> None:
    """Absolute times 40% up on every path (a busier machine): path ratios are unchanged, so
    the gate passes while the informational medians show the shift."""
    def slower(r: dict[str, Any]) -> dict[str, Any]:
        if r["unit"] == "ms" and r["value"] is not None:
            r["value"] = round(r["value"] * 1.4, 4)
        return r
    cur = derived_run(tmp_path, "busy", slower)
    rows, code = compare(BASE, cur)
    assert code == 0
    assert any(r.verdict == REGRESSED and not r.gating for r in rows)
    rows, code = compare(BASE, cur, Tolerances(gate_on="both"))
    assert code == 1


def test_fresh_run_of_same_distributions_passes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    assert spec and spec.loader
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)
    fresh = tmp_path / "fresh"
    mg.write_run(fresh, mg.quick_definitions(), "quick", seed=777)
    rows, code = compare(BASE, fresh)
    assert code == 0, [r for r in rows if r.gating and r.verdict != OK]


def test_stored_ci_fallback_without_raw(tmp_path: Path) -> None:
    cur = derived_run(tmp_path, "slow", scale("cfr-flow", "handshake_time", 1.3))
    base = tmp_path / "base"
    shutil.copytree(BASE, base)
    shutil.rmtree(base / "raw")
    rows, code = compare(base, cur)
    assert code == 1
    bad = [r for r in gating(rows, REGRESSED) if r.path == "cfr-flow/direct"]
    assert bad and bad[0].source == "stored"
    rows, code = compare(base, base)
    assert code == 0


def test_missing_metric(tmp_path: Path) -> None:
    cur = derived_run(tmp_path, "noicmp",
                      lambda r: None if r["measurement"] == "icmp_rtt" else r)
    rows, code = compare(BASE, cur)
    assert code == 0
    missing = [r for r in rows if r.verdict == MISSING]
    assert missing and all(r.metric == "rtt" for r in missing)
    assert all(r.note == "absent in current run" for r in missing)
    rows, code = compare(BASE, cur, Tolerances(fail_on_missing=True))
    assert code == 1


def test_main_compare_exit_codes(tmp_path: Path) -> None:
    con = Console(record=True, width=200)
    assert main_compare([str(BASE), str(BASE)], console=con) == 0
    assert "PASS" in con.export_text()
    cur = derived_run(tmp_path, "slow", scale("cfr-flow", "handshake_time", 1.3))
    out = tmp_path / "gate.json"
    con = Console(record=True, width=200)
    assert main_compare([str(BASE), str(cur), "--json", str(out)], console=con) == 1
    text = con.export_text()
    assert "regressed" in text and "FAIL" in text
    data = json.loads(out.read_text())
    assert data["exit_code"] == 1 and any(r["verdict"] == REGRESSED for r in data["rows"])


def test_main_compare_unreadable_inputs_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    con = Console(record=True)
    assert main_compare([str(tmp_path / "missing"), str(BASE)], console=con) == 2
    assert "baseline" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main_compare([str(bad), str(BASE)], console=con) == 2
    invalid = tmp_path / "invalid.json"
    data = json.loads((BASE / "results.json").read_text())
    del data["summaries"][0]["median"]
    invalid.write_text(json.dumps(data))
    assert main_compare([str(invalid), str(BASE)], console=con) == 2
    assert "summaries/0" in capsys.readouterr().err
    assert main_compare([str(BASE), str(invalid)], console=con) == 2
    tol = tmp_path / "tol.toml"
    tol.write_text("[kind]\nlatencyy = 0.1\n")
    assert main_compare([str(BASE), str(BASE), "--tolerances", str(tol)], console=con) == 2
    assert "latencyy" in capsys.readouterr().err
    assert main_compare(["--no-such-flag"], console=con) == 2


def test_default_tolerances_file() -> None:
    t = load_tolerances()
    assert t.gate_on == "ratios"
    assert t.for_metric("handshake_time", "ms") == 0.10
    assert t.for_metric("page_load_time", "ms") == 0.15
    assert t.for_metric("throughput", "Mbit/s") == 0.10
    assert t.for_metric("loss", "percent") == 1.0


@pytest.mark.parametrize(
    "lo, hi, better, comparator, verdict",
    [
        (1.11, 1.3, "lower", "ratio", REGRESSED),
        (1.05, 1.3, "lower", "ratio", OK),  # CI reaches into the tolerance: not confident
        (0.7, 0.89, "lower", "ratio", IMPROVED),
        (0.7, 0.89, "higher", "ratio", REGRESSED),
        (1.11, 1.2, "higher", "ratio", IMPROVED),
        (0.95, 1.05, "higher", "ratio", OK),
        (0.2, 0.5, "lower", "difference", OK),  # +0.2..0.5 pp of loss, within 1 pp
        (1.2, 2.0, "lower", "difference", REGRESSED),
        (-2.0, -1.5, "lower", "difference", IMPROVED),
        (None, None, "lower", "ratio", OK),
    ],
)
def test_verdict_rule(lo: float | None, hi: float | None, better: str, comparator: str,
                      verdict: str) -> None:
    from ci.gate import _verdict

    tol = 1.0 if comparator == "difference" else 0.1
    assert _verdict(lo, hi, better, comparator, tol) == verdict
