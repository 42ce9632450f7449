"""The main job (`make run` / `cfrbench run`): bring the default topology up, probe and
calibrate it, check connectivity and delays, run the benchmarks, write the report.

Phases print progress; every phase's output lands in `results/<run-id>/`, raw records
under `raw/`, so the analysis can be re-run offline.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from testbed import lifecycle, paths
from testbed.calibration import calibrate
from testbed.calibration import summary as calibration_summary
from testbed.errors import CfrbenchError, ParameterError
from testbed.network import Network
from testbed.probe import probe_json, run_probe
from testbed.scenario import Scenario
from testbed.smoke import ping_all, rtt_table

PROFILES = ("quick", "full", "tiny")
# Calibration must not silently run with the wrong delay: beyond this median error the
# run fails instead of reporting figures measured on a mis-emulated network.
CALIBRATION_MAX_MEDIAN_ERROR_MS = 1.0


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def rtt_pairs(net: Network) -> list[tuple[str, str]]:
    pairs = [("s1", "fd"), ("s1", "dns")]
    pairs += [("s1", p) for p in net.hosts("relay-provider")]
    if "crowd" in net.nodes:
        pairs.append(("crowd", "fd"))
    return pairs


def run_main_job(scenario: Scenario, profile: str = "quick", benchmarks: list[str] | None = None,
                 out_dir: str | None = None) -> int:
    if profile not in PROFILES:
        raise ParameterError("profile", profile, ", ".join(PROFILES))
    console = Console(highlight=False)
    run_id = new_run_id()
    run_dir = Path(out_dir) if out_dir else paths.RESULTS_DIR / run_id
    (run_dir / "raw").mkdir(parents=True, exist_ok=True)
    results: dict = {"schema_version": 1, "run_id": run_id, "created": time.time(),
                     "profile": profile, "parameters": scenario.to_dict()}

    console.rule(f"cfrbench run {run_id} (profile {profile})")
    console.print("[1/5] probing this machine")
    probe = probe_json(run_probe())
    results["probe"] = probe
    if not probe["usable"]:
        missing = [k for k, c in probe["checks"].items()
                   if c["required"] and c["verdict"] == "missing"]
        raise CfrbenchError(f"this machine lacks required capabilities: {', '.join(missing)} "
                            "(see 'cfrbench probe')")

    failed = False
    with lifecycle.run_registry("run", info={"run_dir": str(run_dir)}) as registry:
        console.print(f"[2/5] bringing up the topology (run prefix {registry.prefix})")
        with Network(scenario, registry) as net:
            results["network"] = {"mechanism": net.mechanism, "timings": dict(net.timings),
                                  "nodes": len(net.info), "delay_nodes": len(net.delay_nodes())}
            console.print(f"      up in {net.timings['up_s']:.1f} s, {len(net.info)} nodes, "
                          f"{len(net.delay_nodes())} delay lines ({net.mechanism})")
            console.print("[3/5] calibrating link emulation")
            cal = calibrate(net)
            results["link_emulation"] = {"mechanism": net.mechanism,
                                         "calibration": calibration_summary(cal)}
            bad = [c for c in cal if not c.samples
                   or c.error_median_ms > CALIBRATION_MAX_MEDIAN_ERROR_MS]
            if bad:
                failed = True
                console.print(f"[red]calibration failed on {', '.join(c.link for c in bad)}[/]")
            console.print("[4/5] connectivity (every host pair, IPv4 and IPv6) and RTTs")
            pings = [ping_all(net, 4), ping_all(net, 6)]
            results["connectivity"] = [asdict(p) for p in pings]
            rows = rtt_table(net, rtt_pairs(net))
            results["rtt"] = [asdict(r) for r in rows]
            if any(p.failures for p in pings):
                failed = True
        results["network"]["timings"].update(net.timings)
    (run_dir / "raw" / "calibration.json").write_text(
        json.dumps([asdict(c) for c in cal], indent=1))
    console.print("[5/5] writing results")
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    _write_report(run_dir, results, cal, pings, rows)
    _print_summary(console, cal, pings, rows)
    console.print(f"results: {run_dir / 'results.json'}   report: {run_dir / 'report.md'}")
    return 1 if failed else 0


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def _print_summary(console: Console, cal, pings, rows) -> None:
    table = Table(title="link emulation calibration (round trip)")
    for col in ("link", "class", "configured ms", "median ms", "p99 ms", "median error ms"):
        table.add_column(col, justify="right")
    for c in cal:
        table.add_row(c.link, c.link_class, _fmt(c.configured_rtt_ms), _fmt(c.measured_median_ms),
                      _fmt(c.measured_p99_ms), _fmt(c.error_median_ms))
    console.print(table)
    for p in pings:
        verdict = "[green]all reachable[/]" if not p.failures else f"[red]{len(p.failures)} " \
                  f"failed: {p.failures[:5]}[/]"
        console.print(f"pingall IPv{p.family}: {p.pairs} pairs, {verdict}")
    table = Table(title="round-trip times on the main paths")
    for col in ("path", "IP", "configured ms", "median ms", "p99 ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r.src} -> {r.dst}", f"v{r.family}", _fmt(r.configured_ms),
                      _fmt(r.median_ms), _fmt(r.p99_ms))
    console.print(table)


def _write_report(run_dir: Path, results: dict, cal, pings, rows) -> None:
    lines = [f"# cfrbench run {results['run_id']}", "",
             f"Profile `{results['profile']}`, link emulation "
             f"`{results['link_emulation']['mechanism']}`.", "",
             "## Link emulation calibration", "",
             "| link | class | configured RTT ms | measured median ms | p99 ms | median error ms |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {c.link} | {c.link_class} | {_fmt(c.configured_rtt_ms)} | "
              f"{_fmt(c.measured_median_ms)} | {_fmt(c.measured_p99_ms)} | "
              f"{_fmt(c.error_median_ms)} |" for c in cal]
    lines += ["", "## Connectivity", ""]
    lines += [f"- IPv{p.family}: {p.pairs} host pairs, {len(p.failures)} failures" for p in pings]
    lines += ["", "## Round-trip times", "", "| path | IP | configured ms | median ms | p99 ms |",
              "|---|---|---:|---:|---:|"]
    lines += [f"| {r.src} -> {r.dst} | v{r.family} | {_fmt(r.configured_ms)} | "
              f"{_fmt(r.median_ms)} | {_fmt(r.p99_ms)} |" for r in rows]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
