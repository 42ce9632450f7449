"""Sequential equivalence tests over interleaved, paired blocks: stop each comparison as soon
as its verdict is decided, with the error rate controlled for the peeking.

Why: a fixed sample size is either too small for the noisy comparisons (verdict "not
equivalent" from an interval that merely straddles a margin) or wasteful for the clear ones
(a proxy 140 ms slower than direct is obvious after ten blocks). Looking at the data every
`look_every` blocks and stopping a comparison once decided spends the run's minutes where
they buy a verdict.

The procedure (one comparison = one metric of one path pair, B relative to A):
- data: per-block differences B - A (latency, loss) or log(B / A) (throughput, rate, cost),
  both paths measured in the same block, so drift common to the block cancels;
- at look j (after `looks[j]` measured blocks) the median of the differences gets its exact
  sign-test CI (binomial order statistics) at level 1 - 2 * alpha_j; the region is [-m, +m]
  (log(1 - m), log(1 + m) for ratios);
- decided at look j when the CI lies inside the region (equivalent), or wholly beyond it
  (slower/worse or faster/better by more than the margin: more data cannot make it
  equivalent);
- at the last look (budget spent) the same two outcomes, else `undecided`, with the samples
  per path a decision would need, extrapolated from the CI half-width (which shrinks about
  as 1/sqrt(n)). An interval that excludes 0 but reaches past a margin bound is undecided,
  not "slower": slower claims a difference beyond the margin, the one a user cares about,
  and a real difference smaller than the margin ends `equivalent` with enough samples.

Error control: alpha_j = alpha / K for K planned looks (Bonferroni). A false claim of
equivalence at any look needs one of the K one-sided tests at that look to reject wrongly,
each with probability <= alpha / K, so the probability over the whole sequence is <= alpha
whatever the dependence between looks (union bound). Group-sequential boundaries
(O'Brien-Fleming, alpha spending) would be a little tighter but rest on the normal
approximation of the shift's distribution; Bonferroni keeps the exact, distribution-free
order-statistic interval (coverage >= its level for any continuous distribution of the
differences, no symmetry assumed). The price is a wider interval per look (about 30% at
K = 4), which the early stops more than repay; a fixed-size run is the special case K = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import stats

#: raw outcomes of one look (mapped to slower/worse... by the caller, which knows the metric)
EQUIVALENT = stats.EQUIVALENT
ABOVE = "above"
BELOW = "below"
UNDECIDED = stats.UNDECIDED
INSUFFICIENT = stats.INSUFFICIENT
PENDING = "pending"


@dataclass(frozen=True)
class LookPlan:
    """When a comparison is looked at, and at what alpha.

    `max_blocks` is the budget (the measurement's repetitions); looks fall after every
    `look_every` measured blocks and at the budget. look_every >= max_blocks (or None) is a
    single look, i.e. a fixed-size test at the full alpha."""

    max_blocks: int
    look_every: int | None
    alpha: float

    @property
    def looks(self) -> tuple[int, ...]:
        every = self.look_every or self.max_blocks
        if every >= self.max_blocks:
            return (self.max_blocks,)
        points = list(range(every, self.max_blocks, every))
        return (*points, self.max_blocks)

    @property
    def alpha_per_look(self) -> float:
        """Bonferroni: alpha split evenly over the planned looks (see the module doc)."""
        return self.alpha / len(self.looks)

    @property
    def level(self) -> float:
        """Two-sided level of each look's CI: two one-sided tests at alpha_per_look."""
        return 1.0 - 2.0 * self.alpha_per_look

    def to_dict(self) -> dict[str, Any]:
        return {"looks": list(self.looks), "alpha": self.alpha,
                "alpha_per_look": self.alpha_per_look, "level": self.level,
                "correction": "bonferroni"}


@dataclass(frozen=True)
class Region:
    """The equivalence region on the test's scale (difference, or log of the ratio)."""

    low: float
    high: float
    #: the margin as stated (ms, percentage points, or relative for ratios)
    margin: float
    log_scale: bool


@dataclass(frozen=True)
class Decision:
    """Outcome of one comparison's sequential test."""

    verdict: str  # equivalent | above | below | undecided | insufficient data
    #: 1-based look at which it was decided (the last look when never decided early)
    look: int
    #: measured blocks available at that look
    blocks: int
    #: paired differences the CI rests on
    n: int
    estimate: float | None
    ci: stats.CI
    region: Region | None
    plan: LookPlan
    #: for undecided / insufficient: samples per path a decision would need (estimate)
    samples_needed: int | None = None

    @property
    def decided(self) -> bool:
        return self.verdict in (EQUIVALENT, ABOVE, BELOW)

    @property
    def stopped_early(self) -> bool:
        return self.decided and self.look < len(self.plan.looks)


def min_n(level: float) -> int:
    """Fewest paired differences with an exact sign-test CI at `level` (2^(1-n) <= 1-level:
    5 at 90%, 6 at 95%, 7 at 97.5%)."""
    return stats.median_ci_min_n(level)


def classify(ci: stats.CI, region: Region, final: bool) -> str:
    """The raw verdict of one look (see the module doc)."""
    if ci.low is None or ci.high is None:
        return INSUFFICIENT if final else PENDING
    if region.low <= ci.low and ci.high <= region.high:
        return EQUIVALENT
    if ci.low > region.high:
        return ABOVE
    if ci.high < region.low:
        return BELOW
    return UNDECIDED if final else PENDING


def samples_needed(ci: stats.CI, estimate: float | None, region: Region, n: int,
                   level: float) -> int | None:
    """Samples per path to decide, from the observed CI: the half-width h at n shrinks about
    as 1/sqrt(n), and a decision needs h below the estimate's distance to the nearer margin
    bound (inside the region: equivalence; outside: beyond the margin)."""
    if ci.low is None or ci.high is None or estimate is None:
        return min_n(level)
    half = (ci.high - ci.low) / 2.0
    target = abs(min(region.high - estimate, estimate - region.low))
    if target <= 0 or half <= 0:
        return None
    return max(n + 1, math.ceil(n * (half / target) ** 2))


def run(diffs: Sequence[tuple[int, float]], region_at: Callable[[int], Region],
        plan: LookPlan, available_blocks: int | None = None) -> Decision:
    """The sequential test of one comparison.

    `diffs` are (rep, difference) pairs: the measured block index (0-based) and B - A on the
    test scale. `region_at(blocks)` gives the equivalence region from the data of the first
    `blocks` blocks (a latency margin scales with the baseline's median). Looks past
    `available_blocks` (the blocks measured so far; default: all planned) are not taken, so
    a runner can call this after every look and get the same decisions the offline analysis
    gets from the finished records."""
    reps = np.array([r for r, _ in diffs], dtype=int)
    values = np.array([d for _, d in diffs], dtype=float)
    last = len(plan.looks)
    level = plan.level
    decision: Decision | None = None
    for j, blocks in enumerate(plan.looks, 1):
        if available_blocks is not None and blocks > available_blocks:
            break
        final = j == last
        x = values[reps < blocks]
        shift = stats.paired_median_shift(x, level)
        region = region_at(blocks)
        verdict = classify(shift.ci, region, final)
        needed = None
        if verdict in (UNDECIDED, INSUFFICIENT):
            needed = samples_needed(shift.ci, shift.estimate, region, int(x.size), level)
        decision = Decision(verdict, j, blocks, int(x.size), shift.estimate, shift.ci, region,
                            plan, needed)
        if decision.decided:
            return decision
    if decision is None:  # no look reached yet
        shift = stats.paired_median_shift(values, level)
        return Decision(PENDING, 0, 0, int(values.size), shift.estimate, shift.ci, None, plan)
    return decision
