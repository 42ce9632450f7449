"""results.json: built from golden raw records it validates against schema v1; broken files
fail validation with the JSON path; provenance collection never crashes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import provenance
from benchmarks.definitions import DEFINITIONS_DIR, load_definition
from benchmarks.results import (
    SCHEMA_VERSION,
    ResultsError,
    finalize_run,
    load_results,
    reanalyse_run,
    validate,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "bench"


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(GOLDEN / "run_quick", dst)
    return dst


@pytest.fixture(scope="module")
def golden_results() -> dict[str, Any]:
    return load_results(GOLDEN / "run_quick")


def test_finalize_run_from_golden_raw_validates(run_dir: Path) -> None:
    (run_dir / "results.json").unlink()
    defs = [load_definition(DEFINITIONS_DIR / f"{n}.toml", "quick")
            for n in ("latency", "throughput", "connrate")]
    prov = provenance.collect_provenance(probe={"netem": False},
                                         link_emulation={"mechanism": "delayline",
                                                         "calibration": provenance.calibration(
                                                             10.0, [10.02, 10.05, 9.99])})
    res = finalize_run(run_dir, defs, profile="quick", seed=20260101, provenance=prov,
                       parameters={"hosts": 4})
    validate(res)
    again = load_results(run_dir)
    assert again["schema_version"] == SCHEMA_VERSION == 1
    assert again["run_id"] == "run"
    assert again["benchmarks"] == ["latency", "throughput", "connrate"]
    assert again["parameters"]["hosts"] == 4
    assert again["parameters"]["definitions"]["latency"]["profile"] == "quick"
    cal = again["provenance"]["link_emulation"]["calibration"]
    assert cal["configured_ms"] == 10.0 and cal["error_median_ms"] == pytest.approx(0.02)
    for s in again["summaries"]:
        assert {"unit", "n", "median", "p95", "p99", "ci"} <= set(s)


def test_golden_results_validate(golden_results: dict[str, Any]) -> None:
    validate(golden_results)


@pytest.mark.parametrize(
    "breakage, where",
    [
        (lambda r: r["summaries"][0].pop("median"), "summaries/0"),
        (lambda r: r["summaries"][3].update(unit="seconds"), "summaries/3/unit"),
        (lambda r: r["summaries"][1].update(n=-1), "summaries/1/n"),
        (lambda r: r["comparisons"][0].update(verdict="maybe"), "comparisons/0/verdict"),
        (lambda r: r["comparisons"][2]["ratio"]["ci"].update(level=95), "comparisons/2/ratio"),
        (lambda r: r["provenance"].pop("kernel"), "provenance"),
        (lambda r: r["provenance"]["link_emulation"]["calibration"].pop("error_p99_ms"),
         "provenance/link_emulation/calibration"),
        (lambda r: r.update(schema_version=2), "schema_version"),
        (lambda r: r.update(extra_field=1), "top level"),
        (lambda r: r.pop("leak_check"), "top level"),
    ],
)
def test_broken_results_fail_validation(golden_results: dict[str, Any], breakage: Any,
                                        where: str) -> None:
    broken = copy.deepcopy(golden_results)
    breakage(broken)
    with pytest.raises(ResultsError) as ei:
        validate(broken)
    assert where in str(ei.value)


def test_linkability_is_optional_object(golden_results: dict[str, Any]) -> None:
    r = copy.deepcopy(golden_results)
    r["linkability"] = {"policy": {"cfr-flow": 0.01}}
    validate(r)
    r["linkability"] = []
    with pytest.raises(ResultsError):
        validate(r)


def test_load_results_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="cannot read"):
        load_results(tmp_path / "nope.json")
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match="not JSON"):
        load_results(tmp_path)
    bad.write_text(json.dumps({"schema_version": 9}))
    with pytest.raises(ResultsError, match="schema_version 9"):
        load_results(bad)
    bad.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(ResultsError, match="does not match schema|do not match schema"):
        load_results(bad)
    assert ResultsError("x").exit_code == 2


def test_reanalyse_without_results_json(run_dir: Path) -> None:
    (run_dir / "results.json").unlink()
    res = reanalyse_run(run_dir)
    validate(res)
    assert res["provenance"]["git_commit"] is None
    assert (run_dir / "results.json").is_file()
    assert res["verdicts"]["no_added_delay"]["paths"]["proxy"]["verdict"] == "slower"


def test_reanalyse_keeps_provenance_and_other_parts(run_dir: Path) -> None:
    data = json.loads((run_dir / "results.json").read_text())
    data["leak_check"] = {"icmp_quotes_subscriber": False}
    data["linkability"] = {"done": True}
    data["summaries"] = []
    (run_dir / "results.json").write_text(json.dumps(data))
    res = reanalyse_run(run_dir)
    assert res["leak_check"] == {"icmp_quotes_subscriber": False}
    assert res["linkability"] == {"done": True}
    assert res["provenance"]["cpu_model"] == "golden CPU"
    assert len(res["summaries"]) > 0


def test_collect_provenance_never_crashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "TOOL_COMMANDS", {
        "missing": (("cfrbench-no-such-tool-xyz", "--version"), r"(\S+)"),
        "failing": (("false",), r"(\S+)"),
    })
    p = provenance.collect_provenance(tools=["missing", "failing", "python", "unknown"])
    assert p["tool_versions"]["missing"] is None
    assert p["tool_versions"]["failing"] is None
    assert p["tool_versions"]["unknown"] is None
    assert p["tool_versions"]["python"]
    assert p["cores"] and p["cores"] >= 1
    assert p["link_emulation"]["mechanism"] is None
    assert provenance.git_state(Path("/")) == (None, None)
    assert provenance.os_release("/nonexistent") is None
    assert provenance.cpu_model("/nonexistent") is not False


def test_tcp_default_congestion_is_read_or_null(tmp_path: Path) -> None:
    f = tmp_path / "tcp_congestion_control"
    f.write_text("bbr\n")
    assert provenance.tcp_default_congestion(str(f)) == "bbr"
    assert provenance.tcp_default_congestion(str(tmp_path / "absent")) is None
    live = provenance.collect_provenance(tools=[])["tcp_default_congestion_control"]
    assert live == Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()


def test_calibration_block() -> None:
    c = provenance.calibration(10.0, [10.1, 9.9, 10.3, 10.0])
    assert c["measured_ms"] == pytest.approx(10.05)
    assert c["error_median_ms"] == pytest.approx(0.1)
    assert provenance.calibration(5.0, [])["measured_ms"] is None
