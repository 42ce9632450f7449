"""Linkability table, plots and the ``linkability`` section of results.json.

Input everywhere is ``policy -> evaluate() output`` (``simulator.evaluate``), the same for the
emulation (``analysis.analyse_emulation``) and the model (``simulator.simulate``), so one
table compares them. Policies are rows in the draft's order: no relay (``route``), the
baselines the draft discusses (``cgn``, ``nptv6``, ``ipv6-temp``), then the CFR policies.

Over 400 lines on purpose: one renderer of the linkability section (tables, plots and the
'what the CFR does not fix' text) reading one input shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

POLICY_ORDER: tuple[str, ...] = ("route", "cgn", "nptv6", "ipv6-temp", "cfr-flow", "cfr-epoch")
SCHEMA = "cfrbench.linkability/1"


def ordered_policies(results: Mapping[str, dict]) -> list[str]:
    """Known policies in canonical order, then any others alphabetically."""
    known = [p for p in POLICY_ORDER if p in results]
    return known + sorted(p for p in results if p not in POLICY_ORDER)


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _linker_names(results: Mapping[str, dict]) -> list[str]:
    names: list[str] = []
    for r in results.values():
        for n in r.get("pairwise", {}):
            if n not in names:
                names.append(n)
    return names


def summary_rows(results: Mapping[str, dict], linkers: Sequence[str] | None = None) -> list[dict]:
    """One flat row per policy: per-linker P/R/F1, anonymity stats, trait AUC, best linker."""
    linkers = list(linkers) if linkers is not None else _linker_names(results)
    rows = []
    for pol in ordered_policies(results):
        r = results[pol]
        row: dict = {"policy": pol, "flows": r.get("flows"), "households": r.get("households")}
        for ln in linkers:
            s = r.get("pairwise", {}).get(ln)
            if s is None:
                continue
            row[f"{ln}.precision"] = s["precision"]
            row[f"{ln}.recall"] = s["recall"]
            row[f"{ln}.f1"] = s["f1"]
            row[f"{ln}.lift"] = s.get("lift")
        an = r.get("anonymity", {})
        row["anon.min"] = an.get("size", {}).get("min")
        row["anon.p10"] = an.get("size", {}).get("p10")
        row["anon.median"] = an.get("size", {}).get("median")
        row["anon.flow_weighted_median"] = an.get("size_flow_weighted_median")
        row["anon.effective_median"] = an.get("effective", {}).get("median")
        row["anon.degree_median"] = an.get("degree", {}).get("median")
        row["anon_best.median"] = r.get("anonymity_best", {}).get("size", {}).get("median")
        best = r.get("best_single")
        row["best_single"] = best
        row["best_single.f1"] = r.get("pairwise", {}).get(best, {}).get("f1") if best else None
        trait = r.get("trait", {})
        row["trait.auc.addr"] = trait.get("addr", {}).get("auc")
        row["trait.auc.best"] = trait.get(best, {}).get("auc") if best else None
        row["trait.prevalence"] = trait.get("addr", {}).get("prevalence")
        row["trait.auc.ceiling"] = r.get("trait_ceiling", {}).get("auc")
        row["exposure.share.addr"] = r.get("exposure", {}).get("addr", {}).get("share_mean")
        row["exposure.attributable.addr"] = (
            r.get("exposure", {}).get("addr", {}).get("attributable_mean")
        )
        rows.append(row)
    return rows


def markdown_table(results: Mapping[str, dict], linkers: Sequence[str] | None = None) -> str:
    """Policies as rows; per linker a "P / R / F1" cell; anonymity; trait AUC; best linker."""
    linkers = list(linkers) if linkers is not None else _linker_names(results)
    rows = summary_rows(results, linkers)
    head = (
        ["policy"]
        + [f"{ln} P/R/F1" for ln in linkers]
        + [
            "anon min / p10 / median",
            "eff. median",
            "degree",
            "best linker (F1)",
            "trait AUC addr / best / ceiling",
        ]
    )
    with_best_key = any(row.get("anon_best.median") is not None for row in rows)
    if with_best_key:
        head.insert(head.index("best linker (F1)"), "anon median, best-linker key")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"`{row['policy']}`"]
        for ln in linkers:
            if f"{ln}.f1" in row:
                cells.append(
                    " / ".join(_fmt(row[f"{ln}.{m}"]) for m in ("precision", "recall", "f1"))
                )
            else:
                cells.append("–")
        cells.append(" / ".join(_fmt(row[k], 0) for k in ("anon.min", "anon.p10", "anon.median")))
        cells.append(_fmt(row["anon.effective_median"], 1))
        cells.append(_fmt(row["anon.degree_median"]))
        if with_best_key:
            cells.append(_fmt(row["anon_best.median"], 0))
        cells.append(f"{row['best_single'] or '–'} ({_fmt(row['best_single.f1'])})")
        cells.append(
            " / ".join(
                _fmt(row[k]) for k in ("trait.auc.addr", "trait.auc.best", "trait.auc.ceiling")
            )
        )
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "P/R/F1: pairwise precision, recall, F1 of 'these two flows are one household' "
        "(chance precision = same-household pairs / all pairs). Anonymity: distinct "
        "households per (alias, window) cell; eff. = 2^H (flows over households); degree = "
        "H / log2(active households in window). Trait AUC: 0.5 = chance.",
    ]
    return "\n".join(lines + notes) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_f1(
    results: Mapping[str, dict], path: str | Path, linkers: Sequence[str] | None = None
) -> Path:
    """Grouped bars: F1 per policy (groups) and linker (bars)."""
    plt = _plt()
    linkers = list(linkers) if linkers is not None else _linker_names(results)
    pols = ordered_policies(results)
    x = np.arange(len(pols))
    w = 0.8 / max(1, len(linkers))
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(pols) + 2), 4.2))
    cmap = plt.get_cmap("tab20")
    for i, ln in enumerate(linkers):
        vals = [results[p].get("pairwise", {}).get(ln, {}).get("f1", np.nan) for p in pols]
        vals = [v if v is not None and math.isfinite(v) else 0.0 for v in vals]
        ax.bar(x - 0.4 + w * (i + 0.5), vals, w, label=ln, color=cmap(i % 20))
    ax.set_xticks(x, pols)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pairwise F1 (same household)")
    ax.set_title("Linking F1 per policy and linker")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_anonymity(results: Mapping[str, dict], path: str | Path) -> Path:
    """Median anonymity set per policy, whiskers p10..max; effective median as a dot."""
    plt = _plt()
    pols = ordered_policies(results)
    med = np.array([results[p]["anonymity"]["size"]["median"] for p in pols], dtype=float)
    p10 = np.array([results[p]["anonymity"]["size"]["p10"] for p in pols], dtype=float)
    mx = np.array([results[p]["anonymity"]["size"]["max"] for p in pols], dtype=float)
    eff = np.array([results[p]["anonymity"]["effective"]["median"] for p in pols], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(pols))
    ax.bar(x, med, 0.6, color="tab:blue", label="median distinct households")
    ax.errorbar(
        x, med, yerr=[med - p10, mx - med], fmt="none", ecolor="k", capsize=4, label="p10 .. max"
    )
    ax.plot(x, eff, "o", color="tab:orange", label="median effective (2^H)")
    ax.set_yscale("log")
    ax.set_ylim(0.8, max(2.0, float(np.nanmax(mx)) * 1.5))
    ax.set_xticks(x, pols)
    win = results[pols[0]]["anonymity"]["window_s"] if pols else 0
    ax.set_ylabel(f"households per alias per {win:g} s window")
    ax.set_title("Anonymity set per policy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_auc(results: Mapping[str, dict], path: str | Path) -> Path:
    """Trait-inference ROC AUC per policy (address linker and best single linker)."""
    plt = _plt()
    pols = ordered_policies(results)

    def auc(p: str, ln: str | None) -> float:
        v = results[p].get("trait", {}).get(ln or "", {}).get("auc")
        return v if v is not None and math.isfinite(v) else np.nan

    a_addr = [auc(p, "addr") for p in pols]
    a_best = [auc(p, results[p].get("best_single")) for p in pols]
    x = np.arange(len(pols))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, a_addr, 0.4, label="address linker")
    ax.bar(x + 0.2, a_best, 0.4, label="best single linker")
    ceiling = [results[p].get("trait_ceiling", {}).get("auc", np.nan) for p in pols]
    ceiling = [c if c is not None else np.nan for c in ceiling]
    ax.plot(x, ceiling, "k_", ms=30, mew=2, label="ceiling (oracle join by household)")
    ax.axhline(0.5, color="k", ls="--", lw=1, label="chance")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(x, pols)
    ax.set_ylabel("ROC AUC, trait from joined profile")
    ax.set_title("Profiling: inferring the pineapple-pizza trait")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def clean_json(obj: object) -> object:
    """NaN/inf -> None, numpy scalars -> Python, recursively (results.json is strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    return obj


def write_report(
    results: Mapping[str, dict],
    out_dir: str | Path,
    title: str = "Linkability",
    linkers: Sequence[str] | None = None,
    extra_markdown: str = "",
    prefix: str = "linkability",
) -> dict:
    """Write ``<prefix>.md`` and the three PNGs; return the results.json section."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = {
        "f1": plot_f1(results, out / f"{prefix}_f1.png", linkers),
        "anonymity": plot_anonymity(results, out / f"{prefix}_anonymity.png"),
        "auc": plot_auc(results, out / f"{prefix}_auc.png"),
    }
    md = f"# {title}\n\n" + markdown_table(results, linkers) + "\n" + extra_markdown
    md += "\n" + "\n".join(f"![{k}]({p.name})" for k, p in figs.items()) + "\n"
    (out / f"{prefix}.md").write_text(md)
    return clean_json(
        {
            "schema": SCHEMA,
            "policies": dict(results),
            "table": summary_rows(results, linkers),
            "figures": {k: p.name for k, p in figs.items()},
            "markdown": f"{prefix}.md",
        }
    )  # type: ignore[return-value]


def _ci(x: dict | None, key: str, ci_key: str, digits: int = 2) -> str:
    """'0.87 [0.84, 0.90]' from a dict holding a figure and its CI."""
    if not x:
        return "–"
    v, ci = x.get(key), x.get(ci_key) or [None, None]
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if ci[0] is None or ci[1] is None:
        return _fmt(v, digits)
    return f"{_fmt(v, digits)} [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]"


def _hours(s: float | None) -> str:
    return "not reached" if s is None else f"{s / 3600:.2g} h"


def adversary_markdown(adversary: Mapping[str, dict], results: Mapping[str, dict]) -> str:
    """Sections for the trait adversaries, belief, clustering, time to profiling, and what
    the CFR does not fix; ``adversary[policy]`` from ``analysis.adversary_section``."""
    pols = ordered_policies(adversary)
    if not pols:
        return ""
    lines = [
        "## Policy x linker: pairwise F1 with 95 % CI (half-samples of households)",
        "",
    ]
    names = _linker_names(results)
    lines.append("| linker | " + " | ".join(f"`{p}`" for p in pols) + " |")
    lines.append("|---|" + "---|" * len(pols))
    for ln in names:
        cells = [_ci(results.get(p, {}).get("pairwise", {}).get(ln), "f1", "f1_ci") for p in pols]
        lines.append(f"| {ln} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Trait inference: ROC AUC and TPR at 1 % FPR, 95 % bootstrap CIs",
        "",
        "Named-household adversary (alias x inferred epoch cells, every ordinary visit "
        "pooled), site-vector classifier (logistic regression, out-of-fold), and the oracle "
        "that knows every flow's household (the ceiling). Chance AUC 0.5.",
        "",
        "| policy | trait | epoch inferred (v4 / v6) | named-household AUC | TPR@1%FPR | "
        "classifier AUC | TPR@1%FPR | oracle AUC | TPR@1%FPR | positives / households |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pols:
        ta = adversary[p]["trait_attack"]
        ep = ta.get("epoch", {}).get("by_family", {})
        ep_s = " / ".join(
            "none" if ep.get(f, ep.get(str(f))) is None else f"{ep.get(f, ep.get(str(f))):g} s"
            for f in (4, 6)
        )
        for trait in ("strong", "weak"):
            t = ta.get(trait)
            if not t:
                continue
            nh, cl, orc = t["named_household"], t.get("classifier"), t["oracle"]
            lines.append(
                f"| `{p}` | {trait} | {ep_s} | {_ci(nh, 'auc', 'auc_ci')} | "
                f"{_ci(nh, 'tpr_at_fpr', 'tpr_at_fpr_ci')} | {_ci(cl, 'auc', 'auc_ci')} | "
                f"{_ci(cl, 'tpr_at_fpr', 'tpr_at_fpr_ci')} | {_ci(orc, 'auc', 'auc_ci')} | "
                f"{_ci(orc, 'tpr_at_fpr', 'tpr_at_fpr_ci')} | "
                f"{nh['positives']} / {nh['households']} |"
            )
    lines += [
        "",
        "## The adversary's belief about senders (per flow, by IP family)",
        "",
        "Posterior = beta x (household's share of the named visits in the flow's cell) + "
        "(1 - beta) x (its share of named visits in the window); beta fitted by the "
        "adversary. Entropy H in bits (Serjantov-Danezis), degree H / log2(active "
        "households) (Diaz et al.), q(true) = probability put on the real sender.",
        "",
        "| policy | family | beta | H bits mean | effective set (median 2^H) | degree mean | "
        "q(true) mean | active households |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in pols:
        b = adversary[p].get("belief", {})
        for fam in ("ipv4", "ipv6"):
            x = b.get(fam)
            if not x:
                continue
            lines.append(
                f"| `{p}` | {fam} | {_fmt(b.get('beta'))} | "
                f"{_ci(x, 'entropy_bits_mean', 'entropy_bits_mean_ci')} | "
                f"{_fmt(x['effective_set_median'], 1)} | "
                f"{_ci(x, 'degree_mean', 'degree_mean_ci')} | "
                f"{_ci(x, 'q_true_mean', 'q_true_mean_ci', 3)} | "
                f"{_fmt(x['active_households_median'], 0)} |"
            )
    lines += [
        "",
        "## Chance-corrected clustering (adjusted Rand / adjusted mutual information)",
        "",
        "| policy | linker | ARI | AMI |",
        "|---|---|---|---|",
    ]
    for p in pols:
        for ln, c in adversary[p].get("clustering", {}).items():
            lines.append(
                f"| `{p}` | {ln} | {_ci(c, 'ari', 'ari_ci', 3)} | {_ci(c, 'ami', 'ami_ci', 3)} |"
            )
    lines += [
        "",
        "## Time to profiling (TPR >= 0.5 at 1 % FPR, named-household adversary)",
        "",
        "point = the estimate crosses 0.5; sure = the CI's lower end does; possible = its "
        "upper end does. 'not reached' = not within the observed time.",
        "",
        "| policy | trait | point | sure | possible | oracle (point) |",
        "|---|---|---|---|---|---|",
    ]
    for p in pols:
        for trait, c in adversary[p].get("profiling", {}).items():
            tt, ot = c["time_to_profiling_s"], c["oracle_time_to_profiling_s"]
            lines.append(
                f"| `{p}` | {trait} | {_hours(tt['point'])} | {_hours(tt['sure'])} | "
                f"{_hours(tt['possible'])} | {_hours(ot['point'])} |"
            )
    lines += ["", does_not_fix_markdown(adversary, results)]
    return "\n".join(lines) + "\n"


def does_not_fix_markdown(adversary: Mapping[str, dict], results: Mapping[str, dict]) -> str:
    """'What the CFR does not fix': every signal that still links or profiles under cfr-flow.

    Generated from the measured figures, so a signal is named only when this run shows it: a
    linker whose precision CI lies above 0.5 with pairs predicted, or whose lift over chance
    exceeds 2; a trait adversary whose AUC CI lies above 0.5.
    """
    lines = ["## What the CFR does not fix", ""]
    for pol in ("cfr-flow", "cfr-epoch"):
        r = results.get(pol)
        if not r:
            continue
        found = []
        for ln, s in r.get("pairwise", {}).items():
            if "+" in ln or ln.startswith("union"):
                continue
            p_ci = s.get("precision_ci") or [None, None]
            lift = s.get("lift")
            if s.get("predicted_pairs", 0) > 0 and (
                (p_ci[0] is not None and p_ci[0] > 0.5)
                or (lift is not None and math.isfinite(lift) and lift > 2)
            ):
                found.append(
                    f"- `{ln}` links flows under `{pol}`: precision "
                    f"{_ci(s, 'precision', 'precision_ci')}, recall {_fmt(s.get('recall'))}, "
                    f"lift over chance {_fmt(lift, 1)}."
                )
        ta = adversary.get(pol, {}).get("trait_attack", {})
        for trait in ("strong", "weak"):
            for who in ("named_household", "classifier"):
                x = ta.get(trait, {}).get(who)
                if x and x.get("auc_ci") and x["auc_ci"][0] is not None and x["auc_ci"][0] > 0.5:
                    found.append(
                        f"- the {trait} trait is inferred under `{pol}` by the {who} "
                        f"adversary: AUC {_ci(x, 'auc', 'auc_ci')}, TPR at 1 % FPR "
                        f"{_ci(x, 'tpr_at_fpr', 'tpr_at_fpr_ci')}."
                    )
        lines.append(f"Under `{pol}`, measured in this run:")
        lines.append("")
        lines += found or ["- no linker or trait adversary beat chance with its CI."]
        lines.append("")
    lines += [
        "Not fixed by any aliasing policy, by construction: what the front door learns inside "
        "the connection (the inner name, requests in shared mode; a login names the "
        "household), TLS resumption tickets (they join a device's visits to one site across "
        "aliases unless the client drops them), client fingerprints that differ between "
        "devices (transport and TLS stack, see the fingerprint linkers), and the timing of "
        "flows (visits of one household cluster in time whatever alias each gets; a "
        "per-epoch alias turns that into a pseudonym for the epoch).",
    ]
    return "\n".join(lines) + "\n"
