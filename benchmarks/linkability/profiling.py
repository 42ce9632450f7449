"""Time to profiling: how long the front door must watch before it names trait households.

For observation times T on a grid, the trait adversary (``adversary.trait_attack``, no
classifier) is run on the flows of the first T seconds; the curve is its TPR at 1 % FPR
(with bootstrap CI) against T, per policy, next to the oracle's. The *time to profiling* is
the first T at which TPR >= 0.5 at 1 % FPR, reported three ways so the uncertainty shows:
``point`` (the estimate crosses 0.5), ``sure`` (the CI's lower end crosses it) and
``possible`` (the CI's upper end does). ``None`` means not within the observed time; that
is an answer ("not in 24 h"), not a failure.

``profiling_plot`` draws the curves (one panel per trait, one line per policy, CI bands).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.linkability.adversary import TraitSpec, trait_attack
from benchmarks.linkability.flows import FlowTable

TARGET_TPR = 0.5


def _first(times: Sequence[float], values: Sequence[float | None]) -> float | None:
    for t, v in zip(times, values, strict=True):
        if v is not None and np.isfinite(v) and v >= TARGET_TPR:
            return float(t)
    return None


def summarise_curve(curve: list[dict], who: str = "named_household") -> dict:
    """Time to profiling (point / sure / possible) from a curve of trait_attack points."""
    ts = [pt["observed_s"] for pt in curve]
    return {
        "point": _first(ts, [pt[who]["tpr_at_fpr"] for pt in curve]),
        "sure": _first(ts, [pt[who]["tpr_at_fpr_ci"][0] for pt in curve]),
        "possible": _first(ts, [pt[who]["tpr_at_fpr_ci"][1] for pt in curve]),
    }


def profiling_curve(
    ft: FlowTable,
    traits: Callable[[np.ndarray], list[TraitSpec]],
    policy: str,
    times_s: Sequence[float],
    seed: int = 0,
) -> dict[str, dict]:
    """Per trait: points (T, adversary and oracle ROC figures) and the time to profiling.

    ``traits(mask)`` returns the trait specs for the flows selected by ``mask`` (the signal
    columns must be cut with the flows).
    """
    t0 = float(ft.ts.min()) if len(ft) else 0.0
    curves: dict[str, list[dict]] = {}
    for t in times_s:
        mask = ft.ts < t0 + t
        if not mask.any():
            continue
        specs = traits(mask)
        res = trait_attack(ft.subset(mask), specs, policy, classifier=False, seed=seed)
        for spec in specs:
            r = res[spec.name]
            curves.setdefault(spec.name, []).append(
                {
                    "observed_s": float(t),
                    "named_household": r["named_household"],
                    "oracle": r["oracle"],
                }
            )
    return {
        name: {
            "points": pts,
            "time_to_profiling_s": summarise_curve(pts),
            "oracle_time_to_profiling_s": summarise_curve(pts, "oracle"),
        }
        for name, pts in curves.items()
    }


_COLOURS = {
    "route": "tab:red",
    "cgn": "tab:blue",
    "nptv6": "tab:purple",
    "ipv6-temp": "tab:brown",
    "cfr-flow": "tab:orange",
    "cfr-epoch": "tab:green",
}


def profiling_plot(curves: Mapping[str, Mapping[str, dict]], path: str | Path) -> Path:
    """TPR at 1 % FPR vs observation time; ``curves[policy][trait]`` from profiling_curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traits = sorted({t for c in curves.values() for t in c})
    fig, axes = plt.subplots(1, max(1, len(traits)), figsize=(6 * max(1, len(traits)), 4.2))
    axes = np.atleast_1d(axes)
    for ax, trait in zip(axes, traits, strict=True):
        for pol, per_trait in curves.items():
            if trait not in per_trait:
                continue
            pts = per_trait[trait]["points"]
            x = np.array([p["observed_s"] for p in pts]) / 3600.0
            y = [p["named_household"]["tpr_at_fpr"] for p in pts]
            lo = [p["named_household"]["tpr_at_fpr_ci"][0] for p in pts]
            hi = [p["named_household"]["tpr_at_fpr_ci"][1] for p in pts]
            c = _COLOURS.get(pol)
            ax.plot(x, y, "o-", color=c, label=pol)
            if all(v is not None for v in lo + hi):
                ax.fill_between(x, lo, hi, color=c, alpha=0.15)
        # the oracle ceiling of the first policy (the same households everywhere)
        first = next(iter(curves.values())).get(trait)
        if first:
            x = np.array([p["observed_s"] for p in first["points"]]) / 3600.0
            ax.plot(
                x,
                [p["oracle"]["tpr_at_fpr"] for p in first["points"]],
                "k:",
                label="oracle (true households)",
            )
        ax.axhline(TARGET_TPR, color="grey", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("observation time (h)")
        ax.set_ylabel("TPR at 1 % FPR (named-household adversary)")
        ax.set_title(f"profiling success, {trait} trait")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
