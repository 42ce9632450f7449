"""Linkability metrics: what each number means, and how it is computed without pair loops.

All functions take integer label arrays (one entry per flow) and work by sorting and counting,
so they run on tens of millions of flows. Nothing here enumerates pairs of flows.

Pairwise linking scores (``pairwise_scores``)
    The adversary's clustering claims "these two flows come from one subscriber" for every
    pair of flows in the same cluster. The truth says so for every pair of flows of the same
    household (subscriber = access line = household). With n_ij the number of flows of
    household i in cluster j, a_j the size of cluster j and b_i the flows of household i:

    * true positives  TP = sum_ij C(n_ij, 2)
    * predicted pairs P  = sum_j C(a_j, 2)      -> precision = TP / P
    * true pairs      T  = sum_i C(b_i, 2)      -> recall    = TP / T
    * F1 = 2 TP / (P + T)

    Precision is undefined (NaN) when the clustering makes no pair (all singletons); F1 is then
    0 if there are true pairs. Recall is NaN when no household has two flows.

Chance precision (``chance_precision``)
    If the clustering is independent of who made the flows (the ideal of per-flow random
    aliasing), a pair drawn from inside a cluster is a uniformly random pair of distinct flows,
    so its probability of being a same-household pair is T / C(N, 2) with N flows. For a
    clustering obtained by uniformly shuffling cluster labels over flows this is the exact
    ratio E[TP] / P. Precision above this bound is information the adversary gained; the
    report shows it as ``lift = precision / chance``. (Roughly sum_i s_i^2 for flow shares s_i.)

Anonymity set per alias (``anonymity_sets``)
    Time is cut into windows of ``window`` seconds. For each (alias, window) cell with at least
    one flow, the anonymity set size is the number of distinct households whose flows used that
    alias in that window: the people the front door cannot tell apart when it sees the alias.
    Reported over cells: min, p10, median, mean; and flow-weighted (each flow counts its cell,
    i.e. what a typical *flow* enjoys; an alias used once by one subscriber is size 1).
    Effective anonymity set (Serjantov & Danezis 2002): 2^H with H the Shannon entropy (bits)
    of the distribution of the cell's flows over households; it equals the set size only when
    every household contributes equally. Degree of anonymity (Diaz et al. 2002):
    d = H / log2 N with N the number of households active anywhere in that window (all
    potential senders); d = 1 means the alias reveals nothing among the active population,
    d = 0 that it identifies one household. Cells in windows with N = 1 have no defined d.

Destination exposure (``destination_exposure``)
    Per household with at least one flow: D = its distinct inner destinations (sites). The
    *share* is max over clusters of (distinct sites of this household inside the cluster) / D:
    how much of its browsing profile the adversary holds as one joined profile. A clustering
    that merges everybody trivially reaches 1, so ``attributable`` also multiplies by the
    household's share of that cluster's flows (purity) and takes the max of the product: a
    profile that is mostly other people's traffic is worth less to the adversary.

Trait inference (``trait_inference``)
    The profiling scenario: some households carry a trait and visit sensitive sites. The
    adversary scores each cluster: ``fraction`` = share of the cluster's flows on sensitive
    sites, or ``any`` = 1 if the cluster holds any sensitive flow. A household is scored through
    its *anchor* flows, its non-sensitive flows: the adversary is assumed able to name a
    household from any ordinary visit (a login, a payment, an account page) and asks what the
    profile joined to that visit says. Sensitive flows themselves are not anchors, otherwise a
    singleton cluster holding one sensitive visit would "identify" its maker, which the
    adversary cannot do without a join. Household score (``aggregate``): ``first`` (default)
    = the cluster score of the household's first anchor flow (the adversary names the
    household by one ordinary visit and reads the profile joined to it); ``mean`` / ``max``
    over all its anchor flows. ``first`` is the default because ``mean`` and ``max`` depend on
    how many anchors a household has, and trait households have fewer (some of their visits
    are the sensitive ones): under aliasing that joins nothing that count alone pushes the AUC
    away from 0.5 (measured: 0.41 at 5 flows/h under cfr-flow with ``mean``). No anchor
    flow -> not evaluated (cannot be named; scoring it 0 would bias the AUC, as trait
    households are the likelier to have no anchor). Reported: ROC AUC of score vs
    trait (chance 0.5), accuracy of the rule score > 0 (chance = majority-class rate), the
    rule's true and false positive rates, and prevalence.

Over 400 lines on purpose: the linkability metrics share the vectorised grouping helpers
(dense, group_counts, combine) that the model and the emulation both use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_INT64_LIMIT = np.iinfo(np.int64).max


def pair_count(sizes: np.ndarray) -> int:
    """sum over groups of C(n, 2) for group sizes ``sizes`` (exact, Python int)."""
    s = np.asarray(sizes, dtype=np.int64)
    return int(np.sum(s * (s - 1) // 2, dtype=np.int64))


def dense(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber arbitrary int labels to 0..k-1 (order-preserving); returns (codes, k)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return labels.copy(), 0
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi < 4 * labels.size + 1024:
        present = np.zeros(hi + 1, dtype=bool)
        present[labels] = True
        remap = np.cumsum(present) - 1
        return remap[labels], int(present.sum())
    uniq, inv = np.unique(labels, return_inverse=True)
    return inv.astype(np.int64).reshape(-1), int(uniq.size)


def group_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct sorted keys, count of each) by one sort plus run lengths (faster than unique)."""
    s = np.sort(np.asarray(keys, dtype=np.int64))
    if s.size == 0:
        return s, np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], np.flatnonzero(s[1:] != s[:-1]) + 1))
    counts = np.diff(np.concatenate((starts, [s.size])))
    return s[starts], counts.astype(np.int64)


