"""The benchmark suite end to end on the real testbed.

One `cfrbench run --profile tiny` (every default benchmark, every path, a two-point detour
sweep for latency) runs once per module through the real topology, relay, front door,
proxies and iperf3; the tests then check what a user would rely on: a results.json that
validates against its schema, a report with its plots, raw records that re-render the same
report offline, a gate that passes a run against itself, and the numbers themselves
showing the expected shape (proxy penalty grows with the detour, the CFR's does not).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.paths import of_families
from benchmarks.results import validate
from tests.conftest import require_root

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    require_root()
    out = tmp_path_factory.mktemp("bench") / "run"
    proc = subprocess.run([sys.executable, "-m", "cfrbench.cli", "run", "--profile", "tiny",
                           "--out", str(out)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    return out, proc.stdout


@pytest.fixture(scope="module")
def results(tiny_run: tuple[Path, str]) -> dict:
    return json.loads((tiny_run[0] / "results.json").read_text())


def _comparison(results: dict, metric: str, path: str, delay: float) -> dict:
    for c in results["comparisons"]:
        if (c["metric"] == metric and c["path"] == path and c["baseline"] == "direct"
                and c["sweep"].get("delay_ms") == delay):
            return c
    raise AssertionError(f"no comparison for {metric}/{path} at {delay} ms")


def test_results_validate_and_carry_provenance(results: dict) -> None:
    validate(results)  # raises on any schema violation
    assert results["profile"] == "tiny"
    assert set(results["benchmarks"]) >= {"latency", "throughput", "connrate"}
    prov = results["provenance"]
    assert prov["git_commit"] and prov["kernel"] and prov["link_emulation"]
    assert results["leak_check"]["passed"] is True
    assert results["leak_check"]["hits"] == 0 and results["leak_check"]["control_hits"] > 0


def test_every_path_was_measured_without_failures(results: dict) -> None:
    measured = {s["path"] for s in results["summaries"] if s["n"] > 0}
    assert measured == set(of_families([4]))  # tiny measures IPv4 (run --family for IPv6)
    failed = {(s["measurement"], s["path"]): s["n_failed"] for s in results["summaries"]
              if s["n_failed"]}
    assert not failed, failed


def test_connection_samples_are_medians_of_several_connections(
        tiny_run: tuple[Path, str]) -> None:
    """Every measured https_request sample made CONNECTIONS_PER_SAMPLE connections and its
    handshake value is the median of their handshake times (benchmarks/RECORDS.md)."""
    from benchmarks.tools import CONNECTIONS_PER_SAMPLE, median_of

    lines = (tiny_run[0] / "raw" / "measurements.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines if x.strip()]
    handshakes = [r for r in recs if r["measurement"] == "connection"
                  and r["metric"] == "handshake_time" and r["value"] is not None]
    assert handshakes
    for r in handshakes:
        each = r["extra"]["handshake_ms_each"]
        assert r["extra"]["connections"] == len(each) == CONNECTIONS_PER_SAMPLE
        assert r["value"] == pytest.approx(median_of(each), abs=1e-3)


def test_leak_summary_states_its_controls_and_set_aside(results: dict) -> None:
    leak = results["leak_check"]
    assert leak["valid"] is True and leak["control_missing"] == []
    assert leak["control_categories"] and all(n > 0 for n in leak["control_categories"].values())
    from benchmarks.leakcheck import SET_ASIDE_LIMIT

    assert isinstance(leak["set_aside"], int) and leak["set_aside_limit"] == SET_ASIDE_LIMIT
    assert leak["set_aside_over_limit"] == []


def test_report_and_plots_are_written(tiny_run: tuple[Path, str]) -> None:
    run_dir, stdout = tiny_run
    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    pngs = sorted(run_dir.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"added_delay_latency.png", "cdf_latency_connection_handshake_time.png",
            "sweep_latency_handshake_time.png", "throughput_throughput_throughput.png"} <= names
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000, p
        assert p.name in md and p.name in html
    assert "no_added_delay" in stdout or "no added delay" in stdout.lower()
    assert str(run_dir / "results.json") in stdout.replace("\n", "")


def test_report_rerenders_from_raw_records(tiny_run: tuple[Path, str]) -> None:
    run_dir, _ = tiny_run
    before = json.loads((run_dir / "results.json").read_text())
    (run_dir / "report.md").unlink()
    proc = subprocess.run([sys.executable, "-m", "cfrbench.cli", "report", str(run_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    after = json.loads((run_dir / "results.json").read_text())
    assert (run_dir / "report.md").exists()
    assert after["comparisons"] == before["comparisons"]
    assert after["verdicts"] == before["verdicts"]


def test_gate_finds_nothing_wrong_with_a_run_against_itself(tiny_run: tuple[Path, str],
                                                           tmp_path: Path) -> None:
    """A run against itself: no regression, no flipped verdict, no missing figure. The tiny
    profile's few blocks leave gated rows undecided, and the gate fails those on purpose
    (a CI too wide to decide is not a pass), saying how to rerun; with none undecided it
    passes."""
    run_dir, _ = tiny_run
    out = tmp_path / "gate.json"
    proc = subprocess.run([sys.executable, "-m", "cfrbench.cli", "compare", str(run_dir),
                           str(run_dir), "--json", str(out)], capture_output=True, text=True,
                          timeout=300)
    rows = json.loads(out.read_text())["rows"]
    verdicts = {r["verdict"] for r in rows}
    assert not verdicts & {"regressed", "missing", "flipped"}, proc.stdout[-3000:]
    undecided = [r for r in rows if r["verdict"] == "undecided"]
    if undecided:
        assert proc.returncode == 1 and "rerun" in proc.stdout
    else:
        assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout[-3000:]


def test_proxy_penalty_tracks_the_detour_and_the_cfr_stays_flat(results: dict) -> None:
    """From 0 to 20 ms of extra one-way detour (40 ms more round trip), the proxy's added
    handshake time grows by at least one extra round trip; the CFR's does not move."""
    proxy0 = _comparison(results, "handshake_time", "proxy", 0.0)["difference"]["value"]
    proxy20 = _comparison(results, "handshake_time", "proxy", 20.0)["difference"]["value"]
    chain20 = _comparison(results, "handshake_time", "proxy-chain", 20.0)["difference"]["value"]
    cfr0 = _comparison(results, "handshake_time", "cfr-flow", 0.0)["difference"]["value"]
    cfr20 = _comparison(results, "handshake_time", "cfr-flow", 20.0)["difference"]["value"]
    assert proxy20 - proxy0 > 40.0, (proxy0, proxy20)
    assert chain20 > proxy20, (proxy20, chain20)
    assert abs(cfr20 - cfr0) < 5.0 and abs(cfr20) < 5.0, (cfr0, cfr20)


