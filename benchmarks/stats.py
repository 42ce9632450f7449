"""Statistics for benchmark samples: medians, tail percentiles, distribution-free confidence
intervals, the equivalence test (TOST) and Mann-Whitney.

Why these: latency samples are skewed and heavy-tailed (retransmits, scheduling on a shared
machine), so medians and rank methods are used instead of means and t-intervals. Every
interval a verdict rests on is distribution-free:
- the median's CI is made of order statistics, interpolated (Hettmansperger & Sheather 1986)
  so that its coverage is close to nominal at small n instead of the 97-98% of the plain
  binomial interval at n = 10 (or the ~74% of a percentile bootstrap at n = 3); below the n
  at which any order-statistic interval reaches the level (6 at 95%, 5 at 90%) there is no
  interval, and callers report `insufficient data`;
- a shift between two paths is the median of their paired per-block differences with the
  exact sign-test CI (the runner measures every path once per block), or, for two
  independent samples, the Hodges-Lehmann shift with the Mann-Whitney CI.
"No added delay" is a claim of *equivalence*, which a non-significant difference test cannot
support; two one-sided tests (TOST) against a stated margin can. The bootstrap helpers stay
for the regression gate's comparisons of two runs (ci/gate.py).

Over 400 lines on purpose: the project's one statistics module (DESIGN.md), so labs,
benchmarks and gate draw medians, CIs and tests from one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats as sps

DEFAULT_RESAMPLES = 5000
DEFAULT_LEVEL = 0.95
#: Fewer samples than this: no bootstrap CI (kept for the gate's run-to-run bootstrap; the
#: verdicts use `median_ci_min_n` / the signed-rank minimum instead).
MIN_N = 2
#: Cap on elements per vectorized chunk (resamples x n), to bound memory (~32 MB of float64).
_CHUNK_ELEMENTS = 4_000_000

Array = np.ndarray


@dataclass(frozen=True)
class CI:
    """A confidence interval; low/high are None when it cannot be computed."""

    low: float | None
    high: float | None
    level: float
    method: str = "percentile bootstrap"
    resamples: int = DEFAULT_RESAMPLES

    def contains(self, value: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= value <= self.high

    @property
    def width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return self.high - self.low

    def to_dict(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "method": self.method,
            "resamples": self.resamples,
        }


@dataclass(frozen=True)
class Description:
    """Order statistics of one sample."""

    n: int
    median: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    min: float | None
    max: float | None


def as_array(x: Sequence[float] | Array) -> Array:
    a = np.asarray(x, dtype=float).ravel()
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError("samples must be finite")
    return a


def describe(x: Sequence[float] | Array) -> Description:
    """n, median, p95, p99 (linear interpolation), mean, min, max; None fields when empty."""
    a = as_array(x)
    if a.size == 0:
        return Description(0, None, None, None, None, None, None)
    med, p95, p99 = (float(v) for v in np.percentile(a, [50, 95, 99]))
    return Description(
        int(a.size), med, p95, p99, float(a.mean()), float(a.min()), float(a.max())
    )


def rng_for(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_medians(
    x: Sequence[float] | Array, resamples: int = DEFAULT_RESAMPLES,
    seed: int | np.random.Generator | None = 0,
) -> Array:
    """Medians of `resamples` resamples (with replacement) of x, vectorized in chunks."""
    a = as_array(x)
    n = a.size
    if n == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = rng_for(seed)
    # Sort once: then the k-th smallest resampled *index* picks the k-th smallest value, and
    # a partial sort of small int32 indices is several times faster than np.median on floats.
    a = np.sort(a)
    lo, hi = (n - 1) // 2, n // 2
    out = np.empty(resamples)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)
        part = np.partition(idx, [lo, hi], axis=1)
        out[start:stop] = (a[part[:, lo]] + a[part[:, hi]]) / 2.0
    return out


def percentile_ci(boot: Array, level: float, resamples: int | None = None) -> CI:
    """Percentile interval of a bootstrap distribution; None bounds if it has inf/nan."""
    resamples = int(boot.size) if resamples is None else resamples
    if boot.size == 0 or not np.all(np.isfinite(boot)):
        return CI(None, None, level, resamples=resamples)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(boot, [tail, 100.0 - tail])
    return CI(float(lo), float(hi), level, resamples=resamples)


@lru_cache(maxsize=512)
def _binom_half_cdf(n: int) -> Array:
    """P(B <= j) for j = 0..n, B ~ Binomial(n, 1/2) (cached: read-only)."""
    cdf = sps.binom.cdf(np.arange(n + 1), n, 0.5)
    cdf.setflags(write=False)
    return cdf


def _order_coverage(n: int, k: int, cdf: Array) -> float:
    """Coverage of [X_(k), X_(n-k+1)] (1-based order statistics) for the median of any
    continuous distribution: P(k <= B <= n - k) = 1 - 2 P(B <= k - 1)."""
    return float(1.0 - 2.0 * cdf[k - 1])


def median_ci_min_n(level: float = DEFAULT_LEVEL) -> int:
    """Smallest n with an order-statistic CI of the median at `level` (the widest interval,
    [min, max], covers with probability 1 - 2^(1-n)): 6 at 95%, 5 at 90%."""
    n = 1
    while 1.0 - 2.0 ** (1 - n) < level - 1e-12:
        n += 1
    return n


def median_ci(x: Sequence[float] | Array, level: float = DEFAULT_LEVEL,
              interpolate: bool = True) -> CI:
    """Distribution-free CI of the median of x: order statistics interpolated after
    Hettmansperger & Sheather (1986); `interpolate=False`: the plain binomial interval, whose
    coverage is at least `level` for every continuous distribution (what a test needs).

    The plain binomial interval [X_(k), X_(n-k+1)] jumps between coverages (at n = 10:
    97.9% or 89.1%); interpolating between the k-th and (k+1)-th order statistics with their
    weight lambda brings the coverage to about the nominal level (exactly for symmetric
    distributions, within a point or two otherwise; see the simulation in
    tests/unit/test_bench_stats.py). Bounds are None when n < median_ci_min_n(level)."""
    a = np.sort(as_array(x))
    n = a.size
    method = ("order statistics (Hettmansperger-Sheather)" if interpolate
              else "order statistics (exact binomial)")
    if n < median_ci_min_n(level):
        return CI(None, None, level, method=method, resamples=0)
    cdf = _binom_half_cdf(n)
    k = 1  # the largest k whose interval still covers with at least `level`
    while k + 1 <= n // 2 and _order_coverage(n, k + 1, cdf) >= level:
        k += 1
    g_k = _order_coverage(n, k, cdf)
    if not interpolate or k + 1 > (n + 1) // 2 or g_k <= level + 1e-12:
        return CI(float(a[k - 1]), float(a[n - k]), level, method=method, resamples=0)
    g_next = _order_coverage(n, k + 1, cdf)
    # lambda = 0 keeps [X_(k), X_(n-k+1)], lambda = 1 moves in to [X_(k+1), X_(n-k)]
    share = (g_k - level) / (g_k - g_next)
    lam = (n - k) * share / (k + (n - 2 * k) * share)
    low = (1.0 - lam) * a[k - 1] + lam * a[k]
    high = (1.0 - lam) * a[n - k] + lam * a[n - k - 1]
    return CI(float(low), float(high), level, method=method, resamples=0)


def pair_medians(
    a: Sequence[float] | Array, b: Sequence[float] | Array,
    resamples: int = DEFAULT_RESAMPLES, seed: int | np.random.Generator | None = 0,
) -> tuple[Array, Array] | None:
    """Bootstrap medians of two independent samples (for the gate's run-to-run checks);
    None if either has fewer than MIN_N samples."""
    xa, xb = as_array(a), as_array(b)
    if xa.size < MIN_N or xb.size < MIN_N:
        return None
    rng = rng_for(seed)
    return bootstrap_medians(xa, resamples, rng), bootstrap_medians(xb, resamples, rng)


# ----------------------------------------------------------------------------- shifts


@dataclass(frozen=True)
class Shift:
    """Hodges-Lehmann shift of B relative to A with its distribution-free CI."""

    estimate: float | None
    ci: CI
    #: paired differences used (paired) or min(n_A, n_B) (two-sample)
    n: int
    paired: bool


def paired_shift(d: Sequence[float] | Array, level: float = DEFAULT_LEVEL) -> Shift:
    """Shift from per-block differences B - A (or log ratios): one-sample Hodges-Lehmann
    with the exact signed-rank CI. Pairing within a block cancels the drift both paths saw."""
    x = as_array(d)
    if x.size == 0:
        return Shift(None, CI(None, None, level, method="Hodges-Lehmann, exact signed-rank",
                              resamples=0), 0, True)
    est, ci = hodges_lehmann(x, level)
    return Shift(est, ci, int(x.size), True)


def paired_median_shift(d: Sequence[float] | Array, level: float = DEFAULT_LEVEL,
                        exact: bool = True) -> Shift:
    """Shift from per-block differences B - A (or log ratios): their median with the
    sign-test CI (order statistics of the differences).

    Why the median rather than the Hodges-Lehmann estimate: the interval needs no symmetry
    of the differences, only continuity, and on this machine's heavy-tailed differences
    (a busy core delays one sample of a block by tens of ms) it was 30-50% narrower than
    the signed-rank interval at the same level (handshake and page-load blocks of three
    quick runs). `exact=True` (tests): coverage >= level; False (display): interpolated,
    about nominal."""
    x = as_array(d)
    ci = median_ci(x, level, interpolate=not exact)
    method = "median of paired differences, sign test " + ("(exact)" if exact else
                                                            "(interpolated)")
    ci = CI(ci.low, ci.high, level, method=method, resamples=0)
    estimate = float(np.median(x)) if x.size else None
    return Shift(estimate, ci, int(x.size), True)


@lru_cache(maxsize=256)
def mann_whitney_null_cdf(m: int, n: int) -> Array:
    """P(U <= u) for u = 0..m*n under the null of the Mann-Whitney test (no ties).

    The counts are the coefficients of the Gaussian binomial [m+n choose m]_q, built factor
    by factor: multiply by (1 - q^(n+i)), divide by (1 - q^i) (a strided running sum)."""
    size = m * n + 1
    c = np.zeros(size)
    c[0] = 1.0
    for i in range(1, m + 1):
        shift = n + i
        if shift < size:
            c[shift:] = c[shift:] - c[:size - shift].copy()
        for u in range(i, size):
            c[u] += c[u - i]
    c = np.maximum(c, 0.0)
    cdf = np.cumsum(c) / c.sum()
    cdf.setflags(write=False)  # cached
    return cdf


#: Above this many pairs (m*n) the Mann-Whitney CI uses the normal approximation.
MW_EXACT_MAX_PAIRS = 2500


def two_sample_shift(a: Sequence[float] | Array, b: Sequence[float] | Array,
                     level: float = DEFAULT_LEVEL) -> Shift:
    """Shift of B relative to A from two independent samples: median of all pairwise
    differences B_j - A_i (Hodges-Lehmann) with the Mann-Whitney CI (Hollander & Wolfe
    4.3): the C-th smallest and C-th largest differences, C from the exact null of U
    (normal approximation beyond MW_EXACT_MAX_PAIRS pairs). Assumes the two distributions
    differ by a shift only."""
    xa, xb = as_array(a), as_array(b)
    method = "Hodges-Lehmann, Mann-Whitney"
    m, n = xa.size, xb.size
    if m == 0 or n == 0:
        return Shift(None, CI(None, None, level, method=method, resamples=0), 0, False)
    diffs = np.sort((xb[None, :] - xa[:, None]).ravel())
    est = float(np.median(diffs))
    tail = (1.0 - level) / 2.0
    if m * n <= MW_EXACT_MAX_PAIRS:
        c = int(np.count_nonzero(mann_whitney_null_cdf(m, n) <= tail + 1e-12))
    else:
        sd = np.sqrt(m * n * (m + n + 1) / 12.0)
        c = int(np.floor(m * n / 2.0 - sps.norm.ppf(1.0 - tail) * sd - 0.5)) + 1
    if c <= 0:
        return Shift(est, CI(None, None, level, method=method, resamples=0), min(m, n), False)
    return Shift(est, CI(float(diffs[c - 1]), float(diffs[diffs.size - c]), level,
                         method=method, resamples=0), min(m, n), False)


# ----------------------------------------------------------------------------- equivalence

EQUIVALENT = "equivalent"
#: the pre-sequential word for an inconclusive test; analyses now say UNDECIDED (old results
#: files and baselines still carry it)
NOT_EQUIVALENT = "not equivalent"
UNDECIDED = "undecided"
REPORT_ONLY = "report only"
SLOWER = "slower"
FASTER = "faster"
INSUFFICIENT = "insufficient data"


def default_margin(baseline_median: float, abs_ms: float = 0.1, rel: float = 0.01) -> float:
    """The "no added delay" margin: max(0.1 ms, 1% of the baseline median) by default."""
    return max(abs_ms, rel * abs(baseline_median))


def interval_verdict(low: float | None, high: float | None, lo_bound: float,
                     hi_bound: float, centre: float) -> str:
    """equivalent iff [low, high] lies within [lo_bound, hi_bound]; else "above"/"below" if the
    interval excludes `centre` on that side; else not equivalent."""
    if low is None or high is None:
        return INSUFFICIENT
    if lo_bound <= low and high <= hi_bound:
        return EQUIVALENT
    if low > centre:
        return "above"
    if high < centre:
        return "below"
    return NOT_EQUIVALENT


@dataclass(frozen=True)
class TostResult:
    """TOST on the shift of B relative to A against +-margin."""

    margin: float
    alpha: float
    difference: float | None
    ci: CI
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": "tost",
            "margin": self.margin,
            "alpha": self.alpha,
            "difference": self.difference,
            "ci": self.ci.to_dict(),
            "verdict": self.verdict,
        }


def tost_from_shift(shift: Shift, margin: float, alpha: float = 0.05) -> TostResult:
    """Equivalent iff the shift's (1 - 2 alpha) CI lies within [-margin, +margin] (two
    one-sided tests at alpha); else "slower"/"faster" if it excludes 0 on that side; else
    "not equivalent"; "insufficient data" without a CI."""
    raw = interval_verdict(shift.ci.low, shift.ci.high, -margin, margin, 0.0)
    verdict = {"above": SLOWER, "below": FASTER}.get(raw, raw)
    return TostResult(margin, alpha, shift.estimate, shift.ci, verdict)


def tost(
    a: Sequence[float] | Array, b: Sequence[float] | Array, margin: float | None = None, *,
    abs_margin: float = 0.1, rel_margin: float = 0.01, alpha: float = 0.05,
    paired: bool = False,
) -> TostResult:
    """Is B equivalent to A within margin (default max(abs, rel * median A))? `paired`: a
    and b are aligned per block (paired Hodges-Lehmann), else two independent samples."""
    xa, xb = as_array(a), as_array(b)
    level = 1.0 - 2.0 * alpha
    if paired:
        if xa.size != xb.size:
            raise ValueError("paired TOST needs samples of equal length")
        shift = paired_shift(xb - xa, level)
    else:
        shift = two_sample_shift(xa, xb, level)
    if margin is None:
        margin = default_margin(float(np.median(xa)) if xa.size else 0.0, abs_margin,
                                rel_margin)
    return tost_from_shift(shift, margin, alpha)


def mann_whitney(a: Sequence[float] | Array, b: Sequence[float] | Array) -> dict[str, Any]:
    """Two-sided Mann-Whitney U (information only: it tests for a difference, not equivalence)."""
    xa, xb = as_array(a), as_array(b)
    if xa.size == 0 or xb.size == 0:
        return {"u": None, "p_value": None}
    if np.all(xa == xa[0]) and np.all(xb == xa[0]):
        return {"u": float(xa.size * xb.size / 2), "p_value": 1.0}
    res = sps.mannwhitneyu(xb, xa, alternative="two-sided")
    return {"u": float(res.statistic), "p_value": float(res.pvalue)}


@lru_cache(maxsize=512)
def _signed_rank_null_cdf(n: int) -> Array:
    cdf = _signed_rank_null_cdf_uncached(n)
    cdf.setflags(write=False)
    return cdf


def signed_rank_null_cdf(n: int) -> Array:
    """P(T+ <= t) for t = 0 .. n(n+1)/2 under the null of Wilcoxon's signed-rank test.

    Exact, by convolving rank by rank (each rank joins the positive sum with probability
    1/2): O(n^3) work, a few milliseconds for the few hundred rounds a benchmark runs;
    cached, because the sequential test asks for the same n at every look."""
    return _signed_rank_null_cdf(int(n))


def _signed_rank_null_cdf_uncached(n: int) -> Array:
    pmf = np.ones(1)
    for k in range(1, n + 1):
        grown = np.zeros(pmf.size + k)
        grown[:pmf.size] += pmf
        grown[k:] += pmf
        pmf = grown / 2.0
    return np.cumsum(pmf)


def hodges_lehmann(x: Sequence[float] | Array, level: float = DEFAULT_LEVEL) -> tuple[float, CI]:
    """Hodges-Lehmann location of x (median of the Walsh averages) with its exact,
    distribution-free CI from the signed-rank distribution.

    Why: for paired per-round differences (log ratios of A and B measured in the same
    round) the differences are symmetric around the true shift whenever A and B are
    exchangeable apart from that shift, which is all this interval assumes. It is as
    robust to a few wild rounds as the median, yet needs about 35% fewer rounds than a
    bootstrap CI of the median for the same width (asymptotic efficiency 0.95 vs 0.64
    against the mean on normal data). Bounds are None when n is too small for `level`
    (fewer than 6 values at 95%)."""
    a = as_array(x)
    n = a.size
    if n == 0:
        raise ValueError("Hodges-Lehmann estimate of an empty sample")
    i, j = np.triu_indices(n)
    walsh = np.sort((a[i] + a[j]) / 2.0)
    estimate = float(np.median(walsh))
    method = "Hodges-Lehmann, exact signed-rank"
    # k = 1 + the largest t with P(T+ <= t) <= alpha/2; the CI is the k-th smallest and
    # k-th largest Walsh average (Hollander & Wolfe, Nonparametric Statistical Methods).
    k = int(np.count_nonzero(signed_rank_null_cdf(n) <= (1.0 - level) / 2.0 + 1e-12))
    if k == 0:
        return estimate, CI(None, None, level, method=method, resamples=0)
    return estimate, CI(float(walsh[k - 1]), float(walsh[walsh.size - k]), level,
                        method=method, resamples=0)
