"""The draft's open questions as curves: sweeps of the ISP-scale model and a pool-size search.

``run_model(params, out_dir)`` is the CLI-less entry: it runs

* a full-metric ``simulate`` at ``full_scale_subscribers`` (the timing figure: 10^6
  subscribers x 1 h must stay within minutes), and its policy table + plots;
* sweeps with cheap metrics (``simulator.light_metrics``: median anonymity set per alias per
  window, precision/recall/lift of the address linker, the best of address/port-block/
  address-burst, trait AUC through the address linker) over
  - alias pool size (cgn, cfr-flow, cfr-epoch),
  - subscriber count at a fixed pool,
  - concurrency (flows per subscriber per hour),
  - privacy-epoch length (cfr-epoch);
* ``required_pool``: the largest pool whose median anonymity set still reaches the target
  (default 100 households per alias per 60 s), by bisection on the pool size; the median is
  non-increasing in the pool size up to sampling noise, so bisection is sound.

Why "largest pool": a bigger pool spreads the same flows over more aliases, so fewer
subscribers share each one. The operator wants the biggest pool (fewest flows per alias,
least state pressure) that still meets the anonymity target, and the answer scales with the
number of flows active per window, which the subscriber and concurrency curves show.

Over 400 lines on purpose: the model's sweeps, the pool-size search and their report share
one parameter set and one trace generator; the report part could move to its own module if
it grows.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.linkability import linkers as lk
from benchmarks.linkability.adversary import (
    TraitSpec,
    adversary_cells,
    cell_key,
    infer_epoch,
    trait_attack,
)
from benchmarks.linkability.belief import sender_posteriors
from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.metrics import (
    destination_exposure,
    median_anonymity,
    pairwise_scores,
    trait_inference,
)
from benchmarks.linkability.profiling import profiling_plot
from benchmarks.linkability.report import clean_json, write_report
from benchmarks.linkability.simulator import (
    SimParams,
    Trace,
    apply_policy,
    generate_trace,
    simulate,
    with_params,
)
from benchmarks.linkability.streaming import StreamParams, stream_profile


@dataclass
class ModelParams:
    """What ``run_model`` sweeps. Sizes are kept moderate so the whole run takes minutes."""

    base: SimParams = field(default_factory=lambda: SimParams(subscribers=100_000))
    full_scale_subscribers: int = 1_000_000
    pool_sizes: tuple[int, ...] = (10, 30, 100, 300, 1000, 3000, 10_000, 30_000)
    pool_policies: tuple[str, ...] = ("cgn", "cfr-flow", "cfr-epoch")
    subscriber_counts: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    fixed_pool: int = 1000
    flows_per_hour: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 80.0)
    epoch_lengths_s: tuple[float, ...] = (10.0, 60.0, 300.0, 900.0, 3600.0)
    target_anonymity: float = 100.0
    search_subscribers: tuple[int, ...] = (100_000, 1_000_000)
    search_policies: tuple[str, ...] = ("cfr-flow", "cfr-epoch")
    workers: int = 2
    stream_subscribers: int = 1_000_000
    stream_hours: float = 24.0

    @classmethod
    def quick(cls) -> ModelParams:
        """A few-minute variant (10^4..10^5 subscribers) for CI-sized runs."""
        return cls(
            base=SimParams(subscribers=20_000),
            full_scale_subscribers=100_000,
            pool_sizes=(10, 100, 1000, 10_000),
            subscriber_counts=(1_000, 10_000, 100_000),
            flows_per_hour=(5.0, 20.0, 80.0),
            epoch_lengths_s=(10.0, 300.0, 3600.0),
            search_subscribers=(20_000, 100_000),
            stream_subscribers=20_000,
        )


def light_metrics(trace: Trace, policy: str, p: SimParams) -> dict:
    """Cheap per-policy metrics for sweeps (see module docstring)."""
    ft = apply_policy(trace, policy, p)
    s = pairwise_scores(ft.household, ft.addr)
    labels = {
        "addr": ft.addr,
        f"port-block-{p.cgn_block or 1024}": lk.port_block(p.cgn_block or 1024)(ft),
        f"addr-burst-{p.burst_gap_s:g}s": lk.address_burst(p.burst_gap_s)(ft),
    }
    best = {
        k: (s if k == "addr" else pairwise_scores(ft.household, v)).as_dict()
        for k, v in labels.items()
    }
    best_name = lk.best_single({k: v["f1"] for k, v in best.items()}) or "addr"
    return {
        "anonymity_median": median_anonymity(ft.ts, ft.addr, ft.household, p.window_s),
        "precision": s.precision,
        "recall": s.recall,
        "f1": s.f1,
        "lift": s.lift,
        "chance_precision": s.chance_precision,
        "best_linker": best_name,
        "best_precision": best[best_name]["precision"],
        "best_f1": best[best_name]["f1"],
        "burst_precision": best[f"addr-burst-{p.burst_gap_s:g}s"]["precision"],
        "trait_auc": trait_inference(ft.household, ft.sensitive, ft.addr, trace.trait).auc,
        "trait_auc_best": trait_inference(
            ft.household, ft.sensitive, labels[best_name], trace.trait
        ).auc,
        "exposure_share": destination_exposure(ft.household, ft.site, ft.addr).share_mean,
        "flows": len(ft),
        "pool": p.pool_size(),
        **belief_metrics(trace, policy, p, ft),
    }


BELIEF_MAX_FLOWS = 5_000_000


def belief_metrics(trace: Trace, policy: str, p: SimParams, ft: FlowTable) -> dict:
    """The issue-15 answers for sweeps: named-household trait AUC (with CI, TPR at 1 % FPR)
    and the adversary's mean degree of anonymity; skipped (None) above BELIEF_MAX_FLOWS
    flows, where the streamed model (``streaming.py``) answers instead."""
    if len(ft) > BELIEF_MAX_FLOWS:
        return {"named_auc": None, "named_auc_ci": None, "named_tpr": None, "degree": None}
    named = ~ft.sensitive
    epoch = infer_epoch(ft, named, key=cell_key(ft, policy))
    cells = adversary_cells(ft, policy, epoch)
    res = trait_attack(
        ft,
        [TraitSpec("strong", trace.trait, ft.sensitive)],
        policy,
        epoch,
        classifier=False,
        resamples=200,
    )["strong"]["named_household"]
    bel = sender_posteriors(ft, cells, named, resamples=20)
    fams = [bel[f] for f in ("ipv4", "ipv6") if f in bel]
    degree = float(np.mean([f["degree_mean"] for f in fams])) if fams else float("nan")
    return {
        "named_auc": res["auc"],
        "named_auc_ci": res["auc_ci"],
        "named_tpr": res["tpr_at_fpr"],
        "degree": degree,
    }


def required_pool_profiling(
    p: SimParams, policy: str, max_auc: float = 0.6, trace: Trace | None = None
) -> dict:
    """Largest pool (of a doubling grid) whose named-household AUC CI stays below ``max_auc``.

    The anonymity-set search answers "how many households share an alias"; this one answers
    the question the CFR is for: up to which pool does profiling stay near chance. The grid
    is coarse (doublings) because each point costs a full trait attack.
    """
    trace = trace if trace is not None else generate_trace(p)
    grid, n = [], 1
    while n <= max(2, int(p.subscribers)):
        grid.append(n)
        n *= 2
    evals = {}
    best = None
    for n in grid:
        q = with_params(p, pool=n)
        m = belief_metrics(trace, policy, q, apply_policy(trace, policy, q))
        evals[str(n)] = {"auc": m["named_auc"], "auc_ci": m["named_auc_ci"], "degree": m["degree"]}
        hi = (m["named_auc_ci"] or [None, None])[1]
        if hi is not None and hi < max_auc:
            best = n
        elif best is not None:
            break
    return {"policy": policy, "max_auc": max_auc, "pool": best, "evaluations": evals}


def sweep_pool(mp: ModelParams, trace: Trace | None = None) -> dict:
    """Metrics vs alias pool size for each pool policy (one trace for all points)."""
    trace = trace if trace is not None else generate_trace(mp.base)
    return {
        pol: [light_metrics(trace, pol, with_params(mp.base, pool=n)) for n in mp.pool_sizes]
        for pol in mp.pool_policies
    }


def sweep_subscribers(mp: ModelParams) -> dict:
    """Metrics vs subscriber count at the fixed pool size."""
    out: dict[str, list] = {pol: [] for pol in mp.pool_policies}
    for s in mp.subscriber_counts:
        p = with_params(mp.base, subscribers=s, pool=mp.fixed_pool)
        tr = generate_trace(p)
        for pol in mp.pool_policies:
            out[pol].append({"subscribers": s, **light_metrics(tr, pol, p)})
    return out


def sweep_concurrency(mp: ModelParams) -> dict:
    """Metrics vs flows per subscriber per hour (sessions rate varied, flows/session kept)."""
    out: dict[str, list] = {pol: [] for pol in mp.pool_policies}
    pool = mp.base.pool_size()
    for f in mp.flows_per_hour:
        p = with_params(mp.base, sessions_per_hour=f / mp.base.flows_per_session, pool=pool)
        tr = generate_trace(p)
        for pol in mp.pool_policies:
            out[pol].append({"flows_per_hour": f, **light_metrics(tr, pol, p)})
    return out


def sweep_epoch(mp: ModelParams, trace: Trace | None = None) -> list[dict]:
    """cfr-epoch metrics vs epoch length (how long before an alias is a pseudonym again)."""
    trace = trace if trace is not None else generate_trace(mp.base)
    out = []
    for e in mp.epoch_lengths_s:
        p = with_params(mp.base, epoch_s=e)
        out.append({"epoch_s": e, **light_metrics(trace, "cfr-epoch", p)})
    return out


def required_pool(
    p: SimParams,
    policy: str,
    target: float = 100.0,
    trace: Trace | None = None,
) -> dict:
    """Largest pool with median anonymity >= target (bisection); pool 1 if none reaches it."""
    trace = trace if trace is not None else generate_trace(p)
    evals: dict[int, float] = {}

    def med(n: int) -> float:
        if n not in evals:
            ft = apply_policy(trace, policy, with_params(p, pool=n))
            evals[n] = median_anonymity(ft.ts, ft.addr, ft.household, p.window_s)
        return evals[n]

    lo, hi = 1, max(2, int(p.subscribers))
    if med(lo) < target:
        return {
            "policy": policy,
            "pool": None,
            "target": target,
            "reachable": False,
            "evaluations": evals,
        }
    if med(hi) >= target:
        lo = hi
    while hi - lo > max(1, lo // 50):  # 2 % resolution
        mid = int(np.sqrt(lo * hi)) if hi > 2 * lo else (lo + hi) // 2
        mid = min(max(mid, lo + 1), hi - 1)
        if med(mid) >= target:
            lo = mid
        else:
            hi = mid
    flows_per_window = len(trace) * p.window_s / p.duration_s
    return {
        "policy": policy,
        "subscribers": int(p.subscribers),
        "target": target,
        "reachable": True,
        "pool": lo,
        "median_at_pool": med(lo),
        "flows_per_window": flows_per_window,
        "flows_per_alias_per_window": flows_per_window / lo,
        "evaluations": {str(k): v for k, v in sorted(evals.items())},
    }


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_STYLE = {
    "cgn": ("s", "-", "tab:blue"),
    "cfr-flow": ("o", "-", "tab:orange"),
    "cfr-epoch": ("^", "--", "tab:green"),
}


def _log_x(ax, xs: list) -> None:
    """Log x axis with the swept values as plain tick labels."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{x:g}" if x < 1e5 else f"{x:.0e}".replace("e+0", "e") for x in xs])


