"""The main job (`make run` / `cfrbench run`): probe the machine, bring the default topology
up and check it (calibration, every host pair over IPv4 and IPv6, RTTs), run the benchmarks
with every path interleaved on one network, analyse, and write the report.

Everything lands in `results/<run-id>/`: results.json (schema-versioned, with provenance),
report.md/report.html with PNG plots, raw records under raw/ so the analysis can be re-run
offline (`cfrbench report RUN_DIR`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.linkability_run import LinkabilityParams, run_linkability
from cfrbench.console import make_console
from testbed import lifecycle, paths
from testbed.calibration import LinkCalibration, calibrate, gate_failures
from testbed.calibration import summary as calibration_summary
from testbed.errors import CfrbenchError, UsageError
from testbed.network import Network
from testbed.probe import probe_json, run_probe
from testbed.scenario import Scenario
from testbed.smoke import ping_all, rtt_pairs, rtt_table
from topologies import load_topology

# A run must not report figures from a mis-emulated network: beyond this median error on
# any delayed link the calibration fails the run.
CALIBRATION_MAX_MEDIAN_ERROR_MS = 1.0


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _miscalibrated(cal: list[LinkCalibration]) -> tuple[list[str], list[str]]:
    """(failing link names, reasons) by the one calibration gate every network passes
    (testbed.calibration.gate_failures: echo replies, median error, emulator drops)."""
    failures = gate_failures(cal, CALIBRATION_MAX_MEDIAN_ERROR_MS)
    links = [c.link for c in cal if any(f.startswith(f"{c.link} ") for f in failures)]
    return links, failures


def preflight(net: Network, console: Console) -> tuple[dict, bool]:
    """Calibration, reachability of every host pair (v4 and v6), RTT on the main paths."""
    cal = calibrate(net)
    bad, failures = _miscalibrated(cal)
    first_attempt = None
    if bad:
        # A slow phase of a shared host delays the userspace delay line for a few seconds
        # (p99 errors of 20+ ms seen); a mis-emulating link stays bad when measured again.
        console.print(f"[yellow]calibration: {'; '.join(failures)}; measuring once more[/]")
        first_attempt = {**calibration_summary(cal), "failures": failures}
        cal = calibrate(net)
        bad, failures = _miscalibrated(cal)
    pings = [ping_all(net, 4), ping_all(net, 6)]
    rows = rtt_table(net, rtt_pairs(net))
    _print_preflight(console, cal, pings, rows)
    ok = not bad and not any(p.failures for p in pings)
    if bad:
        console.print(f"[red]calibration failed on {', '.join(bad)}: {'; '.join(failures)}[/]")
    data = {"calibration": {**calibration_summary(cal),
                            "gate": {"passed": not bad, "failures": failures,
                                     "first_attempt": first_attempt}},
            "calibration_first_attempt": first_attempt,
            "connectivity": [asdict(p) for p in pings],
            "rtt": [asdict(r) for r in rows],
            "timings": dict(net.timings)}
    return data, ok


def run_main_job(scenario: Scenario, profile: str = "quick", benchmarks: list[str] | None = None,
                 out_dir: str | None = None, seed: int = 1,
                 linkability: LinkabilityParams | None = None,
                 family: str | None = None) -> int:
    from benchmarks.definitions import load_benchmarks
    from benchmarks.provenance import collect_provenance
    from benchmarks.report import render_report
    from benchmarks.results import finalize_run
    from benchmarks.runner import RunOutcome, default_benchmarks, outcome_dict, run_benchmarks

    asked = list(benchmarks) if benchmarks else default_benchmarks(profile)
    names = [n for n in asked if n not in ("linkability", "resilience")]
    with_linkability = "linkability" in asked
    with_resilience = "resilience" in asked
    if names:
        load_benchmarks(names, profile, family=family)  # unknown name or profile: exit 2 now
    elif profile not in ("quick", "full", "tiny"):
        raise UsageError(f"unknown profile {profile!r}; allowed: quick, full, tiny")
    link_params = linkability or LinkabilityParams.for_profile(profile)
    if with_linkability:
        link_params.validate(max(scenario.population, link_params.households))
    console = make_console()
    run_id = new_run_id()
    run_dir = Path(out_dir) if out_dir else paths.RESULTS_DIR / run_id
    if (run_dir / "raw").exists() and any((run_dir / "raw").iterdir()):
        raise UsageError(f"{run_dir} already holds a run's raw records; choose another --out "
                         "(a run never mixes its records with another's)")
    (run_dir / "raw").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    console.rule(f"cfrbench run {run_id} (profile {profile}: {', '.join(asked)})")
    console.print("[1/5] probing this machine")
    probe = probe_json(run_probe())
    if not probe["usable"]:
        missing = [k for k, c in probe["checks"].items()
                   if c["required"] and c["verdict"] == "missing"]
        raise CfrbenchError(f"this machine lacks required capabilities: {', '.join(missing)} "
                            "(see 'cfrbench probe')")
    with lifecycle.run_registry("run", info={"run_dir": str(run_dir)}) as registry:
        console.print(f"[2/5] topology {scenario.topology} up and checked "
                      f"(run prefix {registry.prefix})")
        with Network(scenario, registry, topology=load_topology(scenario.topology)) as net:
            console.print(f"      up in {net.timings['up_s']:.1f} s: {len(net.info)} nodes, "
                          f"{len(net.delay_nodes())} links emulated by {net.mechanism}")
            pre, pre_ok = preflight(net, console)
        (run_dir / "raw" / "preflight.json").write_text(json.dumps(pre, indent=1))
        if not pre_ok:
            raise CfrbenchError(f"pre-flight checks failed; see {run_dir / 'raw/preflight.json'}")
        outcome = RunOutcome([], [], net.mechanism, 0, 0, [])
        if names:
            console.print("[3/5] benchmarks (paths interleaved in randomized order)")
            outcome = run_benchmarks(scenario, names, profile, run_dir, registry, console,
                                     seed, family=family)
        linkability_section = None
        if with_linkability:
            console.print("[3/5] linkability: one workload replayed per policy")
            linkability_section = run_linkability(scenario, link_params, run_dir, registry,
                                                  console)
        resilience_section = None
        if with_resilience:
            from benchmarks.resilience import run_resilience

            console.print("[3/5] resilience: load, faults and hostile input")
            resilience_section = run_resilience(scenario, run_dir, registry, console)
    console.print("[4/5] analysis")
    (run_dir / "raw" / "measurements.jsonl").touch()  # a linkability-only run has none
    link_emulation = _link_emulation(outcome.mechanism or net.mechanism, pre["calibration"],
                                     outcome.calibrations)
    provenance = collect_provenance(probe=probe, link_emulation=link_emulation)
    finalize_run(run_dir, outcome.definitions, run_id=run_id, profile=profile, seed=seed,
                 provenance=provenance,
                 parameters={"scenario": scenario.to_dict(), "runner": outcome_dict(outcome),
                             "preflight": pre},
                 leak_check=_leak_summary(outcome.leak_checks),
                 linkability=linkability_section, resilience=resilience_section)
    console.print("[5/5] report")
    out = render_report(run_dir, reanalyse=False, console=console)
    minutes = (time.monotonic() - started) / 60
    console.print(f"\n{outcome.samples} samples ({outcome.failed_samples} failed) in "
                  f"{minutes:.1f} min.  results: {run_dir / 'results.json'}")
    console.print(f"report: {out['markdown']}  {out['html']}  ({len(out['plots'])} plots)")
    leaks = _leak_summary(outcome.leak_checks)
    if leaks:
        console.print(leak_line(leaks))
    if resilience_section is not None:
        _print_resilience(console, resilience_section)
    for failure in outcome.calibration_failures:
        console.print(f"[red]calibration gate after the measurements: {failure}[/]")
    ok = outcome.failed_samples == 0 and (not leaks or leaks["passed"]) and (
        resilience_section is None or resilience_section.get("passed", False)) and (
        not outcome.calibration_failures)
    return 0 if ok else 1


RESILIENCE_COLUMNS = ("name", "load_held", "faults_injected", "faults_survived", "flows_lost",
                      "leaks_found", "passed")


def _print_resilience(console: Console, section: dict) -> None:
    table = Table(title="resilience")
    for col in RESILIENCE_COLUMNS:
        table.add_column(col.replace("_", " "), justify="right" if col != "name" else "left")
    for row in section.get("rows", []):
        table.add_row(*(str(row.get(c, "-")) for c in RESILIENCE_COLUMNS))
    console.print(table)


def _leak_summary(checks: list[dict]) -> dict:
    """One block for results.json from the per-network leak checks (empty: none ran).

    Valid only when every network's positive control (route) hit every category; the
    control counts per category are summed over the networks, and a category is missing
    when any network's control missed it (one network's blind scan is not hidden by
    another's hits)."""
    if not checks:
        return {}
    policies = sorted({p for c in checks for p in c["policies"]})
    categories: dict[str, int] = {}
    for c in checks:
        for cat, n in c.get("control_categories", {}).items():
            categories[cat] = categories.get(cat, 0) + int(n)
    missing = sorted({m for c in checks for m in c.get("control_missing", [])})
    set_aside = sum(c.get("set_aside", 0) for c in checks)
    return {
        "passed": all(c["passed"] for c in checks),
        "valid": all(c.get("valid", False) for c in checks),
        "hits": sum(c["hits"] for c in checks),
        "packets": sum(r["packets"] for c in checks for r in c["policies"].values()),
        "control_hits": sum(c["control"]["hits"] for c in checks),
        "control_categories": categories,
        "control_missing": missing,
        "set_aside": set_aside,
        "excluded_preexisting": set_aside,  # the older name
        "set_aside_limit": max((c.get("set_aside_limit", 0) for c in checks), default=0),
        "set_aside_over_limit": sorted({p for c in checks
                                        for p in c.get("set_aside_over_limit", [])}),
        "policies": policies,
        "checks": checks,
    }


