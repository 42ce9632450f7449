"""Render a run directory into report.md, report.html, PNG plots and a console table.

Why from the run directory alone: `cfrbench report RUN_DIR` must work offline, months later,
on a copy of the directory. So the report re-analyses `raw/` with the definitions and seed
stored in results.json (or defaults when there is none) and draws only from that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from rich.console import Console
from rich.table import Table

from benchmarks import paths as path_table
from benchmarks import plots
from benchmarks.analysis import verdict_text
from benchmarks.definitions import BenchmarkDefinition, PlotSpec
from benchmarks.records import read_records
from benchmarks.registry import BASELINE_PATH, metric_spec
from benchmarks.results import definitions_from_results, load_results, reanalyse_run

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
DEFAULT_CDF_METRICS = ("handshake_time", "ttfb")
VERDICT_STYLE = {"equivalent": "green", "slower": "red", "worse": "red", "faster": "cyan",
                 "better": "cyan", "not equivalent": "yellow", "insufficient data": "yellow",
                 "undecided": "yellow", "report only": "dim"}


def fmt(x: Any, digits: int = 4) -> str:
    """Compact number for tables: '–' for missing, `digits` significant figures (no
    exponent below 10^6 so columns stay readable)."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if abs(x) >= 10**digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def fmt_ci(ci: Mapping[str, Any] | None) -> str:
    if not ci or ci.get("low") is None or ci.get("high") is None:
        return "–"
    return f"[{fmt(ci['low'])}, {fmt(ci['high'])}]"


def fmt_sweep(sweep: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(sweep.items())) or "–"


@dataclass(frozen=True)
class PlotFile:
    benchmark: str
    kind: str
    title: str
    file: str  # relative to the run directory


