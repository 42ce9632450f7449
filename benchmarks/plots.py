"""PNG plots for the report (matplotlib, Agg backend: no display, works as root in CI).

Each function draws one figure from analysed data and returns the file it wrote, or None if
there is nothing to draw. Paths keep one colour in every figure so a reader can follow them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import paths as path_table  # noqa: E402
from benchmarks.registry import UNITS  # noqa: E402

#: Path -> colour, from the path table (benchmarks/paths.py): one colour per path everywhere.
PATH_COLOURS = {p.name: p.colour for p in path_table.PATH_TABLE}
DPI = 110


def _colour(path: str) -> str:
    return PATH_COLOURS.get(path, "#999999")


def _label(path: str) -> str:
    """The path's label from the table, with its name (what the report's tables show)."""
    row = path_table.PATHS.get(path)
    return f"{row.label} ({path})" if row is not None and row.label != path else path


def _path_order(paths: Sequence[str]) -> list[str]:
    rank = {p: i for i, p in enumerate(path_table.NAMES)}
    return sorted(set(paths), key=lambda p: rank.get(p, 99))


def _sweep_label(sweep: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(sweep.items()))


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def cdf_plot(
    samples: Mapping[str, Sequence[float]], metric: str, unit: str, title: str, out: Path
) -> Path | None:
    """Empirical CDF of one metric, one line per path (samples: path -> values)."""
    paths = [p for p in _path_order(list(samples)) if len(samples[p])]
    if not paths:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for p in paths:
        x = np.sort(np.asarray(samples[p], dtype=float))
        y = np.arange(1, x.size + 1) / x.size
        ax.step(x, y, where="post", label=f"{_label(p)} (n={x.size})", color=_colour(p), lw=1.6)
    ax.set_xlabel(f"{metric} [{unit}]")
    ax.set_ylabel("fraction of samples ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out)


def _delay_panel(ax: Any, cs: Sequence[Mapping[str, Any]], metric: str, zoom: bool) -> None:
    order = _path_order([c["path"] for c in cs])
    by_path = {c["path"]: c for c in cs}
    xs = np.arange(len(order))
    vals, lo, hi = [], [], []
    for p in order:
        c = by_path[p]
        v = c["difference"]["value"]
        v = np.nan if v is None else v
        ci = c["test"]["ci"]  # the CI the verdict is based on (90% for TOST at alpha 0.05)
        vals.append(v)
        lo.append(v - ci["low"] if ci["low"] is not None else 0.0)
        hi.append(ci["high"] - v if ci["high"] is not None else 0.0)
    margin = max((by_path[p]["test"]["margin"] for p in order), default=0.0)
    ax.axhspan(-margin, margin, color="#1b9e77", alpha=0.18, lw=0)
    ax.axhline(0, color="black", lw=0.8)
    ax.bar(xs, vals, color=[_colour(p) for p in order], width=0.65, yerr=[lo, hi],
           capsize=4, ecolor="black")
    for x, p in zip(xs, order, strict=True):
        mark = _VERDICT_MARK.get(by_path[p]["verdict"], "?")
        ax.annotate(mark, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(0, -12),
                    textcoords="offset points", ha="center", fontsize=10)
    ax.set_xticks(xs, [_label(p) for p in order], rotation=35, ha="right", fontsize=8)
    label = "zoom: on-path" if zoom else metric
    ax.set_title(f"{label}\n(shaded: ±margin {margin:.3g} ms)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


_VERDICT_MARK = {"equivalent": "≈", "slower": "▲", "faster": "▼"}


def _zoomed(cs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The comparisons whose CI stays within a few margins of zero, i.e. the ones a panel
    scaled for a proxy's detour would flatten into invisibility."""
    out = []
    for c in cs:
        ci, margin = c["test"]["ci"], c["test"]["margin"]
        if ci["low"] is not None and max(abs(ci["low"]), abs(ci["high"])) <= 5 * margin:
            out.append(c)
    return out


