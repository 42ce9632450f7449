"""Statistics: exact order statistics, bootstrap CIs that cover the truth and have sane
widths, TOST verdicts for equal and shifted samples, ratio CIs, speed of the bootstrap."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from benchmarks import sequential, stats


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
    ci = stats.median_ci(x)
    assert ci.contains(true_median)
    assert ci.low < np.median(x) < ci.high
    # asymptotic s.e. of the median: 1 / (2 f(m) sqrt(n)); 95% width ~ 3.92 s.e.
    f_m = 1.0 / (true_median * 0.3 * np.sqrt(2 * np.pi))
    expected_width = 3.92 / (2 * f_m * np.sqrt(1000))
    assert 0.6 * expected_width < ci.width < 1.6 * expected_width
    assert ci.method.startswith("order statistics")


@pytest.mark.parametrize(("n", "level"), [(5, 0.90), (10, 0.95), (30, 0.95), (10, 0.90)])
@pytest.mark.parametrize("dist", ["normal", "lognormal", "exponential"])
def test_median_ci_coverage_within_two_points_of_nominal(n: int, level: float,
                                                         dist: str) -> None:
    """Simulated coverage of the order-statistic CI; n = 5 at 90% (no 95% interval
    exists below n = 6). The plain binomial interval would cover 97.9% at n = 10."""
    rng = np.random.default_rng(n * 100 + int(level * 100))
    trials = 4000
    draw, truth = {
        "normal": (lambda: rng.normal(10.0, 1.0, n), 10.0),
        "lognormal": (lambda: rng.lognormal(0.0, 1.0, n), 1.0),
        "exponential": (lambda: rng.exponential(1.0, n), np.log(2.0)),
    }[dist]
    hits = sum(stats.median_ci(draw(), level).contains(truth) for _ in range(trials))
    assert abs(hits / trials - level) <= 0.02, (n, level, dist, hits / trials)


def test_median_ci_needs_enough_samples_for_its_level() -> None:
    assert stats.median_ci_min_n(0.95) == 6
    assert stats.median_ci_min_n(0.90) == 5
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert stats.median_ci(x, 0.95).low is None  # [min, max] covers only 93.75%
    assert stats.median_ci(x, 0.90).low is not None
    assert stats.median_ci([1.0]).high is None


def test_median_ci_is_the_binomial_order_statistics_at_their_own_coverage() -> None:
    """At a level equal to an order-statistic pair's exact coverage no interpolation
    happens: n = 10, 1 - 2 P(B <= 1) = 0.978515625 -> [X_(2), X_(9)]."""
    x = np.arange(1.0, 11.0)
    ci = stats.median_ci(x[::-1], 1 - 2 * 11 / 1024)
    assert (ci.low, ci.high) == (2.0, 9.0)
    mid = stats.median_ci(x, 0.95)  # between [X_(2), X_(9)] and [X_(3), X_(8)]
    assert 2.0 < mid.low < 3.0 and 8.0 < mid.high < 9.0
    assert mid.low + mid.high == pytest.approx(11.0)


def test_bootstrap_is_fast() -> None:
    x = np.random.default_rng(0).lognormal(1, 0.4, 1000)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        stats.bootstrap_medians(x, 5000)
        best = min(best, time.perf_counter() - t)
    assert best < 1.0, f"5000 resamples of 1000 took {best:.2f} s"


def test_tost_equivalent_for_same_distribution() -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(20.0, 0.5, 400)
    b = rng.normal(20.0, 0.5, 400)
    r = stats.tost(a, b)
    assert r.margin == pytest.approx(max(0.1, 0.01 * np.median(a)))
    assert r.verdict == stats.EQUIVALENT
    assert -r.margin <= r.ci.low and r.ci.high <= r.margin
    assert r.ci.level == pytest.approx(0.90)
    assert r.ci.method == "Hodges-Lehmann, Mann-Whitney"


def test_tost_not_equivalent_and_slower_for_shift_of_three_margins() -> None:
    rng = np.random.default_rng(12)
    a = rng.normal(20.0, 0.5, 400)
    margin = max(0.1, 0.01 * np.median(a))
    b = rng.normal(20.0, 0.5, 400) + 3 * margin
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
    assert stats.tost([1.0], [2.0]).verdict == stats.INSUFFICIENT


def test_tost_paired_cancels_block_drift() -> None:
    """Drift shared by both paths of a block (a busy phase of the machine) swamps the
    two-sample test but cancels in the paired one."""
    rng = np.random.default_rng(14)
    drift = rng.normal(0.0, 5.0, 40)
    a = 20.0 + drift + rng.normal(0.0, 0.05, 40)
    b = 20.0 + drift + rng.normal(0.0, 0.05, 40)
    assert stats.tost(a, b, paired=True).verdict == stats.EQUIVALENT
    assert stats.tost(a, b).verdict == stats.NOT_EQUIVALENT
    with pytest.raises(ValueError):
        stats.tost(a, b[:-1], paired=True)


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


def test_mann_whitney_null_matches_enumeration() -> None:
    m, n = 3, 4
    counts = np.zeros(m * n + 1)
    for chosen in itertools.combinations(range(m + n), m):
        u = sum(1 for i in chosen for j in range(m + n) if j not in chosen and j > i)
        counts[u] += 1
    assert np.allclose(stats.mann_whitney_null_cdf(m, n), np.cumsum(counts) / counts.sum())
    assert stats.mann_whitney_null_cdf(4, 4)[0] == pytest.approx(1 / 70)


@pytest.mark.parametrize("n", [10, 30, 60])
def test_two_sample_shift_coverage(n: int) -> None:
    """The Mann-Whitney CI of the shift covers within 2 points of nominal (exact null up to
    2500 pairs, normal approximation at n = 60)."""
    rng = np.random.default_rng(n)
    trials = 1500
    hits = sum(stats.two_sample_shift(rng.lognormal(0, 1, n), rng.lognormal(0, 1, n) + 0.3,
                                      0.90).ci.contains(0.3) for _ in range(trials))
    assert abs(hits / trials - 0.90) <= 0.02, hits / trials


def test_ratio_shift_on_log_scale() -> None:
    rng = np.random.default_rng(21)
    a = rng.normal(900.0, 10.0, 200)
    b = rng.normal(600.0, 10.0, 200)
    shift = stats.two_sample_shift(np.log(a), np.log(b), 0.95)
    assert np.exp(shift.ci.low) < 600.0 / 900.0 < np.exp(shift.ci.high)
    assert np.exp(shift.ci.high) - np.exp(shift.ci.low) < 0.05
    paired = stats.paired_shift(np.log(b) - np.log(a), 0.95)
    assert paired.paired and paired.n == 200
    assert paired.ci.contains(np.log(600.0 / 900.0))
    assert stats.paired_shift([], 0.95).estimate is None


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


# ----------------------------------------------------------------------------- sequential


def _simulate(shift: float, plan: sequential.LookPlan, trials: int, seed: int,
              noise: str = "t3") -> list[sequential.Decision]:
    """Sequential tests of paired blocks whose differences are `shift` plus noise."""
    rng = np.random.default_rng(seed)
    region = sequential.Region(-0.5, 0.5, 0.5, False)
    out = []
    for _ in range(trials):
        noise_d = rng.standard_t(3, plan.max_blocks) if noise == "t3" else \
            rng.normal(0.0, 1.0, plan.max_blocks)
        diffs = list(enumerate(shift + 0.6 * noise_d))
        out.append(sequential.run(diffs, lambda _b: region, plan))
    return out


@pytest.mark.parametrize("noise", ["t3", "normal"])
@pytest.mark.parametrize("shift", [0.5, -0.5])
def test_sequential_false_equivalence_at_the_margin_is_at_most_alpha(shift: float,
                                                                     noise: str) -> None:
    """True shift exactly on the margin: with six looks (every 10 blocks up to 60) the
    Bonferroni-corrected procedure claims equivalence in <= 5% of runs."""
    plan = sequential.LookPlan(60, 10, 0.05)
    assert plan.looks == (10, 20, 30, 40, 50, 60)
    decisions = _simulate(shift, plan, 1500, seed=7 if shift > 0 else 8, noise=noise)
    rate = sum(d.verdict == sequential.EQUIVALENT for d in decisions) / len(decisions)
    assert rate <= 0.05, rate


def test_uncorrected_peeking_would_inflate_false_equivalence() -> None:
    """The correction is what keeps the rate down: the same six looks each at the full
    alpha (a fixed-size test repeated) claim equivalence more often than the corrected
    procedure, and more often than alpha allows."""
    seed, trials = 9, 1500
    corrected = _simulate(0.5, sequential.LookPlan(60, 10, 0.05), trials, seed, "normal")
    naive = 0
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        d = 0.5 + 0.6 * rng.normal(0.0, 1.0, 60)
        naive += any(
            ci.low >= -0.5 and ci.high <= 0.5
            for ci in (stats.hodges_lehmann(d[:k], 0.90)[1] for k in (10, 20, 30, 40, 50, 60)))
    corrected_rate = sum(x.verdict == sequential.EQUIVALENT for x in corrected) / trials
    assert naive / trials > 0.06
    assert naive / trials > 2 * corrected_rate


def test_sequential_stops_early_when_clear_and_decides_equivalence() -> None:
    """No shift and modest noise: mostly equivalent, most of them before the budget."""
    decisions = _simulate(0.0, sequential.LookPlan(60, 10, 0.05), 300, seed=10, noise="normal")
    equivalent = [d for d in decisions if d.verdict == sequential.EQUIVALENT]
    assert len(equivalent) / len(decisions) >= 0.9
    assert sum(d.stopped_early for d in equivalent) / len(equivalent) >= 0.8
    far = _simulate(5.0, sequential.LookPlan(60, 10, 0.05), 100, seed=11)
    assert all(d.verdict == sequential.ABOVE and d.look <= 2 for d in far)
    assert sum(d.look == 1 and d.blocks == 10 for d in far) >= 90


def test_sequential_undecided_names_the_samples_needed() -> None:
    """Noise too large for the budget: undecided at the last look, with an estimate of the
    samples a decision needs that exceeds what was spent."""
    rng = np.random.default_rng(12)
    region = sequential.Region(-0.1, 0.1, 0.1, False)
    plan = sequential.LookPlan(20, 10, 0.05)
    d = sequential.run(list(enumerate(0.05 + rng.normal(0, 1.0, 20))), lambda _b: region, plan)
    assert d.verdict == sequential.UNDECIDED and d.look == 2 and d.n == 20
    assert d.samples_needed is not None and d.samples_needed > 20
    # a run that cannot form an interval at all says so, and what it would take
    short = sequential.run([(0, 0.1), (1, 0.2)], lambda _b: region, sequential.LookPlan(2, None,
                                                                                      0.05))
    assert short.verdict == sequential.INSUFFICIENT
    assert short.samples_needed == sequential.min_n(0.90) == 5


def test_sequential_replay_is_the_runner_decision() -> None:
    """Evaluating after each look with the blocks seen so far (what the runner does) gives
    the decision the offline replay of the finished data gives."""
    rng = np.random.default_rng(13)
    region = sequential.Region(-0.5, 0.5, 0.5, False)
    plan = sequential.LookPlan(60, 10, 0.05)
    diffs = list(enumerate(0.1 + 0.4 * rng.normal(0, 1.0, 60)))
    offline = sequential.run(diffs, lambda _b: region, plan)
    assert offline.decided
    online = None
    for blocks in plan.looks:
        online = sequential.run(diffs[:blocks], lambda _b: region, plan, available_blocks=blocks)
        if online.decided:
            break
    assert online == offline
    assert sequential.run(diffs[:5], lambda _b: region, plan, available_blocks=5).verdict == \
        sequential.PENDING


def test_slower_means_beyond_the_margin_not_merely_above_zero() -> None:
    """At the budget, an interval above 0 that still reaches past the margin is undecided
    (the path may be slower by less than the margin); only one wholly beyond it is slower."""
    region = sequential.Region(-0.5, 0.5, 0.5, False)
    straddles = stats.CI(0.1, 0.9, 0.9)
    assert sequential.classify(straddles, region, final=True) == sequential.UNDECIDED
    assert sequential.classify(straddles, region, final=False) == sequential.PENDING
    assert sequential.classify(stats.CI(0.6, 0.9, 0.9), region, final=False) == \
        sequential.ABOVE
    assert sequential.classify(stats.CI(-0.9, -0.6, 0.9), region, final=True) == \
        sequential.BELOW
    assert sequential.classify(stats.CI(-0.4, 0.45, 0.9), region, final=False) == \
        sequential.EQUIVALENT
    # half-width 0.4 at n = 40, estimate 0.2 from the nearer bound: (0.4 / 0.2)^2 x 40
    assert sequential.samples_needed(stats.CI(-0.1, 0.7, 0.9), 0.3, region, 40, 0.9) == 160
