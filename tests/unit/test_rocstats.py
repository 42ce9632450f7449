"""Are the suite's intervals honest? Simulated coverage of the AUC and ratio CIs.

A 95 % CI is honest when, over independent repetitions of the experiment, it holds the
true value at least ~95 % of the time. These tests repeat the experiment (fixed seeds, so
they are deterministic) and count. Tolerance: with R repetitions the observed coverage of
an honest interval has standard error sqrt(0.95 * 0.05 / R); the bounds below sit ~3
standard errors under 0.95.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from benchmarks.linkability.rocstats import (
    auc_score_interval,
    hanley_mcneil_var,
    roc_summary,
    wilson_interval,
)
from benchmarks.linkability.validation import _paired_ratio, _ratio_ci


def _covers(ci: list[float], x: float) -> bool:
    return ci[0] <= x <= ci[1]


@pytest.mark.parametrize(
    ("shift", "n_pos", "n_neg"), [(0.0, 30, 270), (0.8, 30, 270), (3.6, 30, 270), (1.5, 12, 60)]
)
def test_auc_ci_covers_the_true_auc(shift: float, n_pos: int, n_neg: int) -> None:
    """Binormal households: true AUC = Phi(shift / sqrt 2). Covers at chance, in the
    middle, near the ceiling (0.995) and with few trait households."""
    true = float(norm.cdf(shift / np.sqrt(2)))
    rng = np.random.default_rng(11)
    reps, hits = 200, 0
    for k in range(reps):
        s = np.r_[rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)]
        y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
        hits += _covers(roc_summary(s, y, resamples=200, seed=k)["auc_ci"], true)
    assert hits / reps >= 0.90, (shift, hits / reps)


def test_bootstrap_alone_collapses_at_the_ceiling_and_the_hull_does_not() -> None:
    """The failure the hull fixes, on the suite's own adversary: behind ``cgn`` the named-
    household adversary sits at AUC ~0.996 and many samples separate perfectly; the
    percentile bootstrap then says [1, 1]. Expected AUC estimated by the mean over traces."""
    from benchmarks.linkability.adversary import TraitSpec, trait_attack
    from benchmarks.linkability.simulator import SimParams, apply_policy, generate_trace

    rows = []
    for s in range(30):
        p = SimParams(
            subscribers=300,
            duration_s=3600,
            pool=8,
            epoch_s=300,
            v6_fraction=0.7,
            sessions_per_hour=30,
            seed=100 + s,
        )
        tr = generate_trace(p)
        ft = apply_policy(tr, "cgn", p)
        r = trait_attack(
            ft,
            [TraitSpec("strong", tr.trait, tr.sensitive)],
            "cgn",
            classifier=False,
            resamples=200,
        )["strong"]["named_household"]
        rows.append(r)
    mean = float(np.mean([r["auc"] for r in rows]))
    boot = np.mean([_covers(r["auc_ci_bootstrap"], mean) for r in rows])
    hull = np.mean([_covers(r["auc_ci"], mean) for r in rows])
    assert boot < 0.8, boot  # measured 0.41 over 80 traces: the bootstrap alone is not honest
    assert hull >= 0.9, hull


def test_score_interval_never_collapses() -> None:
    lo, hi = auc_score_interval(1.0, 30, 270)
    assert hi == 1.0 and 0.85 < lo < 0.99  # about 1 - z^2 / (2 n_pos)
    lo, hi = auc_score_interval(0.5, 30, 270)
    assert lo < 0.5 < hi
    wald = 1.96 * np.sqrt(hanley_mcneil_var(0.5, 30, 270))
    assert hi - lo == pytest.approx(2 * wald, rel=0.05)  # the Wald interval in the middle
    assert np.isnan(auc_score_interval(0.7, 0, 10)[0])


def test_wilson_interval_never_collapses() -> None:
    lo, hi = wilson_interval(0.0, 30)
    assert lo == 0.0 and 0.05 < hi < 0.2
    lo, hi = wilson_interval(1.0, 30)
    assert hi == pytest.approx(1.0) and 0.8 < lo < 0.95


def test_tpr_ci_covers() -> None:
    """TPR at 1 % FPR with an exactly known truth: negatives N(0,1) with 500 of them put the
    threshold near z_0.99; positives N(3, 1)."""
    rng = np.random.default_rng(5)
    true = float(norm.sf(norm.isf(0.01) - 3.0))
    reps, hits = 150, 0
    for k in range(reps):
        s = np.r_[rng.normal(3, 1, 40), rng.normal(0, 1, 500)]
        y = np.r_[np.ones(40, bool), np.zeros(500, bool)]
        hits += _covers(roc_summary(s, y, resamples=200, seed=k)["tpr_at_fpr_ci"], true)
    assert hits / reps >= 0.90, hits / reps


def _clustered(rng: np.random.Generator, n_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Per household: flows sharing one household-level rate (intra-household correlation:
    flows of one household are not independent), so a flow-level bootstrap would be too
    narrow. Returns per-household (successes, pairs)."""
    rate = rng.beta(2, 2, n_h)  # true ratio: E[n p] / E[n] = 0.5 (n independent of p)
    n = rng.integers(1, 40, n_h).astype(float)
    return rng.binomial(n.astype(int), rate).astype(float), n


def test_household_ratio_ci_covers_and_flow_bootstrap_would_not() -> None:
    rng = np.random.default_rng(3)
    reps, hh_hits, flow_hits = 200, 0, 0
    for k in range(reps):
        num, den = _clustered(rng, 60)
        est, boot = _ratio_ci(num, den, np.random.default_rng(k), 300)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        hh_hits += lo <= 0.5 <= hi
        # the wrong unit: every flow an independent draw
        flows = np.concatenate(
            [np.r_[np.ones(int(a)), np.zeros(int(b - a))] for a, b in zip(num, den, strict=True)]
        )
        fb = np.random.default_rng(k).choice(flows, (300, flows.size)).mean(axis=1)
        flo, fhi = np.quantile(fb, [0.025, 0.975])
        flow_hits += flo <= 0.5 <= fhi
    assert hh_hits / reps >= 0.90, hh_hits / reps
    assert flow_hits / reps < 0.80, flow_hits / reps  # why households are the unit


def test_paired_difference_ci_covers_zero_for_the_same_mechanism() -> None:
    """Two mechanisms that are the same in law, measured on the same households: the
    paired CI of the difference holds 0 at the nominal rate."""
    rng = np.random.default_rng(8)
    reps, hits = 200, 0
    for k in range(reps):
        n_h = 80
        rate = rng.beta(2, 2, n_h)
        n = rng.integers(2, 30, n_h)
        a = rng.binomial(n, rate).astype(float)
        b = rng.binomial(n, rate).astype(float)
        idx = np.random.default_rng(k).integers(0, n_h, (300, n_h))
        _, ea = _paired_ratio(a, n.astype(float), idx)
        _, eb = _paired_ratio(b, n.astype(float), idx)
        lo, hi = np.quantile(eb - ea, [0.025, 0.975])
        hits += lo <= 0.0 <= hi
    assert hits / reps >= 0.90, hits / reps
