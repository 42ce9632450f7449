"""Statistics: exact order statistics, bootstrap CIs that cover the truth and have sane
widths, TOST verdicts for equal and shifted samples, ratio CIs, speed of the bootstrap."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks import stats


def test_describe_exact_values() -> None:
    d = stats.describe(np.arange(1, 101))
    assert (d.n, d.median, d.min, d.max) == (100, 50.5, 1.0, 100.0)
    assert d.p95 == pytest.approx(95.05)
    assert d.p99 == pytest.approx(99.01)
    assert stats.describe([]).median is None
    assert stats.describe([3.0, 1.0, 2.0]).median == 2.0
    with pytest.raises(ValueError):
        stats.describe([1.0, float("inf")])


@pytest.mark.parametrize("n", [7, 8, 101, 1000])
def test_bootstrap_medians_match_naive_median(n: int) -> None:
    """The partition-on-indices shortcut gives exactly np.median of each resample."""
    x = np.random.default_rng(n).lognormal(1.0, 0.5, n)
    fast = stats.bootstrap_medians(x, 200, seed=9)
    rng = np.random.default_rng(9)
    xs = np.sort(x)
    idx = rng.integers(0, n, size=(200, n), dtype=np.int32)
    assert np.array_equal(fast, np.median(xs[idx], axis=1))


def test_median_ci_contains_truth_with_sane_width() -> None:
    rng = np.random.default_rng(1)
    true_median = np.exp(2.0)  # lognormal(mu=2) has median e^2
    x = rng.lognormal(2.0, 0.3, 1000)
    ci = stats.median_ci(x, seed=0)
    assert ci.contains(true_median)
    assert ci.low < np.median(x) < ci.high
    # asymptotic s.e. of the median: 1 / (2 f(m) sqrt(n)); 95% width ~ 3.92 s.e.
    f_m = 1.0 / (true_median * 0.3 * np.sqrt(2 * np.pi))
    expected_width = 3.92 / (2 * f_m * np.sqrt(1000))
    assert 0.6 * expected_width < ci.width < 1.6 * expected_width
    assert stats.median_ci([1.0]).low is None  # too few samples: no interval


def test_median_ci_coverage_near_nominal() -> None:
    rng = np.random.default_rng(5)
    hits = 0
    trials = 200
    for i in range(trials):
        x = rng.normal(10.0, 1.0, 60)
        hits += stats.median_ci(x, resamples=1000, seed=i).contains(10.0)
    assert 0.88 <= hits / trials <= 0.995, hits


def test_seeded_and_reproducible() -> None:
    x = np.random.default_rng(3).normal(0, 1, 100)
    assert stats.median_ci(x, seed=4) == stats.median_ci(x, seed=4)
    assert stats.median_ci(x, seed=4) != stats.median_ci(x, seed=5)


def test_bootstrap_is_fast() -> None:
    x = np.random.default_rng(0).lognormal(1, 0.4, 1000)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        stats.median_ci(x, resamples=5000)
        best = min(best, time.perf_counter() - t)
    assert best < 1.0, f"5000 resamples of 1000 took {best:.2f} s"


def test_tost_equivalent_for_same_distribution() -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(20.0, 0.5, 1000)
    b = rng.normal(20.0, 0.5, 1000)
    r = stats.tost(a, b)
    assert r.margin == pytest.approx(max(0.1, 0.01 * np.median(a)))
    assert r.verdict == stats.EQUIVALENT
    assert -r.margin <= r.ci.low and r.ci.high <= r.margin
    assert r.ci.level == pytest.approx(0.90)
    assert r.p_value < 0.05


def test_tost_not_equivalent_and_slower_for_shift_of_three_margins() -> None:
    rng = np.random.default_rng(12)
    a = rng.normal(20.0, 0.5, 1000)
    margin = max(0.1, 0.01 * np.median(a))
    b = rng.normal(20.0, 0.5, 1000) + 3 * margin
    r = stats.tost(a, b)
    assert r.verdict == stats.SLOWER
    assert r.ci.low > r.margin  # CI lies wholly above the margin
    assert r.difference == pytest.approx(3 * margin, abs=margin)
    faster = stats.tost(b, a)
    assert faster.verdict == stats.FASTER


def test_tost_inconclusive_when_too_noisy() -> None:
    rng = np.random.default_rng(13)
    a = rng.normal(20.0, 5.0, 20)
    b = rng.normal(20.0, 5.0, 20)
    assert stats.tost(a, b).verdict == stats.NOT_EQUIVALENT
    assert stats.tost([1.0], b).verdict == stats.INSUFFICIENT


def test_tost_margin_configurable() -> None:
    a = np.full(50, 100.0) + np.random.default_rng(0).normal(0, 0.01, 50)
    b = a + 0.5
    default = stats.tost(a, b)  # margin max(0.1 ms, 1% of 100 ms) = 1 ms
    assert default.margin == pytest.approx(1.0, rel=1e-3)
    assert default.verdict == stats.EQUIVALENT
    assert stats.tost(a, b, margin=0.2).verdict == stats.SLOWER
    tight = stats.tost(a, b, abs_margin=0.1, rel_margin=0.001)
    assert tight.margin == pytest.approx(0.1, rel=1e-3)
    assert tight.verdict == stats.SLOWER


def test_ratio_ci_and_ratio_test() -> None:
    rng = np.random.default_rng(21)
    a = rng.normal(900.0, 10.0, 200)
    b = rng.normal(600.0, 10.0, 200)
    ci = stats.ratio_ci(a, b, seed=1)
    assert ci.contains(600.0 / 900.0)
    assert ci.high < 1.0
    assert ci.width < 0.05
    pb = stats.pair_bootstrap(a, rng.normal(900.0, 10.0, 200))
    assert stats.ratio_test_from_bootstrap(pb, 0.05).verdict == stats.EQUIVALENT
    pb = stats.pair_bootstrap(a, b)
    assert stats.ratio_test_from_bootstrap(pb, 0.05).verdict == "lower"
    d = stats.diff_ci(a, b)
    assert d.contains(-300.0)


def test_ratio_with_zero_baseline_is_undefined() -> None:
    pb = stats.pair_bootstrap([0.0, 0.0, 0.0], [0.1, 0.0, 0.2])
    assert pb is not None
    assert pb.ratio_value is None
    assert pb.ratio_ci().low is None


def test_mann_whitney_for_information() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 100)
    assert stats.mann_whitney(a, a + 2)["p_value"] < 1e-6
    assert stats.mann_whitney(a, a)["p_value"] > 0.5
    assert stats.mann_whitney([], a)["p_value"] is None


def test_signed_rank_null_matches_enumeration() -> None:
    """The convolution gives the same distribution as counting all 2^n sign patterns."""
    n = 10
    sums = np.array([sum(r for r in range(1, n + 1) if mask >> (r - 1) & 1)
                     for mask in range(2 ** n)])
    brute = np.array([(sums <= t).mean() for t in range(n * (n + 1) // 2 + 1)])
    assert np.allclose(stats.signed_rank_null_cdf(n), brute)
    assert stats.signed_rank_null_cdf(n)[8] == pytest.approx(25 / 1024)  # table: T <= 8


def test_hodges_lehmann_ci_uses_the_tabled_order_statistics() -> None:
    # n = 10 at 95%: the 9th smallest and 9th largest of the 55 Walsh averages.
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0])
    i, j = np.triu_indices(10)
    walsh = np.sort((x[i] + x[j]) / 2)
    est, ci = stats.hodges_lehmann(x)
    assert est == np.median(walsh)
    assert (ci.low, ci.high) == (walsh[8], walsh[46])
    assert ci.method.startswith("Hodges-Lehmann")


def test_hodges_lehmann_too_few_values_has_no_ci() -> None:
    est, ci = stats.hodges_lehmann([0.1, 0.2, 0.3, 0.4, 0.5])
    assert est == pytest.approx(0.3)
    assert ci.low is None and ci.high is None
    with pytest.raises(ValueError):
        stats.hodges_lehmann([])


def test_hodges_lehmann_ci_covers_and_resists_outliers() -> None:
    """95% coverage on symmetric heavy-tailed data; a wild value moves the estimate little."""
    rng = np.random.default_rng(3)
    trials = 400
    hits = sum(stats.hodges_lehmann(-0.02 + 0.1 * rng.standard_t(4, 30))[1].contains(-0.02)
               for _ in range(trials))
    assert 0.92 <= hits / trials <= 0.985
    base = rng.normal(0.0, 0.05, 40)
    shifted = np.append(base, -5.0)
    assert abs(stats.hodges_lehmann(shifted)[0] - stats.hodges_lehmann(base)[0]) < 0.01
