"""Metrics on hand-made traces with known answers (see benchmarks/linkability/metrics.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.linkability.metrics import (
    anonymity_sets,
    chance_precision,
    destination_exposure,
    entropy_bits,
    pair_count,
    pairwise_scores,
    roc_auc,
    trait_inference,
)


def brute_force(truth: list[int], pred: list[int]) -> tuple[int, int, int]:
    tp = pp = tt = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        same_p = pred[i] == pred[j]
        same_t = truth[i] == truth[j]
        pp += same_p
        tt += same_t
        tp += same_p and same_t
    return tp, pp, tt


def test_pairwise_hand_case() -> None:
    s = pairwise_scores(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 1]))
    assert (s.true_positive_pairs, s.predicted_pairs, s.true_pairs) == (2, 4, 4)
    assert s.precision == pytest.approx(0.5)
    assert s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(0.5)
    assert s.chance_precision == pytest.approx(4 / 10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(-3, 5)), min_size=0, max_size=40))
def test_pairwise_matches_pair_enumeration(pairs: list[tuple[int, int]]) -> None:
    truth = [t for t, _ in pairs]
    pred = [p for _, p in pairs]
    s = pairwise_scores(np.array(truth, dtype=np.int64), np.array(pred, dtype=np.int64))
    assert (s.true_positive_pairs, s.predicted_pairs, s.true_pairs) == brute_force(truth, pred)


def test_pairwise_large_labels_do_not_overflow() -> None:
    truth = np.array([0, 0, 1, 1], dtype=np.int64) + (1 << 40)
    pred = np.array([5, 5, 7, 8], dtype=np.int64) * (1 << 40)
    s = pairwise_scores(truth, pred)
    assert (s.true_positive_pairs, s.predicted_pairs, s.true_pairs) == (1, 1, 2)


def test_every_alias_one_subscriber() -> None:
    rng = np.random.default_rng(3)
    household = rng.integers(0, 50, 2000)
    alias = household * 7 + 3  # a private alias per subscriber
    ts = rng.uniform(0, 600, 2000)
    s = pairwise_scores(household, alias)
    assert s.precision == 1.0
    assert s.recall == 1.0
    a = anonymity_sets(ts, alias, household, window=60)
    assert a.size["min"] == a.size["median"] == a.size["max"] == 1.0
    assert a.effective["max"] == pytest.approx(1.0)
    assert a.degree["max"] == pytest.approx(0.0)


def test_random_shuffle_gives_chance_precision() -> None:
    """Shuffled cluster labels: E[TP]/P = T / C(N,2) = sum_s n_s(n_s-1) / (N(N-1))."""
    rng = np.random.default_rng(7)
    sizes = np.array([400, 300, 150, 100, 50] + [10] * 20)  # uneven shares
    truth = np.repeat(np.arange(sizes.size), sizes)
    n = truth.size
    analytic = float((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    assert chance_precision(truth) == pytest.approx(analytic)
    clusters = np.arange(n) % 60  # 60 aliases of near-equal size
    prec = [pairwise_scores(truth, rng.permutation(clusters)).precision for _ in range(30)]
    assert np.mean(prec) == pytest.approx(analytic, rel=0.02)
    # And it is far from the informed clustering.
    assert pairwise_scores(truth, truth).precision == 1.0
    assert analytic < 0.3


def test_entropy_uniform_is_log2_n() -> None:
    for n in (1, 2, 7, 64, 1000):
        assert entropy_bits(np.ones(n)) == pytest.approx(math.log2(n))
    assert entropy_bits(np.array([5, 0, 0])) == 0.0
    assert entropy_bits(np.array([1, 1, 2])) == pytest.approx(1.5)


def test_degree_of_anonymity_uniform_is_one() -> None:
    n = 32
    household = np.arange(n)
    ts = np.full(n, 5.0)
    alias = np.zeros(n, dtype=np.int64)  # everyone behind one alias, one flow each
    a = anonymity_sets(ts, alias, household, window=60)
    assert a.size["median"] == n
    assert a.effective["median"] == pytest.approx(n)
    assert a.degree["median"] == pytest.approx(1.0)
    # Skewed use of the alias: effective set below the plain count, degree below 1.
    household2 = np.concatenate((household, np.zeros(100, dtype=np.int64)))
    a2 = anonymity_sets(np.full(household2.size, 5.0), np.zeros(household2.size), household2, 60)
    assert a2.size["median"] == n
    assert a2.effective["median"] < n / 2
    assert a2.degree["median"] < 0.7


def test_anonymity_windows_split() -> None:
    # Two households on one alias, but in different windows: each cell has one household.
    a = anonymity_sets(np.array([1.0, 70.0]), np.array([9, 9]), np.array([0, 1]), window=60)
    assert a.cells == 2
    assert a.size["max"] == 1.0
    a = anonymity_sets(np.array([1.0, 50.0]), np.array([9, 9]), np.array([0, 1]), window=60)
    assert a.cells == 1
    assert a.size["max"] == 2.0


def test_auc_random_and_perfect() -> None:
    rng = np.random.default_rng(11)
    labels = rng.random(20000) < 0.1
    assert roc_auc(rng.random(20000), labels) == pytest.approx(0.5, abs=0.02)
    assert roc_auc(labels.astype(float), labels) == 1.0
    assert roc_auc(-labels.astype(float), labels) == 0.0
    assert roc_auc(np.zeros(labels.size), labels) == 0.5  # all tied
    assert math.isnan(roc_auc(np.zeros(3), np.zeros(3, bool)))


def test_destination_exposure_hand_case() -> None:
    household = np.array([0, 0, 0, 1, 1])
    site = np.array([10, 11, 12, 10, 13])
    # Household 0: sites 10, 11 in cluster 5 (shared with household 1's site 10); 12 alone.
    clusters = np.array([5, 5, 6, 5, 7])
    e = destination_exposure(household, site, clusters)
    # share: h0 = 2/3, h1 = 1/2; purity of cluster 5: h0 2/3, h1 1/3; cluster 6: h0 1.
    # attributable: h0 = max(2/3*2/3, 1/3*1) = 4/9; h1 = max(1/2*1/3, 1/2*1) = 1/2
    assert e.share_mean == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert e.attributable_mean == pytest.approx((4 / 9 + 1 / 2) / 2)
    everything = destination_exposure(household, site, np.zeros(5, dtype=np.int64))
    assert everything.share_mean == 1.0
    assert everything.attributable_mean < 1.0


def test_trait_inference_per_household_vs_per_flow() -> None:
    rng = np.random.default_rng(5)
    n_hh, per = 200, 30
    trait = np.zeros(n_hh, dtype=bool)
    trait[:20] = True
    household = np.repeat(np.arange(n_hh), per)
    sensitive = trait[household] & (rng.random(household.size) < 0.3)
    # Adversary joins by household (stable address): perfect inference.
    t = trait_inference(household, sensitive, household, trait)
    assert t.auc == pytest.approx(1.0)
    assert t.accuracy == pytest.approx(1.0)
    assert t.chance_accuracy == pytest.approx(0.9)
    # Adversary joins nothing (per-flow aliases): every anchor scores 0 -> chance.
    t = trait_inference(household, sensitive, np.arange(household.size), trait)
    assert t.auc == pytest.approx(0.5)
    assert t.tpr == 0.0
    # Adversary joins everything: one cluster, same score for all -> chance.
    t = trait_inference(household, sensitive, np.zeros(household.size, dtype=np.int64), trait)
    assert t.auc == pytest.approx(0.5)
    assert t.fpr == 1.0
    t = trait_inference(
        household, sensitive, household, trait, cluster_score="any", aggregate="max"
    )
    assert t.auc == pytest.approx(1.0)


def test_pair_count() -> None:
    assert pair_count(np.array([0, 1, 2, 3, 10])) == 0 + 0 + 1 + 3 + 45


def test_average_ranks_match_scipy() -> None:
    from scipy.stats import rankdata

    from benchmarks.linkability.metrics import average_ranks

    rng = np.random.default_rng(1)
    x = rng.integers(0, 20, 500).astype(float)
    assert np.allclose(average_ranks(x), rankdata(x))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 300), st.integers(0, 3), st.integers(0, 5), st.integers(0, 4)),
        min_size=1,
        max_size=60,
    )
)
def test_anonymity_and_exposure_match_brute_force(rows: list[tuple]) -> None:
    from collections import defaultdict

    from benchmarks.linkability.metrics import anonymity_cells

    ts = np.array([r[0] for r in rows])
    alias = np.array([r[1] for r in rows])
    hh = np.array([r[2] for r in rows])
    site = np.array([r[3] for r in rows])
    c = anonymity_cells(ts, alias, hh, 60.0)
    w0 = np.floor(ts.min() / 60.0)
    cells: dict = defaultdict(list)
    active: dict = defaultdict(set)
    for t, a, h in zip(ts, alias, hh, strict=True):
        w = np.floor(t / 60.0) - w0
        cells[(a, w)].append(h)
        active[w].add(h)
    keys = sorted(cells)  # cells come out in (alias, window) order
    assert c["size"].tolist() == [len(set(cells[k])) for k in keys]
    assert c["active"].tolist() == [len(active[k[1]]) for k in keys]
    ent = [entropy_bits(np.unique(cells[k], return_counts=True)[1]) for k in keys]
    assert np.allclose(c["entropy"], ent)
    # Exposure: best share of distinct sites in one cluster (alias as cluster), brute force.
    e = destination_exposure(hh, site, alias)
    shares = []
    for h in np.unique(hh):
        sites_h = set(site[hh == h])
        best = max(len(set(site[(hh == h) & (alias == a)])) for a in np.unique(alias[hh == h]))
        shares.append(best / len(sites_h))
    assert e.share_mean == pytest.approx(np.mean(shares))


def test_trait_first_anchor_is_unbiased_under_random_aliases() -> None:
    """Trait households have fewer anchor flows; random clusters must still give AUC ~0.5."""
    rng = np.random.default_rng(21)
    n_hh = 4000
    trait = rng.random(n_hh) < 0.2
    n_flows = rng.poisson(np.where(trait, 3, 6)) + 1
    household = np.repeat(np.arange(n_hh), n_flows)
    sensitive = trait[household] & (rng.random(household.size) < 0.4)
    aliases = rng.integers(0, 300, household.size)
    t = trait_inference(household, sensitive, aliases, trait, aggregate="first")
    assert t.auc == pytest.approx(0.5, abs=0.03)
    assert t.households < n_hh  # the ones seen only on sensitive sites are left out