def _first_sweep(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    points = sorted({tuple(sorted(r["sweep"].items())) for r in rows})
    return dict(points[0]) if points else {}


def _default_plot_specs(metrics: Sequence[str], has_sweep: bool) -> list[PlotSpec]:
    latency = [m for m in metrics if metric_spec(m).kind == "latency"]
    higher = [m for m in metrics if metric_spec(m).kind in ("throughput", "rate")]
    specs = []
    cdf = [m for m in DEFAULT_CDF_METRICS if m in metrics]
    if cdf:
        specs.append(PlotSpec("cdf", tuple(cdf)))
    if latency:
        specs.append(PlotSpec("added_delay", tuple(latency)))
    if higher:
        specs.append(PlotSpec("throughput", tuple(higher)))
    if has_sweep and latency:
        specs.append(PlotSpec("sweep", tuple(latency)))
    return specs


def make_plots(
    run_dir: Path, results: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
    definitions: Mapping[str, BenchmarkDefinition],
) -> list[PlotFile]:
    """Draw every plot the definitions ask for (defaults without one) into RUN_DIR."""
    out: list[PlotFile] = []
    for bench in results["benchmarks"] or sorted({s["benchmark"] for s in results["summaries"]}):
        summaries = [s for s in results["summaries"] if s["benchmark"] == bench]
        comps = [c for c in results["comparisons"] if c["benchmark"] == bench]
        if not summaries:
            continue
        d = definitions.get(bench)
        baseline = d.analysis.baseline if d else BASELINE_PATH
        metrics = list(dict.fromkeys(s["metric"] for s in summaries))
        has_sweep = any(s["sweep"] for s in summaries)
        specs = list(d.plots) if d and d.plots else _default_plot_specs(metrics, has_sweep)
        first = _first_sweep(summaries)
        at_first = f" at {fmt_sweep(first)}" if first else ""
        # each family's paths against that family's twin of the baseline (direct, direct6)
        vs_base = [c for c in comps
                   if c["baseline"] in path_table.expand([baseline], path_table.FAMILIES)]
        for spec in specs:
            wanted = [m for m in (spec.metrics or metrics) if m in metrics]
            if spec.kind == "cdf":
                for metric in wanted:
                    for meas in dict.fromkeys(s["measurement"] for s in summaries
                                              if s["metric"] == metric):
                        samples: dict[str, list[float]] = {}
                        for r in records:
                            if (r["benchmark"] == bench and r["measurement"] == meas
                                    and r["metric"] == metric and not r["warmup"]
                                    and r["value"] is not None and r["sweep"] == first):
                                samples.setdefault(r["path"], []).append(r["value"])
                        unit = next(s["unit"] for s in summaries if s["metric"] == metric)
                        title = spec.title or f"{bench}: CDF of {metric} ({meas}){at_first}"
                        name = f"cdf_{bench}_{meas}_{metric}.png"
                        if plots.cdf_plot(samples, metric, unit, title, run_dir / name):
                            out.append(PlotFile(bench, "cdf", title, name))
            elif spec.kind == "added_delay":
                lat = [m for m in wanted if metric_spec(m).kind == "latency"]
                rows = [c for c in vs_base if c["sweep"] == first]
                title = spec.title or f"{bench}: added delay vs {baseline}{at_first}"
                name = f"added_delay_{bench}.png"
                if plots.added_delay_plot(rows, lat, title, run_dir / name):
                    out.append(PlotFile(bench, "added_delay", title, name))
            elif spec.kind == "throughput":
                rows = [s for s in summaries if s["sweep"] == first]
                for metric in wanted:
                    title = spec.title or f"{bench}: {metric} per path{at_first}"
                    name = f"throughput_{bench}_{metric}.png"
                    if plots.throughput_plot(rows, metric, title, run_dir / name):
                        out.append(PlotFile(bench, "throughput", title, name))
            elif spec.kind == "sweep":
                for metric in wanted:
                    title = spec.title or f"{bench}: {metric} penalty vs {baseline} by delay"
                    name = f"sweep_{bench}_{metric}.png"
                    if plots.sweep_plot(vs_base, metric, title, run_dir / name):
                        out.append(PlotFile(bench, "sweep", title, name))
    return out


def _stopped(test: Mapping[str, Any]) -> str:
    """Where the sequential test stopped: "20/60 (look 2/6)"; "–" for old results."""
    seq = test.get("sequential")
    if not seq:
        return "–"
    looks = seq.get("looks") or []
    budget = looks[-1] if looks else "?"
    return f"{seq.get('blocks', '?')}/{budget} (look {seq.get('look', '?')}/{len(looks)})"


def _comparison_row(c: Mapping[str, Any]) -> dict[str, Any]:
    test = c["test"]
    margin = (f"±{fmt(test['margin'])} {c['unit']}" if test["test"] == "tost"
              else f"ratio 1±{fmt(test['margin'])}")
    level = test["ci"].get("level")
    return {
        "measurement": c["measurement"], "metric": c["metric"], "unit": c["unit"],
        "sweep": fmt_sweep(c["sweep"]), "baseline": c["baseline"], "path": c["path"],
        "n": f"{c['n_baseline']}/{c['n_path']}",
        "median_baseline": fmt(c["median_baseline"]), "median_path": fmt(c["median_path"]),
        "diff": fmt(c["difference"]["value"]), "diff_ci": fmt_ci(c["difference"]["ci"]),
        "ratio": fmt(c["ratio"]["value"]), "ratio_ci": fmt_ci(c["ratio"]["ci"]),
        "test_ci": fmt_ci(test["ci"]), "margin": margin,
        "verdict": verdict_text(c["verdict"], c.get("samples_needed")),
        "verdict_class": c["verdict"].replace(" ", "-"),
        "level": f"{100 * level:.1f}%" if level else "–", "stopped": _stopped(test),
        "mw_p": fmt(c["mann_whitney"]["p_value"], 2),
    }


def _summary_row(s: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "measurement": s["measurement"], "metric": s["metric"], "unit": s["unit"],
        "sweep": fmt_sweep(s["sweep"]), "path": s["path"], "n": s["n"],
        "n_failed": s.get("n_failed", 0), "median": fmt(s["median"]), "p95": fmt(s["p95"]),
        "p99": fmt(s["p99"]), "ci": fmt_ci(s["ci"]),
    }


def leak_paragraph(leak: Mapping[str, Any]) -> str:
    """The leak check in words: what was scanned, what was found, whether the positive
    control (route, where the front door does see subscribers) hit every category the scanner
    looks in, and what was set aside under which rule."""
    verdict = "passed" if leak.get("passed") else "FAILED"
    cats = leak.get("control_categories") or {}
    control = (", ".join(f"{c} {n}" for c, n in cats.items()) if cats
               else f"{leak.get('control_hits', 0)} hits")
    line = (f"{leak.get('packets', 0)} packets captured on the front-door link under "
            f"{', '.join(leak.get('policies', []))}: {leak.get('hits', 0)} carried a "
            f"subscriber address or prefix. Positive control under route, hits per category: "
            f"{control}")
    missing = leak.get("control_missing") or []
    line += (f" (no hit in {', '.join(missing)}: the scan is not shown to work there, so "
             "the check is not valid)." if missing else ".")
    set_aside = leak.get("set_aside", leak.get("excluded_preexisting", 0))
    limit = leak.get("set_aside_limit", 8)
    if set_aside:
        line += (f" {set_aside} packets were set aside: only payload-free FIN/RST/ACK segments "
                 "of flows whose sockets were ended before the switch to the aliasing policy "
                 f"(limit {limit} per capture)")
        over = leak.get("set_aside_over_limit") or []
        line += (f"; over the limit under {', '.join(over)}." if over else ".")
    return line + f" Verdict: **{verdict}**."


def _extra_sections(run_dir: Path, results: Mapping[str, Any]) -> tuple[str, str]:
    """Leak check and linkability sections, appended to both report formats."""
    import html as _html

    md, page = [], []
    leak = results.get("leak_check") or {}
    if leak:
        line = leak_paragraph(leak)
        md += ["", "## Leak check", "", line, ""]
        page.append(f"<h2>Leak check</h2><p>{_html.escape(line.replace('**', ''))}</p>")
    res = results.get("resilience") or {}
    if res.get("rows"):
        cols = ("name", "load_held", "faults_injected", "faults_survived", "flows_lost",
                "leaks_found", "passed")
        md += ["", "## Resilience", "", "| " + " | ".join(c.replace("_", " ") for c in cols)
               + " |", "|" + "---|" * len(cols)]
        md += ["| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |" for r in res["rows"]]
        cells = "".join("<tr>" + "".join(f"<td>{_html.escape(str(r.get(c, '-')))}</td>"
                                         for c in cols) + "</tr>" for r in res["rows"])
        head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
        page.append(f"<h2>Resilience</h2><table><tr>{head}</tr>{cells}</table>")
    link_md = run_dir / "linkability.md"
    if link_md.exists():
        text = link_md.read_text(encoding="utf-8")
        md += ["", text]
        images = "".join(f'<p><img src="{p.name}" alt="{p.stem}"></p>'
                         for p in sorted(run_dir.glob("linkability*.png")))
        page.append(f"<h2>Linkability</h2>{images}<pre>{_html.escape(text)}</pre>")
    return ("\n".join(md) + "\n" if md else ""), "".join(page)


def report_context(
    results: Mapping[str, Any], plot_files: Sequence[PlotFile],
    definitions: Mapping[str, BenchmarkDefinition],
) -> dict[str, Any]:
    """Everything the templates show, pre-formatted (templates stay logic-free)."""
    benches = []
    for name in results["benchmarks"]:
        d = definitions.get(name)
        benches.append({
            "name": name,
            "title": d.title if d else name,
            "description": (d.description.strip() if d else ""),
            "comparisons": [_comparison_row(c) for c in results["comparisons"]
                            if c["benchmark"] == name],
            "summaries": [_summary_row(s) for s in results["summaries"]
                          if s["benchmark"] == name],
            "plots": [p for p in plot_files if p.benchmark == name],
        })
    verdicts = []
    for group, v in results["verdicts"].items():
        verdicts.append({
            "group": group, "question": v["question"],
            "paths": [{"path": p, **pv,
                       "text": verdict_text(pv["verdict"], pv.get("samples_needed")),
                       "verdict_class": pv["verdict"].replace(" ", "-"),
                       "counts": ", ".join(f"{k}: {n}" for k, n in pv["counts"].items())}
                      for p, pv in v["paths"].items()],
        })
    prov = results["provenance"]
    cal = prov["link_emulation"]["calibration"]
    return {
        "r": results, "prov": prov, "benchmarks": benches, "verdicts": verdicts,
        "calibration": {k: fmt(v) for k, v in cal.items() if not isinstance(v, list)},
        "networks": network_rows(prov["link_emulation"].get("networks") or []),
        "tools": sorted(prov["tool_versions"].items()),
        "baseline": BASELINE_PATH,
    }


def network_rows(networks: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per calibrated network (pre-flight and every benchmark network)."""
    rows = []
    for n in networks:
        gate = n.get("gate") or {}
        failures = gate.get("failures") or []
        sweep = fmt_sweep(n.get("sweep") or {})
        retried = " (passed when measured again)" if gate.get("first_attempt") else ""
        rows.append({
            "network": str(n.get("network", "?")),
            "what": ", ".join(n.get("benchmarks") or []) + ("" if sweep == "–" else
                                                             f" @ {sweep}"),
            "links": str(len([x for x in n.get("links", []) if x.get("samples")])),
            "error_median_ms": fmt(n.get("worst_error_median_ms")),
            "error_p99_ms": fmt(n.get("worst_error_p99_ms")),
            "gate": ("passed" + retried) if gate.get("passed", True) and not failures
            else "FAILED: " + "; ".join(failures),
        })
    return rows


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _effect(c: Mapping[str, Any]) -> str:
    """Latency and loss: shift B-A with its CI; others: ratio B/A with its CI."""
    if c["test"]["test"] == "tost":
        d = c["difference"]
        sign = "+" if (d["value"] or 0) >= 0 else ""
        return f"{sign}{fmt(d['value'])} {c['unit']} {fmt_ci(d['ci'])}"
    r = c["ratio"]
    return f"×{fmt(r['value'])} {fmt_ci(r['ci'])}"


def summary_tables(results: Mapping[str, Any]) -> list[Table]:
    """One rich table per benchmark: every comparison, one line each."""
    tables = []
    for bench in results["benchmarks"]:
        comps = [c for c in results["comparisons"] if c["benchmark"] == bench]
        if not comps:
            continue
        t = Table(title=f"{bench} ({results['run_id']}, profile {results.get('profile') or '-'})")
        t.add_column("metric")
        t.add_column("sweep")
        t.add_column("A → B")
        t.add_column("median A", justify="right")
        t.add_column("median B", justify="right")
        t.add_column("effect [95% CI]", justify="right")
        t.add_column("verdict")
        t.add_column("blocks", justify="right")
        for c in comps:
            style = VERDICT_STYLE.get(c["verdict"], "")
            text = verdict_text(c["verdict"], c.get("samples_needed"))
            t.add_row(
                f"{c['measurement']}/{c['metric']}", fmt_sweep(c["sweep"]),
                f"{c['baseline']} → {c['path']}", fmt(c["median_baseline"]),
                fmt(c["median_path"]), _effect(c),
                f"[{style}]{text}[/]" if style else text, _stopped(c["test"]),
            )
        tables.append(t)
    return tables


def print_summary(results: Mapping[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    for t in summary_tables(results):
        console.print(t)
    for group, v in results["verdicts"].items():
        parts = [f"{p}: [{VERDICT_STYLE.get(pv['verdict'], '')}]"
                 f"{verdict_text(pv['verdict'], pv.get('samples_needed'))}[/]"
                 for p, pv in v["paths"].items()]
        if parts:
            console.print(f"[bold]{group}[/] " + "; ".join(parts))


def render_report(
    run_dir: str | Path, *, reanalyse: bool = True, console: Console | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Re-analyse RUN_DIR/raw/ (unless reanalyse=False: use results.json as is), draw the
    plots, write report.md and report.html, print the console table (unless quiet).

    Returns {"markdown": Path, "html": Path, "plots": [Path, ...], "results": dict}."""
    run_dir = Path(run_dir)
    results = reanalyse_run(run_dir) if reanalyse else load_results(run_dir)
    records = read_records(run_dir)
    definitions = definitions_from_results(results)
    plot_files = make_plots(run_dir, results, records, definitions)
    ctx = report_context(results, plot_files, definitions)
    env = _env()
    md = run_dir / REPORT_MD
    html = run_dir / REPORT_HTML
    extra_md, extra_html = _extra_sections(run_dir, results)
    md.write_text(env.get_template("report.md.j2").render(**ctx) + extra_md, encoding="utf-8")
    page = env.get_template("report.html.j2").render(**ctx)
    page = page.replace("</body>", extra_html + "</body>") if "</body>" in page \
        else page + extra_html
    html.write_text(page, encoding="utf-8")
    if not quiet:
        print_summary(results, console)
    return {"markdown": md, "html": html, "plots": [run_dir / p.file for p in plot_files],
            "results": results}