def leak_line(leaks: dict) -> str:
    """The leak check's one line at the end of a run (rich markup)."""
    cats = ", ".join(f"{cat} {n}" for cat, n in leaks["control_categories"].items()) or "none"
    missing = (f" (no control hit: {', '.join(leaks['control_missing'])})"
               if leaks["control_missing"] else "")
    verdict = "[green]passed[/]" if leaks["passed"] else "[red]FAILED[/]"
    return (f"leak check ({leaks['packets']} packets on the front-door link under "
            f"{', '.join(leaks['policies'])}): {leaks['hits']} subscriber addresses seen; "
            f"control under route: {cats}{missing}; set aside {leaks['set_aside']} "
            f"(limit {leaks['set_aside_limit']} per capture): {verdict}")


def _calibration_for_schema(cal: dict) -> dict:
    """The provenance calibration block: worst link's configured/measured and errors."""
    links = [c for c in cal["links"] if c["samples"]]
    worst = max(links, key=lambda c: c["error_median_ms"], default=None)
    return {
        "configured_ms": worst["configured_rtt_ms"] if worst else None,
        "measured_ms": worst["measured_median_ms"] if worst else None,
        "error_median_ms": cal["worst_error_median_ms"],
        "error_p99_ms": cal["worst_error_p99_ms"],
        "links": cal["links"],
    }


