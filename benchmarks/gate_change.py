"""How far a figure moved between two runs, with a CI, and whether that fails the gate.

Why from the stored CIs: each run's results.json already holds the estimate and CI the
analysis chose for every within-run comparison (order statistics, Hodges-Lehmann on paired
blocks, ...). The change between two independent runs is a difference of two estimates
(of log ratios for ratios), and its CI follows from the two CIs by MOVER, the "method of
variance estimates recovery" (Zou & Donner 2008; Newcombe 2011): each side of the combined
interval is the estimate minus/plus the root-sum-square of the matching sides of the two
intervals. It keeps each CI's asymmetry, needs no raw records, and stays right when the
analysis changes its method, since it uses whatever interval the analysis trusted.

The decision rule (documented in ci/README.md, simulated in tests/unit/test_bench_gate.py):
the gate asks "has the figure moved beyond its threshold T in the bad direction?". With e
the estimate of the change and h the half-width of its CI on the bad side:

- regressed: the whole CI is beyond T;
- ok: the whole CI is short of T (improved: the whole CI is beyond T the other way);
- undecided (fails), when the CI contains T and either e >= T/2 (the estimate is nearer a
  shift of T than no shift: likely a regression, not provable from these samples) or h > T
  (too few samples: the interval cannot tell no change from a change of T);
- otherwise ok with a note: the CI reaches T but e < T/2 and h <= T.

Judging by the midpoint keeps the two errors balanced. An unchanged figure fails with
probability P(N(0,1) > 1.96 max(T - h, T/2) / h): 0.2% at h = 0.4 T, 2.5% at h = T/2, 7.5%
at h = 0.68 T, 16% at the worst admitted precision h = T. A change of exactly T passes with
P(N(0,1) > 1.96 min(h, T/2) / h): 2.5% whenever h <= T/2, 16% at h = T. A change of 2 T
fails with probability above 99.8% at any admitted precision (h <= T).

The cut T/2 is `[gate] lean` in ci/tolerances.toml (a fraction of T, 0.5 by default). A
larger lean trades missed changes of about T for fewer false alarms: at h = 0.6 T and lean
0.75, 0.7% false alarms, 21% of changes of exactly T and 0.7% of changes of 1.5 T missed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

OK, REGRESSED, IMPROVED, UNDECIDED = "ok", "regressed", "improved", "undecided"
MISSING, FLIPPED, INFO = "missing", "flipped", "info"
#: verdicts of a gating row that fail the build
FAILING = (REGRESSED, UNDECIDED, MISSING, FLIPPED)


@dataclass(frozen=True)
class Estimate:
    """One run's figure with its CI (bounds None when the analysis had too few samples)."""

    value: float | None
    low: float | None
    high: float | None
    level: float
    #: where it was read: "estimate" (a comparison's own figure) or "test" (its test's)
    source: str = "estimate"

    @classmethod
    def from_stored(cls, value: Any, ci: Mapping[str, Any] | None,
                    source: str = "estimate") -> Estimate:
        ci = ci or {}
        return cls(_num(value), _num(ci.get("low")), _num(ci.get("high")),
                   float(ci.get("level") or 0.95), source)

    @property
    def complete(self) -> bool:
        return None not in (self.value, self.low, self.high)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


@dataclass(frozen=True)
class Change:
    """new - old (difference) or new / old (ratio) with its CI at the gate's confidence.

    `work_*` are on the working scale (log for ratios) where the CI is built and judged;
    `new_up`/`new_down`/`old_up`/`old_down` are the two runs' half-widths on that scale,
    rescaled to the gate's confidence, kept to say which run limits the precision."""

    comparator: str
    value: float
    low: float
    high: float
    work_value: float
    work_low: float
    work_high: float
    new_up: float
    new_down: float
    old_up: float
    old_down: float


