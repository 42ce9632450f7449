"""Analyse an emulated linkability run: join records per policy, link, score, report.

``analyse_emulation`` is the offline entry the benchmark runner calls after the emulated
workload ran once per policy (same workload each time). It can be re-run on the raw records
kept with a report. If ``model_params`` is given it also applies the model's alias semantics
(``simulator.apply_policy``) to each policy's *own emulated trace* and checks the emulation
against the model with ``simulator.validate_against_emulation``: the same flows, times,
tickets and households, only the alias choice modelled, so disagreement points at a
difference between the relay's behaviour and the model (or at a join/log problem).

The behavioural-signature check (``validation.compare_with_keys``) is *paired*: the model runs
on the emulation's own joined flows, so both tables hold the same households under the same
codes (the join's household order) and one household resample applies to both sides; an
unpaired CI (two independent resamples) is wider and let a wrong model pass. Each difference
CI is widened by the model's key-draw variance, measured over ``signature_keys`` further
model keys (``SimParams.seed``), as the point sweep (``validate_points``) does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.linkability import linkers as lk
from benchmarks.linkability.adversary import TraitSpec, adversary_cells, trait_attack
from benchmarks.linkability.belief import clustering_scores, sender_posteriors
from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.metrics import pairwise_ci
from benchmarks.linkability.observations import (
    access_observer_view,
    connections_only,
    join_records,
    load_many,
    trait_vector,
)
from benchmarks.linkability.profiling import profiling_curve, profiling_plot
from benchmarks.linkability.report import (
    adversary_markdown,
    clean_json,
    ordered_policies,
    write_report,
)
from benchmarks.linkability.simulator import (
    SimParams,
    apply_policy,
    evaluate,
    trace_from_flows,
    validate_against_emulation,
)
from benchmarks.linkability.validation import DEFAULT_KEYS, KEY_SEED_STRIDE, compare_with_keys
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


def trait_specs(ft: FlowTable, table: dict) -> list[TraitSpec]:
    """The strong (exclusive sites) and weak (shifted mix) traits of a household table."""
    hh_names = ft.names.get("household", [])
    by_name = {h["household"]: h for h in table.get("households", [])}
    strong = np.array([bool(by_name.get(h, {}).get("trait")) for h in hh_names], dtype=bool)
    specs = [TraitSpec("strong", strong, np.asarray(ft.sensitive, dtype=bool))]
    weak_sites = set(table.get("weak_sites", []))
    if weak_sites:
        weak = np.array([bool(by_name.get(h, {}).get("weak_trait")) for h in hh_names], bool)
        site_names = ft.names.get("site", [])
        is_weak_site = np.array([n in weak_sites for n in site_names], dtype=bool)
        signal = is_weak_site[ft.site] if ft.site.size else np.zeros(0, dtype=bool)
        specs.append(TraitSpec("weak", weak, signal))
    return specs


def adversary_section(
    lab: FlowTable, table: dict, policy: str, linker_labels: dict[str, np.ndarray], seed: int = 0
) -> dict:
    """Trait adversaries, belief, chance-corrected clustering and time to profiling."""
    specs = trait_specs(lab, table)
    out: dict = {"trait_attack": trait_attack(lab, specs, policy, seed=seed)}
    any_signal = np.zeros(len(lab), dtype=bool)
    for t in specs:
        any_signal |= t.signal
    named = ~any_signal
    cells = adversary_cells(lab, policy, out["trait_attack"]["epoch"]["by_family"])
    out["belief"] = sender_posteriors(lab, cells, named)
    out["clustering"] = {
        name: clustering_scores(lab.household, labels) for name, labels in linker_labels.items()
    }
    span = float(lab.ts.max() - lab.ts.min()) + 1e-6 if len(lab) else 0.0
    times = [span * f for f in (0.125, 0.25, 0.5, 1.0)]

    def cut(mask: np.ndarray) -> list[TraitSpec]:
        return [TraitSpec(t.name, t.trait, t.signal[mask]) for t in specs]

    out["profiling"] = profiling_curve(lab, cut, policy, times, seed=seed)
    return out


def _signature_markdown(signatures: dict[str, list]) -> str:
    if not signatures:
        return ""
    lines = [
        "",
        "## Model vs emulation: behavioural signatures (CI of model - emulation)",
        "",
        "The CI is from a paired household bootstrap (model run on the emulation's own "
        "flows), widened by the model's key-draw variance (sd over further model keys).",
        "",
        "| policy | statistic | emulated | model | difference 95% CI | key sd | margin | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pol, rows in signatures.items():
        for r in rows:
            ci = r.get("difference_ci")
            ci_s = f"{ci[0]:+.3f} .. {ci[1]:+.3f}" if ci else "–"
            sd = r.get("key_sd")
            sd_s = f"{sd:.3f}" if sd is not None else "–"
            lines.append(
                f"| {pol} | {r['statistic']} | {r.get('emulated', float('nan')):.3g} | "
                f"{r.get('model', float('nan')):.3g} | {ci_s} | {sd_s} | "
                f"{r.get('margin', 0):.3g} | {'pass' if r['passed'] else 'FAIL'} |"
            )
    return "\n".join(lines) + "\n"


def _signature_rows(
    lab: FlowTable, trait: np.ndarray, policy: str, params: SimParams, keys: int
) -> list[dict]:
    """The paired, key-widened signature check of ``lab``'s connections against the model
    run on those same connections.

    Connections, not rows (``connections_only``): the relay picks an alias per connection.
    Pairing is valid because ``trace_from_flows`` and ``apply_policy`` carry the household
    codes through unchanged, row for row: both tables code households in the join's order
    (``lab.names["household"]``: the household table's order, then any household the
    records name that the table lacks), so that list's length is the ``n_households`` both
    sides are indexed by. Key 0 is ``params`` itself; key ``k`` runs with
    ``seed + KEY_SEED_STRIDE * k``.
    """
    conns = connections_only(lab)
    tr = trace_from_flows(conns, trait)
    n_households = max(len(lab.names.get("household", [])), int(lab.household.max(initial=-1)) + 1)

    def model_for(k: int) -> FlowTable:
        return apply_policy(tr, policy, replace(params, seed=params.seed + KEY_SEED_STRIDE * k))

    return compare_with_keys(conns, model_for, params.epoch_s, n_households, keys=keys)


def analyse_emulation(
    ground_truth_paths_by_policy: Mapping[str, Paths],
    frontdoor_log_paths_by_policy: Mapping[str, Paths],
    households: str | Path | dict | Workload,
    out_dir: str | Path,
    window_s: float = 60.0,
    linkers: Mapping[str, lk.Linker] | None = None,
    model_params: SimParams | None = None,
    signature_keys: int = DEFAULT_KEYS,
) -> dict:
    """Join, link and score each policy's records; write markdown + PNGs; return a dict.

    ``households`` is the workload's household table (or its path, or the Workload).
    Returns the ``linkability`` results.json section with, per policy, the ``evaluate()``
    metrics, join coverage and the access observer's view; plus ``validation`` rows when
    ``model_params`` (pool size, epoch, block size...) is given, and the paired,
    key-widened ``validation_signatures`` (``signature_keys`` further model keys; 0 or 1
    leaves the CI household-only).
    """
    table = load_household_table(households)
    order = [h["household"] for h in table.get("households", [])]
    sensitive = table.get("sensitive_sites", [])
    linkers = dict(linkers) if linkers is not None else lk.default_linkers()
    results: dict[str, dict] = {}
    coverage: dict[str, dict] = {}
    observer: dict[str, dict] = {}
    model: dict[str, dict] = {}
    adversary: dict[str, dict] = {}
    signatures: dict[str, list] = {}
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
        for name, linker in linkers.items():
            results[pol]["pairwise"][name].update(
                {f"{k}_ci": v for k, v in pairwise_ci(lab.household, linker(lab)).items()}
            )
        picked = {n: linkers[n](lab) for n in ("addr", "alias-epoch") if n in linkers}
        best = results[pol].get("best_single")
        if best and best not in picked:
            picked[best] = linkers[best](lab)
        adversary[pol] = adversary_section(lab, table, pol, picked)
        if model_params is not None:
            tr = trace_from_flows(lab, trait)
            model_ft = apply_policy(tr, pol, model_params)
            model[pol] = evaluate(model_ft, trait, linkers, window_s, profile_linkers=("addr",))
            signatures[pol] = _signature_rows(lab, trait, pol, model_params, signature_keys)
    scored = {p: r for p, r in results.items() if "pairwise" in r}
    rows = validate_against_emulation(scored, model) if model else []
    curves = {p: a["profiling"] for p, a in adversary.items()}
    extra = adversary_markdown(adversary, scored)
    if curves:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        fig = profiling_plot(curves, Path(out_dir) / "linkability_profiling.png")
        extra += f"\n![profiling]({fig.name})\n"
    section = write_report(
        scored,
        out_dir,
        title="Linkability (emulation)",
        extra_markdown=extra + _validation_markdown(rows) + _signature_markdown(signatures),
        prefix="linkability",
    )
    section["adversary"] = clean_json(adversary)
    section["coverage"] = clean_json(coverage)
    section["access_observer"] = clean_json(observer)
    section["window_s"] = window_s
    if signatures:
        section["validation_signatures"] = clean_json(signatures)
        section["validation_signatures_passed"] = all(
            r["passed"] for rows_ in signatures.values() for r in rows_
        )
    if model:
        section["model_on_emulated_trace"] = clean_json(model)
        section["validation"] = clean_json(rows)
        section["validation_passed"] = all(r["passed"] for r in rows)
    return section