def test_every_measured_network_was_calibration_gated(results: dict) -> None:
    """Pre-flight plus one record per benchmark network (the latency sweep alone brings up
    two), each with its links' errors and a passed gate; the worst link over all of them is
    the provenance's headline calibration."""
    networks = results["provenance"]["link_emulation"]["networks"]
    assert networks[0]["network"] == "pre-flight"
    measured = networks[1:]
    sweeps = {n["sweep"].get("delay_ms") for n in measured if "latency" in n["benchmarks"]}
    assert sweeps == {0.0, 20.0}
    for n in measured:
        assert n["gate"]["passed"] is True and n["gate"]["failures"] == []
        assert any(link["samples"] for link in n["links"]), n["network"]
    worst = max(n["worst_error_median_ms"] for n in networks
                if n["worst_error_median_ms"] is not None)
    assert results["provenance"]["link_emulation"]["calibration"]["error_median_ms"] == worst


def test_verdicts_are_sequential_and_honest(results: dict) -> None:
    """Every comparison carries its sequential plan and stopping point; the words are the
    decisive ones or say why not; page load's 3 tiny blocks are too few for any interval."""
    words = {"equivalent", "slower", "faster", "worse", "better", "undecided",
             "insufficient data", "report only"}
    for c in results["comparisons"]:
        assert c["verdict"] in words, c["verdict"]
        seq = c["test"]["sequential"]
        assert seq["blocks"] in seq["looks"] and seq["n"] <= seq["blocks"]
        if c["verdict"] == "undecided":
            assert c["samples_needed"] is None or c["samples_needed"] > seq["n"]
        if c["measurement"] == "page_load":
            assert c["verdict"] == "insufficient data" and c["test"]["ci"]["low"] is None
    steps = results["parameters"]["runner"]["sequential"]
    assert {(s["benchmark"], s["measurement"]) for s in steps} >= {("latency", "connection")}