def change_between(old: Estimate, new: Estimate, comparator: str,
                   confidence: float) -> Change | str:
    """The change from old to new with its MOVER CI, or the reason it has none."""
    for label, e in (("baseline", old), ("current", new)):
        if e.value is None:
            return f"no estimate in the {label} run"
        if e.low is None or e.high is None:
            return f"no CI in the {label} run (too few samples for a {e.level:.0%} CI)"
        if comparator == "ratio" and min(e.value, e.low, e.high) <= 0:
            return f"non-positive ratio or CI bound in the {label} run: no log scale"
    f = (lambda v: math.log(v)) if comparator == "ratio" else (lambda v: v)
    z = _z(confidence)
    xo, lo_o, hi_o = f(old.value), f(old.low), f(old.high)  # type: ignore[arg-type]
    xn, lo_n, hi_n = f(new.value), f(new.low), f(new.high)  # type: ignore[arg-type]
    ko, kn = z / _z(old.level), z / _z(new.level)
    # A stored estimate may sit just outside its own CI (e.g. a ratio of medians next to a
    # Hodges-Lehmann interval): such a side contributes no width rather than a negative one.
    old_up, old_down = max(0.0, hi_o - xo) * ko, max(0.0, xo - lo_o) * ko
    new_up, new_down = max(0.0, hi_n - xn) * kn, max(0.0, xn - lo_n) * kn
    d = xn - xo
    low = d - math.hypot(new_down, old_up)
    high = d + math.hypot(new_up, old_down)
    g = math.exp if comparator == "ratio" else (lambda v: v)
    return Change(comparator, g(d), g(low), g(high), d, low, high,
                  new_up, new_down, old_up, old_down)


@dataclass(frozen=True)
class Threshold:
    """The bound a change must not cross: `work` on the working scale, oriented so that
    positive is the bad direction; `bound` in the change's own units, for display."""

    work: float
    bound: float
    bad_up: bool


def threshold_for(comparator: str, better: str, tolerance: float) -> Threshold:
    """Difference: tolerance is in the metric's unit (bad = up for lower-is-better).
    Ratio: tolerance is a fraction; lower-is-better fails above 1 + t, higher-is-better
    below 1 - t (so -10% throughput and +20% CPU read as written)."""
    bad_up = better == "lower"
    if comparator == "difference":
        return Threshold(tolerance, tolerance if bad_up else -tolerance, bad_up)
    if bad_up:
        return Threshold(math.log1p(tolerance), 1.0 + tolerance, True)
    return Threshold(-math.log1p(-tolerance), 1.0 - tolerance, False)


def classify(ch: Change, th: Threshold, lean: float = 0.5) -> tuple[str, str]:
    """(verdict, note) by the rule in the module docstring; `lean` is the cut as a fraction
    of the threshold (0.5: the midpoint)."""
    s = 1.0 if th.bad_up else -1.0
    e = s * ch.work_value
    a, b = sorted((s * ch.work_low, s * ch.work_high))
    t = th.work
    h = b - e  # half-width on the bad side
    if a > t:
        return REGRESSED, "whole CI beyond the threshold"
    if b < -t:
        return IMPROVED, "whole CI beyond the threshold in the good direction"
    if b < t:
        return OK, ""
    if e >= lean * t or h > t:
        return UNDECIDED, _undecided_note(ch, th, e, lean)
    return OK, (f"imprecise: CI reaches the threshold (half-width {h / t:.2f} x threshold), "
                f"estimate below {lean:g} of it")


def _undecided_note(ch: Change, th: Threshold, e: float, lean: float) -> str:
    """What the user should do: confirm a likely regression, or gather enough samples that
    the CI clears the threshold (bad-side half-width <= T - e), naming which run limits it."""
    t = th.work
    if e >= t * (1.0 - 1e-9):  # at the threshold, up to rounding
        return ("estimate at or beyond the threshold, CI reaches back short of it: likely a "
                "regression; rerun with more repetitions to confirm")
    if e >= lean * t:
        return (f"estimate {e / t:.0%} of the way to the threshold and the CI reaches it: "
                "likely a regression; rerun with more repetitions of this measurement (or the "
                "full profile) to confirm or clear it")
    return ("CI too wide to decide (half-width above the threshold); "
            + _rerun_advice(ch, th, t - e))


def _rerun_advice(ch: Change, th: Threshold, room: float) -> str:
    """How many times the current run's repetitions would bring the CI's bad side within
    `room` (its half-width shrinks as 1/sqrt(n)); the baseline's own side cannot shrink."""
    new_bad, old_bad = (ch.new_up, ch.old_down) if th.bad_up else (ch.new_down, ch.old_up)
    if old_bad >= room:
        return ("the baseline's CI alone reaches the threshold: re-record the baseline with "
                "more repetitions (see ci/README.md), then rerun")
    need = math.sqrt(room * room - old_bad * old_bad)
    factor = (new_bad / need) ** 2 if need > 0 else math.inf
    more = f"about {factor:.1f}x" if factor < 100 else "over 100x"
    return (f"to decide, rerun with {more} the repetitions of this measurement (or the full "
            "profile)")