def _curve_plot(
    curves: dict[str, list[dict]],
    xkey: str,
    xlabel: str,
    title: str,
    path: Path,
    target: float | None = None,
) -> Path:
    """Three panels vs the swept value: median anonymity, precision, trait AUC."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    xs: list = []
    for pol, pts in curves.items():
        m, ls, c = _STYLE.get(pol, ("o", "-", None))
        x = [pt[xkey] for pt in pts]
        xs = sorted(set(xs) | set(x))
        axes[0].plot(x, [pt["anonymity_median"] for pt in pts], marker=m, ls=ls, color=c, label=pol)
        axes[1].plot(
            x, [pt["precision"] for pt in pts], marker=m, ls=ls, color=c, label=f"{pol}: address"
        )
        axes[1].plot(
            x,
            [pt["best_precision"] for pt in pts],
            marker=m,
            ls=":",
            color=c,
            alpha=0.6,
            label=f"{pol}: best of addr/port-block/burst",
        )
        axes[2].plot(
            x, [pt["trait_auc"] for pt in pts], marker=m, ls=ls, color=c, label=f"{pol}: address"
        )
        axes[2].plot(
            x,
            [pt["trait_auc_best"] for pt in pts],
            marker=m,
            ls=":",
            color=c,
            alpha=0.6,
            label=f"{pol}: best linker",
        )
    if target is not None:
        axes[0].axhline(target, color="k", ls=":", lw=1, label=f"target {target:g}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("median anonymity set\n(households per alias per window)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("pairwise precision (same household)")
    axes[2].axhline(0.5, color="k", ls="--", lw=1, label="chance")
    axes[2].set_ylim(0.4, 1.02)
    axes[2].set_ylabel("trait ROC AUC")
    for ax in axes:
        _log_x(ax, xs)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _epoch_plot(pts: list[dict], title: str, path: Path) -> Path:
    """Epoch length trades per-window anonymity (flat) against long-term joining."""
    plt = _plt()
    x = [pt["epoch_s"] for pt in pts]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(x, [pt["recall"] for pt in pts], "o-", label="address-linker recall")
    axes[0].plot(
        x,
        [pt["exposure_share"] for pt in pts],
        "s--",
        label="destinations held in one cluster (mean share)",
    )
    axes[0].set_ylim(0, 1.02)
    axes[0].set_ylabel("how much of a subscriber is joined")
    ax0b = axes[0].twinx()
    ax0b.plot(
        x,
        [pt["anonymity_median"] for pt in pts],
        "k:",
        marker="x",
        label="median anonymity set (right)",
    )
    ax0b.set_ylabel("median anonymity set per window")
    ax0b.set_ylim(0, max(2.0, 1.5 * max(pt["anonymity_median"] for pt in pts)))
    h1, l1 = axes[0].get_legend_handles_labels()
    h2, l2 = ax0b.get_legend_handles_labels()
    axes[0].legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    axes[1].plot(x, [pt["precision"] for pt in pts], "o-", label="address linker")
    axes[1].plot(
        x, [pt["best_precision"] for pt in pts], "x:", label="best of addr/port-block/burst"
    )
    axes[1].plot(x, [pt["chance_precision"] for pt in pts], "k--", lw=1, label="chance")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("pairwise precision")
    axes[1].legend(fontsize=7)
    axes[2].plot(x, [pt["trait_auc"] for pt in pts], "o-", label="address linker")
    axes[2].plot(x, [pt["trait_auc_best"] for pt in pts], "x:", label="best linker")
    axes[2].legend(fontsize=7)
    axes[2].axhline(0.5, color="k", ls="--", lw=1)
    axes[2].set_ylim(0.4, 1.02)
    axes[2].set_ylabel("trait ROC AUC (address linker)")
    for ax in axes:
        _log_x(ax, x)
        ax.set_xlabel("privacy epoch length (s)")
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_model(params: ModelParams | dict | None, out_dir: str | Path) -> dict:
    """Run the full-scale timing simulation, the sweeps and the pool search; write PNGs.

    ``params`` may be a ModelParams, a dict of its fields (``base`` as a dict of SimParams
    fields), or None for the defaults. Returns a JSON-able dict (the ``linkability.model``
    section of results.json).
    """
    if params is None:
        mp = ModelParams()
    elif isinstance(params, dict):
        d = dict(params)
        base = d.pop("base", None)
        mp = ModelParams(**d)
        if base is not None:
            mp.base = base if isinstance(base, SimParams) else SimParams(**base)
    else:
        mp = params
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {"params": asdict(mp)}

    full = simulate(with_params(mp.base, subscribers=mp.full_scale_subscribers), workers=mp.workers)
    result["full_scale"] = {
        "subscribers": full["subscribers"],
        "flows": full["flows"],
        "pool": full["pool"],
        "timings_s": full["timings"],
        "report": write_report(
            full["policies"],
            out,
            title=f"Linkability model, {full['subscribers']:,} subscribers",
            prefix="model_full",
        ),
    }
    del full

    trace = generate_trace(mp.base)
    t = time.perf_counter()
    result["pool_sweep"] = sweep_pool(mp, trace)
    result["epoch_sweep"] = sweep_epoch(mp, trace)
    result["subscriber_sweep"] = sweep_subscribers(mp)
    result["concurrency_sweep"] = sweep_concurrency(mp)
    result["sweep_time_s"] = time.perf_counter() - t

    t = time.perf_counter()
    searches = []
    for s in mp.search_subscribers:
        p = with_params(mp.base, subscribers=s)
        tr = trace if s == mp.base.subscribers else generate_trace(p)
        for pol in mp.search_policies:
            searches.append(required_pool(p, pol, mp.target_anonymity, tr))
        del tr
    result["required_pool"] = searches
    result["required_pool_profiling"] = [
        required_pool_profiling(mp.base, pol, trace=trace) for pol in mp.search_policies
    ]
    result["search_time_s"] = time.perf_counter() - t

    figs = {
        "pool": _curve_plot(
            result["pool_sweep"],
            "pool",
            "alias pool size",
            f"vs pool size ({mp.base.subscribers:,} subscribers)",
            out / "model_pool.png",
            mp.target_anonymity,
        ),
        "subscribers": _curve_plot(
            result["subscriber_sweep"],
            "subscribers",
            "subscribers",
            f"vs subscriber count (pool {mp.fixed_pool})",
            out / "model_subscribers.png",
            mp.target_anonymity,
        ),
        "concurrency": _curve_plot(
            result["concurrency_sweep"],
            "flows_per_hour",
            "flows per subscriber per hour",
            f"vs concurrency (pool {mp.base.pool_size()})",
            out / "model_concurrency.png",
            mp.target_anonymity,
        ),
        "epoch": _epoch_plot(
            result["epoch_sweep"],
            f"cfr-epoch vs epoch length ({mp.base.subscribers:,} subscribers, "
            f"pool {mp.base.pool_size():,})",
            out / "model_epoch.png",
        ),
    }
    t = time.perf_counter()
    sp = StreamParams(
        base=with_params(
            mp.base,
            subscribers=mp.stream_subscribers,
            duration_s=mp.stream_hours * 3600.0,
            v6_fraction=max(mp.base.v6_fraction, 0.7),
            pool=None,
        ),
        workers=mp.workers,
        checkpoints_h=tuple(h for h in (1, 2, 4, 8, 12, 24, 48) if h <= mp.stream_hours),
    )
    result["profiling_stream"] = stream_profile(sp)
    result["profiling_stream_time_s"] = time.perf_counter() - t
    figs["profiling"] = profiling_plot(
        {pol: r["curves"] for pol, r in result["profiling_stream"]["policies"].items()},
        out / "model_profiling.png",
    )
    result["figures"] = {k: p.name for k, p in figs.items()}
    result["total_time_s"] = time.perf_counter() - t0
    (out / "model.md").write_text(model_markdown(result))
    return clean_json(result)  # type: ignore[return-value]


def model_markdown(result: dict) -> str:
    """Short markdown summary: timing, pool-size answers, curve figures."""
    fs = result["full_scale"]
    lines = [
        "# Linkability model (ISP scale)",
        "",
        f"Full-metric run: {fs['subscribers']:,} subscribers, {fs['flows']:,} flows, "
        f"pool {fs['pool']:,}: {fs['timings_s']['total_s']:.0f} s.",
        "",
        "## Pool size for the anonymity target",
        "",
        "| subscribers | policy | target | largest pool | median there | flows/alias/window |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["required_pool"]:
        if r.get("reachable"):
            lines.append(
                f"| {r['subscribers']:,} | {r['policy']} | {r['target']:g} | {r['pool']:,} | "
                f"{r['median_at_pool']:g} | {r['flows_per_alias_per_window']:.0f} |"
            )
        else:
            lines.append(f"| – | {r['policy']} | {r['target']:g} | unreachable | – | – |")
    lines += [
        "",
        "## Pool size on the profiling adversary",
        "",
        "Largest pool (doubling grid) whose named-household trait AUC stays below 0.6 with "
        "its CI (base trace).",
        "",
        "| policy | largest pool | AUC there [CI] |",
        "|---|---|---|",
    ]
    for r in result.get("required_pool_profiling", []):
        ev = r["evaluations"].get(str(r["pool"]), {}) if r["pool"] else {}
        ci = ev.get("auc_ci") or [None, None]
        auc = (
            f"{ev['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
            if ev.get("auc") is not None and ci[0] is not None
            else "–"
        )
        lines.append(f"| {r['policy']} | {r['pool'] or 'none'} | {auc} |")
    lines += [
        "",
        "## Epoch length (cfr-epoch)",
        "",
        "| epoch s | median anonymity | addr precision | addr recall | best linker | "
        "best precision | trait AUC (first visit) | named-household AUC [CI] | TPR@1%FPR | "
        "degree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pt in result["epoch_sweep"]:
        lines.append(
            f"| {pt['epoch_s']:g} | {pt['anonymity_median']:g} | {pt['precision']:.3f} | "
            f"{pt['recall']:.3f} | {pt['best_linker']} | {pt['best_precision']:.3f} | "
            f"{pt['trait_auc']:.3f} | {_named(pt)} |"
        )
    lines.append("")
    lines += stream_markdown(result.get("profiling_stream"))
    lines += [f"![{k}]({v})" for k, v in result["figures"].items()]
    return "\n".join(lines) + "\n"


def _named(pt: dict) -> str:
    """'AUC [CI] | TPR | degree' cells of a sweep point (– when not computed)."""
    ci = pt.get("named_auc_ci") or [None, None]
    if pt.get("named_auc") is None or ci[0] is None:
        return "– | – | –"
    deg = pt.get("degree")
    return (
        f"{pt['named_auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {pt['named_tpr']:.3f} | "
        f"{'–' if deg is None else f'{deg:.2f}'}"
    )


def _ci_s(x: dict, key: str, ci_key: str) -> str:
    v, ci = x.get(key), x.get(ci_key) or [None, None]
    if v is None:
        return "–"
    if ci[0] is None:
        return f"{v:.3f}"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def stream_markdown(stream: dict | None) -> list[str]:
    """The streamed day: final trait figures with CIs, time to profiling, timing."""
    if not stream:
        return []
    base = stream["params"]["base"]
    lines = [
        f"## Profiling over {base['duration_s'] / 3600:g} h, "
        f"{base['subscribers']:,} subscribers (streamed)",
        "",
        f"Wall {stream['wall_s']:.0f} s on {stream['cpus']} CPUs, load average "
        f"{stream['load_average_before'][0]:.1f} before / "
        f"{stream['load_average_after'][0]:.1f} after (other work shares the machine).",
        "",
        "| policy | trait | flows | epoch (v4 / v6) | named-household AUC | TPR@1%FPR | "
        "oracle AUC | time to TPR 0.5 (point / sure) | wall s | CPU s | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pol, r in stream["policies"].items():
        ep = (r.get("epoch") or {}).get("by_family", {})
        ep_s = " / ".join(
            "none" if ep.get(f, ep.get(str(f))) is None else f"{ep.get(f, ep.get(str(f))):g} s"
            for f in (4, 6)
        )
        for trait, c in r["curves"].items():
            if not c["points"]:
                continue
            last = c["points"][-1]
            nh, orc = last["named_household"], last["oracle"]
            tt = c.get("time_to_profiling_s", {})

            def h(v: float | None) -> str:
                return "not reached" if v is None else f"{v / 3600:g} h"

            lines.append(
                f"| `{pol}` | {trait} | {r['flows']:,} | {ep_s} | "
                f"{_ci_s(nh, 'auc', 'auc_ci')} | {_ci_s(nh, 'tpr_at_fpr', 'tpr_at_fpr_ci')} | "
                f"{_ci_s(orc, 'auc', 'auc_ci')} | {h(tt.get('point'))} / {h(tt.get('sure'))} | "
                f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['max_rss_gib']:.2f} |"
            )
    lines.append("")
    return lines