def added_delay_plot(
    comparisons: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str, out: Path
) -> Path | None:
    """Small multiples, one panel per latency metric: median(path) - median(baseline) per
    path, with the TOST CI as error bars and the equivalence margin shaded around zero, so
    "bar and whiskers inside the band" reads as "equivalent".

    When some paths (off-path proxies) add far more than the margin, a second row zooms in on
    the others, so an on-path relay's tiny difference and the margin stay readable."""
    panels = [(m, [c for c in comparisons if c["metric"] == m]) for m in metrics]
    panels = [(m, cs) for m, cs in panels if cs]
    if not panels:
        return None
    zooms = [_zoomed(cs) for _, cs in panels]
    two_rows = any(z and len(z) < len(cs) for z, (_, cs) in zip(zooms, panels, strict=True))
    rows = 2 if two_rows else 1
    fig, axes = plt.subplots(rows, len(panels), figsize=(2.6 * len(panels) + 1.0, 3.9 * rows),
                             squeeze=False)
    for i, (metric, cs) in enumerate(panels):
        _delay_panel(axes[0][i], cs, metric, zoom=False)
        if two_rows:
            if zooms[i]:
                _delay_panel(axes[1][i], zooms[i], metric, zoom=True)
            else:
                axes[1][i].set_axis_off()
    base = panels[0][1][0]["baseline"]
    for r in range(rows):
        axes[r][0].set_ylabel(f"added delay vs {base} [ms]\n(median difference, TOST 90% CI)")
    fig.suptitle(title + "\n≈ equivalent (TOST)   ▲ slower   ▼ faster   ? inconclusive",
                 fontsize=10)
    return _save(fig, out)


def throughput_plot(
    summaries: Sequence[Mapping[str, Any]], metric: str, title: str, out: Path
) -> Path | None:
    """Median per path (bars, 95% CI error bars), grouped by measurement."""
    rows = [s for s in summaries if s["metric"] == metric and s["median"] is not None]
    if not rows:
        return None
    measurements = list(dict.fromkeys(s["measurement"] for s in rows))
    paths = _path_order([s["path"] for s in rows])
    width = 0.8 / len(paths)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.6 * len(measurements) + 3), 4.2))
    for i, p in enumerate(paths):
        xs, vals, lo, hi = [], [], [], []
        for j, m in enumerate(measurements):
            s = next((r for r in rows if r["measurement"] == m and r["path"] == p), None)
            if s is None:
                continue
            ci = s["ci"]
            xs.append(j - 0.4 + width * (i + 0.5))
            vals.append(s["median"])
            lo.append(s["median"] - ci["low"] if ci["low"] is not None else 0.0)
            hi.append(ci["high"] - s["median"] if ci["high"] is not None else 0.0)
        ax.bar(xs, vals, width=width * 0.95, color=_colour(p), label=_label(p), yerr=[lo, hi],
               capsize=3, ecolor="black")
    unit = rows[0]["unit"]
    top = max(s["ci"]["high"] if s["ci"]["high"] is not None else s["median"] for s in rows)
    ax.set_ylim(0, top * 1.3)  # headroom for the legend above the bars
    ax.set_xticks(range(len(measurements)), measurements)
    ax.set_ylabel(f"{metric} [{unit}] (median, 95% CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(3, len(paths)), loc="upper center")
    return _save(fig, out)


def sweep_plot(
    comparisons: Sequence[Mapping[str, Any]], metric: str, title: str, out: Path
) -> Path | None:
    """Penalty (median difference vs baseline, 95% CI band) against the swept link delay."""
    cs = [c for c in comparisons if c["metric"] == metric and "delay_ms" in c["sweep"]]
    if len({c["sweep"]["delay_ms"] for c in cs}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for p in _path_order([c["path"] for c in cs]):
        pts = sorted((c for c in cs if c["path"] == p), key=lambda c: c["sweep"]["delay_ms"])
        x = np.array([c["sweep"]["delay_ms"] for c in pts])
        y = np.array([np.nan if c["difference"]["value"] is None else c["difference"]["value"]
                      for c in pts])
        lo = np.array([np.nan if c["difference"]["ci"]["low"] is None
                       else c["difference"]["ci"]["low"] for c in pts])
        hi = np.array([np.nan if c["difference"]["ci"]["high"] is None
                       else c["difference"]["ci"]["high"] for c in pts])
        ax.plot(x, y, marker="o", color=_colour(p), label=_label(p))
        ax.fill_between(x, lo, hi, color=_colour(p), alpha=0.2, lw=0)
    ax.axhline(0, color="black", lw=0.8)
    unit = cs[0]["unit"]
    ax.set_xlabel("added one-way delay on the swept link [ms]")
    ax.set_ylabel(f"{metric}: penalty vs {cs[0]['baseline']} [{unit}]")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def unit_label(unit: str) -> str:
    return UNITS.get(unit, unit)