def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int64 key per (a, b) pair, injective; densifies first when a*b could overflow."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.size == 0:
        return a.copy()
    if a.min() < 0 or b.min() < 0 or (int(a.max()) + 1) * (int(b.max()) + 1) >= _INT64_LIMIT:
        a, _ = dense(a)
        b, _ = dense(b)
    nb = int(b.max()) + 1
    return a * nb + b


@dataclass
class PairScores:
    """Pairwise scores of one clustering against the truth (see module docstring)."""

    precision: float
    recall: float
    f1: float
    true_positive_pairs: int
    predicted_pairs: int
    true_pairs: int
    chance_precision: float
    flows: int
    clusters: int

    @property
    def lift(self) -> float:
        """Precision over the chance bound (1.0 = no information)."""
        if not np.isfinite(self.precision) or self.chance_precision <= 0:
            return float("nan")
        return self.precision / self.chance_precision

    def as_dict(self) -> dict:
        d = asdict(self)
        d["lift"] = self.lift
        return d


def chance_precision(truth: np.ndarray) -> float:
    """Expected precision of a clustering independent of the truth: T / C(N, 2)."""
    truth = np.asarray(truth, dtype=np.int64)
    n = truth.size
    if n < 2:
        return float("nan")
    t = pair_count(np.bincount(dense(truth)[0]))
    return t / (n * (n - 1) / 2)