def _link_emulation(mechanism: str, preflight_cal: dict, networks: list[dict]) -> dict:
    """Provenance of the link emulation: the worst link over the pre-flight network and every
    benchmark network (the ones that produced the numbers), and each network's own record
    (links, errors, gate outcome), so a reader sees the calibration behind every figure."""
    pre = {"network": "pre-flight", "benchmarks": ["pre-flight"], "sweep": {},
           **preflight_cal}
    every = [pre, *networks]
    links = [link for n in every for link in n.get("links", [])]
    valid = [n for n in every if n.get("worst_error_median_ms") is not None]
    worst = max(valid, key=lambda n: n["worst_error_median_ms"], default=None)
    block = _calibration_for_schema(worst if worst is not None else preflight_cal)
    block["error_p99_ms"] = max((n["worst_error_p99_ms"] for n in valid
                                 if n.get("worst_error_p99_ms") is not None), default=None)
    block["links"] = links
    return {"mechanism": mechanism, "calibration": block, "networks": every}


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def _print_preflight(console: Console, cal, pings, rows) -> None:
    table = Table(title="link emulation calibration (round trip, ms)")
    for col in ("link", "class", "configured", "median", "p99", "median error"):
        table.add_column(col, justify="right")
    for c in cal:
        table.add_row(c.link, c.link_class, _fmt(c.configured_rtt_ms),
                      _fmt(c.measured_median_ms), _fmt(c.measured_p99_ms),
                      _fmt(c.error_median_ms))
    console.print(table)
    for p in pings:
        verdict = "[green]all reachable[/]" if not p.failures else \
            f"[red]{len(p.failures)} failed: {p.failures[:5]}[/]"
        console.print(f"pingall IPv{p.family}: {p.pairs} host pairs, {verdict}")
    table = Table(title="round-trip times on the main paths (ms)")
    for col in ("path", "IP", "configured", "median", "p99"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r.src} -> {r.dst}", f"v{r.family}", _fmt(r.configured_ms),
                      _fmt(r.median_ms), _fmt(r.p99_ms))
    console.print(table)
