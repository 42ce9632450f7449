"""Analyse an emulated linkability run: join records per policy, link, score, report.

``analyse_emulation`` is the offline entry the benchmark runner calls after the emulated
workload ran once per policy (same workload each time). It can be re-run on the raw records
kept with a report. If ``model_params`` is given it also applies the model's alias semantics
(``simulator.apply_policy``) to each policy's *own emulated trace* and checks the emulation
against the model with ``simulator.validate_against_emulation``: the same flows, times,
tickets and households, only the alias choice modelled, so disagreement points at a
difference between the relay's behaviour and the model (or at a join/log problem).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.linkability import linkers as lk
from benchmarks.linkability.observations import (
    access_observer_view,
    join_records,
    load_many,
    trait_vector,
)
from benchmarks.linkability.report import clean_json, ordered_policies, write_report
from benchmarks.linkability.simulator import (
    SimParams,
    apply_policy,
    evaluate,
    trace_from_flows,
    validate_against_emulation,
)
from benchmarks.linkability.workload import Workload, load_household_table

Paths = str | Path | Sequence[str | Path]


def _validation_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = [
        "## Model vs emulation (same trace, modelled alias choice)",
        "",
        "| policy | metric | emulated | model | delta | tolerance | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['metric']} | {r['emulated']:.3g} | {r['simulated']:.3g} | "
            f"{r['delta']:+.3g} | {r['tolerance']} | {'pass' if r['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def analyse_emulation(
    ground_truth_paths_by_policy: Mapping[str, Paths],
    frontdoor_log_paths_by_policy: Mapping[str, Paths],
    households: str | Path | dict | Workload,
    out_dir: str | Path,
    window_s: float = 60.0,
    linkers: Mapping[str, lk.Linker] | None = None,
    model_params: SimParams | None = None,
) -> dict:
    """Join, link and score each policy's records; write markdown + PNGs; return a dict.

    ``households`` is the workload's household table (or its path, or the Workload).
    Returns the ``linkability`` results.json section with, per policy, the ``evaluate()``
    metrics, join coverage and the access observer's view; plus ``validation`` rows when
    ``model_params`` (pool size, epoch, block size...) is given.
    """
    table = load_household_table(households)
    order = [h["household"] for h in table.get("households", [])]
    sensitive = table.get("sensitive_sites", [])
    linkers = dict(linkers) if linkers is not None else lk.default_linkers()
    results: dict[str, dict] = {}
    coverage: dict[str, dict] = {}
    observer: dict[str, dict] = {}
    model: dict[str, dict] = {}
    for pol in ordered_policies(ground_truth_paths_by_policy):
        if pol not in frontdoor_log_paths_by_policy:
            raise KeyError(f"policy {pol!r} has ground truth but no front-door log")
        gt = load_many(ground_truth_paths_by_policy[pol])
        fd = load_many(frontdoor_log_paths_by_policy[pol])
        ft, cov = join_records(gt, fd, sensitive, order)
        lab = ft.labelled()
        trait = trait_vector(lab, table)
        coverage[pol] = cov.as_dict()
        observer[pol] = access_observer_view(gt, fd)
        if len(lab) == 0:
            results[pol] = {"flows": 0, "households": 0, "error": "no joined flows"}
            continue
        results[pol] = evaluate(lab, trait, linkers, window_s, profile_linkers=None)
        results[pol]["coverage"] = coverage[pol]
        if model_params is not None:
            tr = trace_from_flows(lab, trait)
            model_ft = apply_policy(tr, pol, model_params)
            model[pol] = evaluate(model_ft, trait, linkers, window_s, profile_linkers=("addr",))
    scored = {p: r for p, r in results.items() if "pairwise" in r}
    rows = validate_against_emulation(scored, model) if model else []
    section = write_report(
        scored,
        out_dir,
        title="Linkability (emulation)",
        extra_markdown=_validation_markdown(rows),
        prefix="linkability",
    )
    section["coverage"] = clean_json(coverage)
    section["access_observer"] = clean_json(observer)
    section["window_s"] = window_s
    if model:
        section["model_on_emulated_trace"] = clean_json(model)
        section["validation"] = clean_json(rows)
        section["validation_passed"] = all(r["passed"] for r in rows)
    return section