def pairwise_scores(truth: np.ndarray, pred: np.ndarray) -> PairScores:
    """Pairwise precision/recall/F1 of ``pred`` clusters against ``truth`` classes.

    Both are int label arrays of equal length (negative labels are fine). Cost: one sort of the
    combined key plus two bincounts.
    """
    truth = np.asarray(truth, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if truth.shape != pred.shape:
        raise ValueError("truth and pred differ in length")
    n = truth.size
    t_codes, _ = dense(truth)
    true_pairs = pair_count(np.bincount(t_codes)) if n else 0
    # Cluster sizes: a bincount when labels are small non-negative ints, else one sort. The
    # contingency key needs no renumbering of pred unless the product would overflow.
    if n and pred.min() >= 0 and int(pred.max()) < 4 * n + 1024:
        sizes = np.bincount(pred)
        sizes = sizes[sizes > 0]
    else:
        _, sizes = group_counts(pred)
    k = int(sizes.size)
    pred_pairs = pair_count(sizes)
    _, cell = group_counts(combine(t_codes, pred))
    tp = pair_count(cell)
    precision = tp / pred_pairs if pred_pairs else float("nan")
    recall = tp / true_pairs if true_pairs else float("nan")
    denom = pred_pairs + true_pairs
    f1 = 2 * tp / denom if denom else float("nan")
    chance = true_pairs / (n * (n - 1) / 2) if n >= 2 else float("nan")
    return PairScores(
        precision=precision,
        recall=recall,
        f1=f1,
        true_positive_pairs=tp,
        predicted_pairs=pred_pairs,
        true_pairs=true_pairs,
        chance_precision=chance,
        flows=n,
        clusters=k,
    )


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of the distribution proportional to ``counts``."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def _quantiles(x: np.ndarray) -> dict:
    if x.size == 0:
        nan = float("nan")
        return {"min": nan, "p10": nan, "median": nan, "mean": nan, "max": nan}
    q = np.quantile(x, [0.0, 0.1, 0.5, 1.0])
    return {
        "min": float(q[0]),
        "p10": float(q[1]),
        "median": float(q[2]),
        "mean": float(np.mean(x)),
        "max": float(q[3]),
    }


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of ``values`` with each value repeated ``weights`` times (no repetition done)."""
    if values.size == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    v = values[order]
    cw = np.cumsum(weights[order], dtype=np.float64)
    idx = int(np.searchsorted(cw, 0.5 * cw[-1], side="left"))
    return float(v[min(idx, v.size - 1)])


@dataclass
class AnonymityStats:
    """Anonymity of aliases per time window (see module docstring)."""

    window_s: float
    cells: int
    size: dict
    size_flow_weighted_median: float
    effective: dict
    degree: dict
    active_per_window_median: float

    def as_dict(self) -> dict:
        return asdict(self)


def anonymity_cells(
    ts: np.ndarray, alias: np.ndarray, household: np.ndarray, window: float
) -> dict[str, np.ndarray]:
    """Per (alias, window) cell: distinct households, flows, entropy (bits), active N.

    Returned arrays are aligned by cell. Used by ``anonymity_sets`` and by the model's
    pool-size search (which only needs the median size).
    """
    ts = np.asarray(ts, dtype=np.float64)
    household = np.asarray(household, dtype=np.int64)
    alias = np.asarray(alias, dtype=np.int64)
    if ts.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return {"size": z, "flows": z.astype(float), "entropy": z.astype(float), "active": z}
    win = np.floor(ts / window).astype(np.int64)
    win -= win.min()
    n_win = int(win.max()) + 1
    hh, n_hh = dense(household)
    if alias.min() < 0 or (int(alias.max()) + 1) * n_win * n_hh >= _INT64_LIMIT:
        alias, _ = dense(alias)
    # One sort of (alias, window, household) keys: runs of equal (alias, window) are cells.
    keys, counts = group_counts((alias * n_win + win) * n_hh + hh)
    cell_of = keys // n_hh
    starts = np.concatenate(([0], np.flatnonzero(cell_of[1:] != cell_of[:-1]) + 1))
    size = np.diff(np.concatenate((starts, [keys.size])))
    flows = np.add.reduceat(counts, starts).astype(np.float64)
    run = np.repeat(np.arange(starts.size), size)
    p = counts / flows[run]
    ent = np.maximum(np.add.reduceat(-p * np.log2(p), starts), 0.0)  # clip -0.0 noise
    # Active households per window (all potential senders in that window).
    act_keys, _ = group_counts(win * n_hh + hh)
    active = np.bincount(act_keys // n_hh, minlength=n_win)
    return {
        "size": size.astype(np.int64),
        "flows": flows,
        "entropy": ent,
        "active": active[cell_of[starts] % n_win],
    }


def anonymity_sets(
    ts: np.ndarray, alias: np.ndarray, household: np.ndarray, window: float = 60.0
) -> AnonymityStats:
    """Anonymity set statistics over all (alias, window) cells (see module docstring)."""
    c = anonymity_cells(ts, alias, household, window)
    size = c["size"].astype(np.float64)
    n = c["active"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        degree = np.where(n > 1, c["entropy"] / np.log2(np.maximum(n, 2)), np.nan)
    degree = degree[np.isfinite(degree)]
    return AnonymityStats(
        window_s=float(window),
        cells=int(size.size),
        size=_quantiles(size),
        size_flow_weighted_median=weighted_median(size, c["flows"]),
        effective=_quantiles(np.exp2(c["entropy"])),
        degree=_quantiles(degree),
        active_per_window_median=float(np.median(n)) if n.size else float("nan"),
    )


def median_anonymity(
    ts: np.ndarray, alias: np.ndarray, household: np.ndarray, window: float
) -> float:
    """Median over (alias, window) cells of the distinct-household count."""
    size = anonymity_cells(ts, alias, household, window)["size"]
    return float(np.median(size)) if size.size else float("nan")


def _group_max(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """max of ``values`` per group id (groups need not be sorted); empty groups give 0."""
    out = np.zeros(n_groups, dtype=np.float64)
    if groups.size:
        np.maximum.at(out, groups, values)
    return out


@dataclass
class ExposureStats:
    """Destination exposure over households (see module docstring)."""

    households: int
    share_mean: float
    share_median: float
    attributable_mean: float
    attributable_median: float

    def as_dict(self) -> dict:
        return asdict(self)


def destination_exposure(
    household: np.ndarray, site: np.ndarray, clusters: np.ndarray
) -> ExposureStats:
    """Share of each household's distinct destinations held in one adversary cluster."""
    hh, n_hh = dense(household)
    cl, n_cl = dense(clusters)
    st, n_st = dense(site)
    if hh.size == 0:
        nan = float("nan")
        return ExposureStats(0, nan, nan, nan, nan)
    # One sort of (household, cluster, site) gives everything: distinct sites and flows per
    # (household, cluster), and distinct (household, site) pairs from the distinct triples.
    n_st_eff = int(st.max()) + 1
    if n_hh * n_cl * n_st_eff >= _INT64_LIMIT:
        hc, n_hc = dense(hh * n_cl + cl)  # rare: renumber (household, cluster) pairs
        hc_h = np.zeros(n_hc, dtype=np.int64)
        hc_c = np.zeros(n_hc, dtype=np.int64)
        hc_h[hc], hc_c[hc] = hh, cl
    else:
        hc = hh * n_cl + cl
        hc_h = hc_c = None
    triple_keys, triple_flows = group_counts(hc * n_st_eff + st)
    hc_of_triple = triple_keys // n_st_eff
    site_of_triple = triple_keys % n_st_eff
    starts = np.concatenate(([0], np.flatnonzero(hc_of_triple[1:] != hc_of_triple[:-1]) + 1))
    hc_site_counts = np.diff(np.concatenate((starts, [hc_of_triple.size])))
    hc_flows = np.add.reduceat(triple_flows, starts)
    if hc_h is None:
        h_of, c_of = hc_of_triple[starts] // n_cl, hc_of_triple[starts] % n_cl
        h_of_triple = hc_of_triple // n_cl
    else:
        h_of, c_of = hc_h[hc_of_triple[starts]], hc_c[hc_of_triple[starts]]
        h_of_triple = hc_h[hc_of_triple]
    hs_keys, _ = group_counts(h_of_triple * n_st_eff + site_of_triple)
    d = np.bincount(hs_keys // n_st_eff, minlength=n_hh).astype(np.float64)
    cluster_size = np.bincount(cl, minlength=n_cl)
    share = hc_site_counts / d[h_of]
    purity = hc_flows / cluster_size[c_of]
    best_share = _group_max(h_of, share, n_hh)
    best_attr = _group_max(h_of, share * purity, n_hh)
    return ExposureStats(
        households=n_hh,
        share_mean=float(best_share.mean()),
        share_median=float(np.median(best_share)),
        attributable_mean=float(best_attr.mean()),
        attributable_median=float(np.median(best_attr)),
    )


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.concatenate(([0], np.flatnonzero(xs[1:] != xs[:-1]) + 1)) if xs.size else xs
    ends = np.concatenate((starts[1:], [xs.size])) if xs.size else xs
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(xs.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    NaN when only one class is present. 0.5 = chance, 1.0 = perfect ranking.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass
class TraitStats:
    """Attribute inference against the household trait (see module docstring)."""

    households: int
    prevalence: float
    auc: float
    accuracy: float
    chance_accuracy: float
    tpr: float
    fpr: float
    cluster_score: str
    aggregate: str

    def as_dict(self) -> dict:
        return asdict(self)


def household_trait_scores(
    household: np.ndarray,
    sensitive: np.ndarray,
    clusters: np.ndarray,
    n_households: int,
    cluster_score: str = "fraction",
    aggregate: str = "first",
) -> np.ndarray:
    """Adversary score per household code 0..n_households-1 (see module docstring)."""
    household = np.asarray(household, dtype=np.int64)
    sensitive = np.asarray(sensitive, dtype=bool)
    cl, n_cl = dense(clusters)
    size = np.bincount(cl, minlength=n_cl).astype(np.float64)
    pos = np.bincount(cl, weights=sensitive.astype(np.float64), minlength=n_cl)
    if cluster_score == "fraction":
        cscore = np.divide(pos, size, out=np.zeros_like(pos), where=size > 0)
    elif cluster_score == "any":
        cscore = (pos > 0).astype(np.float64)
    else:
        raise ValueError(f"cluster_score must be 'fraction' or 'any', not {cluster_score!r}")
    anchor = ~sensitive
    h = household[anchor]
    s = cscore[cl[anchor]]
    if aggregate == "first":
        first = np.full(n_households, h.size, dtype=np.int64)
        np.minimum.at(first, h, np.arange(h.size))
        has = first < h.size
        out = np.zeros(n_households, dtype=np.float64)
        out[has] = s[first[has]]
        return out
    if aggregate == "mean":
        tot = np.bincount(h, weights=s, minlength=n_households)
        cnt = np.bincount(h, minlength=n_households)
        mean = np.divide(tot, cnt, out=np.zeros(n_households), where=cnt > 0)
        # Summation order leaves ~1e-17 noise; equal cluster scores must tie in the ranking.
        return np.round(mean, 12)
    if aggregate == "max":
        return _group_max(h, s, n_households)
    raise ValueError(f"aggregate must be 'first', 'mean' or 'max', not {aggregate!r}")


def trait_inference(
    household: np.ndarray,
    sensitive: np.ndarray,
    clusters: np.ndarray,
    trait: np.ndarray,
    cluster_score: str = "fraction",
    aggregate: str = "first",
) -> TraitStats:
    """Score households through the adversary's clusters and evaluate against ``trait``.

    ``household`` holds codes indexing ``trait`` (a bool array per household). Only households
    with at least one anchor flow are evaluated: the others cannot be named by this attack.
    """
    household = np.asarray(household, dtype=np.int64)
    trait = np.asarray(trait, dtype=bool)
    n = trait.size
    scores = household_trait_scores(household, sensitive, clusters, n, cluster_score, aggregate)
    # Evaluated: households with at least one anchor (non-sensitive) flow. One seen only on
    # sensitive sites cannot be named by this attack; scoring it 0 would bias the AUC (trait
    # households are the ones more likely to have no anchor).
    seen = np.bincount(household[~np.asarray(sensitive, dtype=bool)], minlength=n) > 0
    sc, tr = scores[seen], trait[seen]
    pred = sc > 0
    prevalence = float(tr.mean()) if tr.size else float("nan")
    n_pos, n_neg = int(tr.sum()), int((~tr).sum())
    return TraitStats(
        households=int(seen.sum()),
        prevalence=prevalence,
        auc=roc_auc(sc, tr),
        accuracy=float((pred == tr).mean()) if tr.size else float("nan"),
        chance_accuracy=max(prevalence, 1 - prevalence) if tr.size else float("nan"),
        tpr=float((pred & tr).sum() / n_pos) if n_pos else float("nan"),
        fpr=float((pred & ~tr).sum() / n_neg) if n_neg else float("nan"),
        cluster_score=cluster_score,
        aggregate=aggregate,
    )


def pairwise_ci(
    truth: np.ndarray, pred: np.ndarray, resamples: int = 40, seed: int = 0
) -> dict[str, list[float]]:
    """95 % CIs of pairwise precision, recall, F1 from half-samples of households.

    Half of the households (and all their flows) are kept at random, without replacement: a
    bootstrap would duplicate households whose copies share clusters and count their pairs as
    false links. A half-sample's spread approximates the full sample's (finite-population
    factor 1/2 against half the size), so the CI is estimate +- 1.96 sd.
    """
    truth = np.asarray(truth, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    full = pairwise_scores(truth, pred)
    t, n_h = dense(truth)
    rng = np.random.default_rng(seed)
    vals: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
    for _ in range(resamples):
        m = (rng.random(n_h) < 0.5)[t]
        if m.sum() < 2:
            continue
        s = pairwise_scores(t[m], pred[m])
        for k in vals:
            vals[k].append(getattr(s, k))
    out: dict[str, list[float]] = {}
    for k, v in vals.items():
        arr = np.asarray(v, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        est = getattr(full, k)
        if arr.size < 2 or not np.isfinite(est):
            out[k] = [float("nan"), float("nan")]
            continue
        sd = float(arr.std())
        out[k] = [max(0.0, est - 1.96 * sd), min(1.0, est + 1.96 * sd)]
    return out
