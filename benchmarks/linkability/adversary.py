"""The profiling adversary: infers a household trait from what the front door observes.

Threat model (README "Threat model"): the front door sees each flow's source alias, port,
start time, inner destination (it terminates ECH) and TLS resumption identities; it knows the
policy, the pool, the public alias ranges, and that epochs exist, but it must *infer* the
epoch length; and it can **name a household at every ordinary visit** (a login, an account
page: any site outside the trait's signal sites). It cannot name the visits that carry the
trait (those are what it wants to attribute).

Cells (``adversary_cells``): flows the adversary believes share one sender in one period.
Policy-aware: the IPv6 /56 (IPv4: the address) for policies that keep the subscriber's
prefix (``route``, ``nptv6``, ``ipv6-temp``, ``cgn``'s routed IPv6), the alias address for
the CFR pools; crossed with the epoch ``floor(t / L)`` for the epoch length ``L`` inferred
per IP family by ``infer_epoch``.

Epoch inference (``infer_epoch``), per family, from a list of candidate lengths (no length is
given to it; "no rotation" is a possible answer):

* *Alias lifetimes* (needs no names): the relay derives fresh IPv6 aliases every epoch, so
  for the true ``L`` (and its multiples) every alias's flows fall into one bucket
  ``floor(t / L)``. The smallest candidate under which >= 99 % of the aliases seen twice are
  contained is the estimate.
* *Named consistency* (needs the names of ordinary visits; finds IPv4 epochs, whose pool
  addresses never change): the share of pairs of one household's named flows in one bucket
  that used the same alias. Up to the true epoch it stays at its maximum (1 under
  ``cfr-epoch``); longer buckets span a rotation and lose it. The estimate is the longest
  candidate within 10 % of the best; if "no epoch" is within 10 %, there is no rotation
  worth modelling (route, cgn: the alias never moves; cfr-flow: it moves every flow, at
  any length).

Named-household likelihood ratio (``named_household_scores``): signal flows (visits to the
trait's sites) arrive at ``lam1`` per ordinary visit for a trait household and ``lam0`` for
the others (Poisson; the adversary knows these rates and the prevalence, i.e. it has a
labelled panel: the worst case). In a cell holding ``a_hc`` named visits of household h and
``s_c`` signal flows, the expected signal is ``sum_h a_hc lam(h) + eta``; ``eta`` is the
signal of senders not named in that cell: the signal the named households do not explain at
the prior, per anchored cell (0 when the named flows say cells are never shared, as under
``route``). The household's log-likelihood ratio pools *every* cell holding one of its
ordinary visits (in a shared cell, its version centred on the expectation under "no trait",
standardised and detrended on activity: see ``score_components``); the other households'
unknown traits enter at the prior (iterating their posteriors by mean field was tried:
undamped it oscillates when cells are large; at 1 h epochs and 30 households per cell the
AUC fell from 0.74 to 0.48). This is a statistical-disclosure attack (Danezis): the named
visits say when and where the household was, the cells' signal is compared with what the
others explain. A signal flow in a cell where only h can have produced it is *certain*
evidence (ratio infinite); scores rank certain households first.

``oracle_scores`` is the same statistic with every flow attributed to its true household
(cells = households): the Bayes-optimal ceiling under this behaviour model. The adversary
reaches it exactly when its cells are pure (``route``).

``classifier_scores``: an adversary that does not know which sites carry the trait. Per
household, the site-count vectors of the cells holding its named visits, weighted by its
share of the cell's named visits, Hellinger-normalised; logistic regression
(scikit-learn) scored out-of-fold (stratified 5-fold), so no household is scored by a model
that saw its label.

Over 400 lines on purpose: the named-household adversary, its classifier variant and the
oracle ceiling share cell construction and scoring, and must stay side by side to be
compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.metrics import combine, dense, group_counts
from benchmarks.linkability.rocstats import resamples_for, roc_summary

CANDIDATE_EPOCHS_S: tuple[float, ...] = (
    1,
    2,
    5,
    10,
    15,
    20,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    14400,
    21600,
    43200,
    86400,
)
PREFIX_POLICIES = ("route", "nptv6", "ipv6-temp", "cgn")
POOL_POLICIES = ("cfr-flow", "cfr-epoch")
FAMILIES = (4, 6)
INFER_MAX_FLOWS = 2_000_000


@dataclass
class EpochEstimate:
    """Inferred epoch length per family (None: no rotation found) and the evidence."""

    by_family: dict[int, float | None]
    method: dict[int, str]
    containment: dict[int, dict[float, float]] = field(default_factory=dict)
    consistency: dict[int, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _bucket(ts: np.ndarray, length: float | None) -> np.ndarray:
    if length is None or not np.isfinite(length):
        return np.zeros(ts.size, dtype=np.int64)
    return np.floor(ts / length).astype(np.int64)


def _containment(ts: np.ndarray, alias: np.ndarray, length: float) -> float:
    """Share of aliases seen at least twice whose flows all fall in one bucket."""
    a, k = dense(alias)
    if k == 0:
        return float("nan")
    cnt = np.bincount(a, minlength=k)
    b = _bucket(ts, length)
    lo = np.full(k, np.iinfo(np.int64).max)
    hi = np.full(k, np.iinfo(np.int64).min)
    np.minimum.at(lo, a, b)
    np.maximum.at(hi, a, b)
    multi = cnt >= 2
    return float((lo[multi] == hi[multi]).mean()) if multi.any() else float("nan")


def _consistency(ts: np.ndarray, alias: np.ndarray, hh: np.ndarray, length: float | None) -> float:
    """P(two named flows of one household in one bucket used the same alias)."""
    hb = combine(hh, _bucket(ts, length))
    _, sizes = group_counts(hb)
    _, same = group_counts(combine(dense(hb)[0], alias))
    pairs = float(np.sum(sizes * (sizes - 1.0)))
    return float(np.sum(same * (same - 1.0)) / pairs) if pairs > 0 else float("nan")


def cell_key(ft: FlowTable, policy: str | None) -> np.ndarray:
    """The policy-aware sender key: alias address for CFR pools, else the /56 (IPv4: address)."""
    if policy in POOL_POLICIES or 56 not in ft.prefix:
        return np.asarray(ft.addr, dtype=np.int64)
    return np.asarray(ft.prefix[56], dtype=np.int64)


def infer_epoch(
    ft: FlowTable,
    named: np.ndarray | None = None,
    candidates: tuple[float, ...] = CANDIDATE_EPOCHS_S,
    tolerance: float = 0.10,
    key: np.ndarray | None = None,
) -> EpochEstimate:
    """Epoch length per IP family from the observations (see module docstring).

    ``key`` is the sender key whose rotation is looked for (``cell_key``; default the
    address)."""
    key = np.asarray(ft.addr if key is None else key, dtype=np.int64)
    if len(ft) > INFER_MAX_FLOWS:
        # The evidence is per alias and per household: a keyed subset of households (and
        # their flows) answers the same question at a fraction of the sorting.
        keep_h = (ft.household * 2654435761 + 12345) % (len(ft) // INFER_MAX_FLOWS + 1) == 0
        keep = keep_h | (ft.household < 0)
        ft, key = ft.subset(keep), key[keep]
        named = None if named is None else np.asarray(named)[keep]
    span = float(ft.ts.max() - ft.ts.min()) if len(ft) else 0.0
    cands = [float(c) for c in candidates if c < span]
    named = np.ones(len(ft), dtype=bool) if named is None else np.asarray(named, dtype=bool)
    est: dict[int, float | None] = {}
    method: dict[int, str] = {}
    cont_all: dict[int, dict[float, float]] = {}
    pur_all: dict[int, dict[str, float]] = {}
    for fam in FAMILIES:
        m = ft.family == fam
        est[fam], method[fam] = None, "none"
        if m.sum() < 2 or not cands:
            continue
        ts, alias = ft.ts[m], key[m]
        # A lifetime estimate needs at least three buckets in the trace to mean anything.
        cont = {c: _containment(ts, alias, c) for c in cands if c <= span / 3}
        cont_all[fam] = cont
        contained = [c for c in cont if np.isfinite(cont[c]) and cont[c] >= 0.99]
        # Lifetimes only say something if the shortest candidate does *not* contain them.
        if contained and np.isfinite(cont[cands[0]]) and cont[cands[0]] < 0.99:
            est[fam], method[fam] = contained[0], "alias lifetimes"
            continue
        mn = m & named & (ft.household >= 0)
        if mn.sum() < 2:
            continue
        tsn, an, hn = ft.ts[mn], key[mn], ft.household[mn]
        con = {c: _consistency(tsn, an, hn, c) for c in cands}
        c_inf = _consistency(tsn, an, hn, None)
        pur_all[fam] = {**{f"{c:g}": v for c, v in con.items()}, "none": c_inf}
        finite = [v for v in con.values() if np.isfinite(v)]
        if not finite:
            continue
        best = max(finite + ([c_inf] if np.isfinite(c_inf) else []))
        if np.isfinite(c_inf) and c_inf >= (1 - tolerance) * best:
            method[fam] = "named consistency: no rotation"
            continue
        ok = [c for c in cands if np.isfinite(con[c]) and con[c] >= (1 - tolerance) * best]
        if ok:
            est[fam], method[fam] = ok[-1], "named consistency"
    return EpochEstimate(est, method, cont_all, pur_all)


def adversary_cells(
    ft: FlowTable, policy: str | None, epoch: EpochEstimate | dict[int, float | None] | None
) -> np.ndarray:
    """Cell id per flow: (policy-aware key, family, epoch bucket) (see module docstring)."""
    key = cell_key(ft, policy)
    lengths = epoch.by_family if isinstance(epoch, EpochEstimate) else (epoch or {})
    bucket = np.zeros(len(ft), dtype=np.int64)
    for fam in FAMILIES:
        m = ft.family == fam
        if m.any():
            b = _bucket(ft.ts[m], lengths.get(fam))
            bucket[m] = b - b.min()
    # Address and prefix codes of the two families never coincide (flows.py), so the family
    # needs no place in the key; a dense key keeps the renumbering a bincount, not a sort.
    return dense(combine(dense(key)[0], bucket))[0]


@dataclass
class Rates:
    """Behaviour model the adversary knows: signal per ordinary visit, prevalence."""

    lam1: float
    lam0: float
    prior: float


def true_rates(ft: FlowTable, trait: np.ndarray, signal: np.ndarray, named: np.ndarray) -> Rates:
    """The rates from the ground truth (the labelled-panel adversary of the threat model)."""
    n = trait.size
    s = np.bincount(ft.household[signal], minlength=n).astype(float)
    a = np.bincount(ft.household[named], minlength=n).astype(float)
    t = np.asarray(trait, dtype=bool)
    lam1 = s[t].sum() / max(a[t].sum(), 1.0)
    lam0 = s[~t].sum() / max(a[~t].sum(), 1.0)
    return Rates(float(lam1), float(lam0), float(t.mean()) if n else 0.0)


@dataclass
class NamedGroups:
    """The (cell, household) grouping of named visits: the signal-free part of the score."""

    c: np.ndarray
    n_c: int
    pc: np.ndarray
    ph: np.ndarray
    pa: np.ndarray
    a_c: np.ndarray


def named_groups(
    ft: FlowTable, cells: np.ndarray, named: np.ndarray, n_households: int
) -> NamedGroups:
    """Group named visits by (cell, household) once; every trait's score reuses it.

    Why separate: the grouping is a sort of every named flow and does not depend on the
    trait, so the streamed model (two traits per policy and window) computes it once.
    """
    named = np.asarray(named, dtype=bool) & (ft.household >= 0)
    c, n_c = dense(cells)
    nh = max(int(n_households), 1)
    keys, pa = group_counts(c[named] * nh + ft.household[named])
    pc, ph = keys // nh, keys % nh
    pa = pa.astype(np.float64)
    a_c = np.bincount(pc, weights=pa, minlength=n_c)
    return NamedGroups(c, n_c, pc, ph, pa, a_c)


def score_components(
    ft: FlowTable,
    cells: np.ndarray,
    signal: np.ndarray,
    named: np.ndarray,
    n_households: int,
    rates: Rates,
    shared: bool | None = None,
    groups: NamedGroups | None = None,
) -> dict[str, np.ndarray]:
    """Per-household sums behind the named-household score (additive over disjoint cells).

    ``term``: the exact Poisson log-likelihood ratio over cells where the household is alone;
    ``dev`` / ``var``: the centred ratio and its variance under "no trait" over shared cells;
    ``a_shared``: named visits in shared cells; ``certain``: cells where only this household
    can have produced a signal flow; ``named``: its named visits. Windows of a streamed
    trace whose cells never straddle them can be summed (``streaming.py``). ``groups``:
    ``named_groups(ft, cells, named, n_households)`` if already computed (same result).
    """
    signal = np.asarray(signal, dtype=bool)
    g = groups if groups is not None else named_groups(ft, cells, named, n_households)
    c, n_c, pc, ph, pa, a_c = g.c, g.n_c, g.pc, g.ph, g.pa, g.a_c
    s_c = np.bincount(c[signal], minlength=n_c).astype(np.float64)
    # Sharing as the named flows show it: pairs of named flows in a cell from two households.
    pairs = float(np.sum(a_c * (a_c - 1.0)))
    purity = float(np.sum(pa * (pa - 1.0)) / pairs) if pairs > 0 else 1.0
    if shared is None:
        shared = purity < 0.999
    anchored = a_c > 0
    lam1, lam0 = rates.lam1, rates.lam0
    # Signal of senders not named in the cell: what the named households, at the prior, do
    # not explain, spread over the anchored cells (0 when cells are pure: nobody else there).
    r = rates.prior * lam1 + (1 - rates.prior) * lam0
    excess = float(s_c[anchored].sum() - a_c[anchored].sum() * r)
    eta = max(0.0, excess) / max(int(anchored.sum()), 1) if shared else 0.0
    sc = s_c[pc]
    others = np.maximum(a_c[pc] * r - pa * r, 0.0) + eta
    num = others + pa * lam1
    den = others + pa * lam0
    sure = (sc > 0) & (den <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logr = np.where(sure, 0.0, np.log(num) - np.log(den))
    logr = np.nan_to_num(logr, nan=0.0, posinf=0.0, neginf=0.0)
    # Alone in its cell (nobody else expected): the exact Poisson log-likelihood ratio.
    # Shared cell: the same ratio centred on its expectation under "h has no trait"
    # (s_c - others), standardised by its Poisson spread. The uncentred ratio is
    # miscalibrated there (other households' unknown traits over-disperse the cell's signal,
    # and a household's cells share a common fluctuation whose weight grows with its
    # activity), so it ranked by activity: AUC 0.43 under cfr-flow, measured.
    alone = others <= 0
    w = n_households

    def per_h(x: np.ndarray) -> np.ndarray:
        return np.bincount(ph, weights=x, minlength=w).astype(np.float64)

    return {
        "term": per_h(np.where(alone, sc * logr - pa * (lam1 - lam0), 0.0)),
        "dev": per_h(np.where(alone, 0.0, (sc - others) * logr)),
        "var": per_h(np.where(alone, 0.0, others * logr * logr)),
        "a_shared": per_h(np.where(alone, 0.0, pa)),
        "certain": per_h(sure.astype(np.float64)),
        "named": per_h(pa),
    }


def oracle_components(
    ft: FlowTable, signal: np.ndarray, named: np.ndarray, n_households: int, rates: Rates
) -> dict[str, np.ndarray]:
    """``score_components`` with cells = true households, by bincount (no sort)."""
    lab = ft.household >= 0
    h = np.where(lab, ft.household, 0)
    sig = np.asarray(signal, dtype=bool) & lab
    nam = np.asarray(named, dtype=bool) & lab
    s_h = np.bincount(h[sig], minlength=n_households).astype(np.float64)
    a_h = np.bincount(h[nam], minlength=n_households).astype(np.float64)
    lam1, lam0 = rates.lam1, rates.lam0
    has = a_h > 0
    sure = has & (s_h > 0) & (lam0 <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logr = np.log(lam1 / lam0) if lam0 > 0 else 0.0
    term = np.where(has, np.where(sure, 0.0, s_h * logr) - a_h * (lam1 - lam0), 0.0)
    zero = np.zeros(n_households)
    return {
        "term": term,
        "dev": zero,
        "var": zero.copy(),
        "a_shared": zero.copy(),
        "certain": sure.astype(np.float64),
        "named": a_h,
    }


def finish_scores(comp: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(score, evaluated) from summed ``score_components``: LR + detrended z; certain first."""
    dev = np.asarray(comp["dev"], dtype=np.float64)
    var = np.asarray(comp["var"], dtype=np.float64)
    z = np.divide(dev, np.sqrt(var), out=np.zeros_like(dev), where=var > 0)
    z = _residual_on_activity(z, comp["a_shared"], var > 0)
    # Summation order differs between cell layouts: equal evidence must tie in the ranking.
    llr = np.round(comp["term"] + z, 9)
    big = 2.0 * float(np.abs(llr).max(initial=0.0)) + 1.0
    return np.where(comp["certain"] > 0, big + llr, llr), comp["named"] > 0


def named_household_scores(
    ft: FlowTable,
    cells: np.ndarray,
    signal: np.ndarray,
    named: np.ndarray,
    n_households: int,
    rates: Rates,
    shared: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(score per household code, evaluated mask); see module docstring."""
    comp = score_components(ft, cells, signal, named, n_households, rates, shared)
    return finish_scores(comp)


def _residual_on_activity(z: np.ndarray, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """z minus its least-squares trend in log activity (1, log a, log^2 a) over ``mask``.

    In shared cells every household's score carries a term that grows with its own number of
    named visits (its cells' common fluctuation, and the prior share of the signal its own
    visits are assumed to carry). Activity is not the trait, so the adversary removes that
    trend; it needs no labels for it. Measured under cfr-flow before: AUC 0.44 (CI excluding
    0.5) from activity alone.
    """
    if mask.sum() < 4:
        return z
    la = np.log(np.maximum(a[mask], 1.0))
    x = np.column_stack((np.ones(la.size), la, la * la))
    beta, *_ = np.linalg.lstsq(x, z[mask], rcond=None)
    out = z.copy()
    out[mask] = z[mask] - x @ beta
    return out


def oracle_scores(
    ft: FlowTable, signal: np.ndarray, named: np.ndarray, n_households: int, rates: Rates
) -> tuple[np.ndarray, np.ndarray]:
    """The Bayes-optimal ceiling: the same statistic with every flow's true household."""
    return finish_scores(oracle_components(ft, signal, named, n_households, rates))


def classifier_scores(
    ft: FlowTable,
    cells: np.ndarray,
    named: np.ndarray,
    trait: np.ndarray,
    evaluated: np.ndarray,
    seed: int = 0,
    max_households: int = 20_000,
    folds: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold logistic-regression scores from per-cell site-count vectors.

    Returns (score per household code, mask of households actually scored: evaluated ones,
    subsampled to ``max_households`` to bound the cost at ISP scale).
    """
    from scipy.sparse import coo_matrix
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n_h = trait.size
    trait = np.asarray(trait, dtype=bool)
    chosen = np.flatnonzero(evaluated)
    rng = np.random.default_rng(seed)
    if chosen.size > max_households:
        chosen = np.sort(rng.choice(chosen, max_households, replace=False))
    mask = np.zeros(n_h, dtype=bool)
    mask[chosen] = True
    scores = np.full(n_h, np.nan)
    y = trait[chosen]
    n_splits = min(folds, int(y.sum()), int((~y).sum()))
    if n_splits < 2:
        return scores, np.zeros(n_h, dtype=bool)
    c, n_c = dense(cells)
    site, n_s = dense(ft.site)
    named = np.asarray(named, dtype=bool) & (ft.household >= 0)
    keys, cnt = group_counts(combine(c[named], ft.household[named]))
    pc, ph = keys // n_h, keys % n_h
    a_c = np.bincount(pc, weights=cnt, minlength=n_c)
    keep = mask[ph]
    row = dense(np.concatenate((chosen, ph[keep])))[0][chosen.size :]
    w = coo_matrix((cnt[keep] / a_c[pc[keep]], (row, pc[keep])), shape=(chosen.size, n_c)).tocsr()
    cs = coo_matrix((np.ones(len(ft)), (c, site)), shape=(n_c, n_s)).tocsr()
    feats = (w @ cs).tocsr()
    tot = np.asarray(feats.sum(axis=1)).ravel()
    inv = np.divide(1.0, tot, out=np.zeros_like(tot), where=tot > 0)
    feats = feats.multiply(inv[:, None]).tocsr()
    feats.data = np.sqrt(feats.data)
    clf = LogisticRegression(C=1.0, max_iter=300, class_weight="balanced")
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    oof = cross_val_predict(clf, feats, y, cv=cv, method="decision_function")
    scores[chosen] = oof
    return scores, mask


@dataclass
class TraitSpec:
    """One trait: per-household truth and the flows that carry its signal."""

    name: str
    trait: np.ndarray
    signal: np.ndarray


def trait_attack(
    ft: FlowTable,
    traits: list[TraitSpec],
    policy: str | None,
    epoch: EpochEstimate | None = None,
    classifier: bool = True,
    seed: int = 0,
    resamples: int | None = None,
    cells: np.ndarray | None = None,
) -> dict:
    """Every trait adversary on one policy's flows; ROC figures with bootstrap CIs.

    ``named`` (the visits the adversary can name) are the flows outside every trait's signal
    sites. Per trait: the named-household adversary, the classifier, and the oracle ceiling;
    plus the inferred epoch lengths. ``cells`` replaces the alias x epoch cells by any other
    clustering (for example a fingerprint linker's, or a union with resumption).
    """
    lab = ft.household >= 0
    if not lab.all():
        ft = ft.subset(lab)
        cells = None if cells is None else np.asarray(cells)[lab]
        traits = [TraitSpec(t.name, t.trait, np.asarray(t.signal)[lab]) for t in traits]
    any_signal = np.zeros(len(ft), dtype=bool)
    for t in traits:
        any_signal |= np.asarray(t.signal, dtype=bool)
    named = ~any_signal
    epoch = epoch if epoch is not None else infer_epoch(ft, named, key=cell_key(ft, policy))
    cells = adversary_cells(ft, policy, epoch) if cells is None else dense(cells)[0]
    out: dict = {"epoch": epoch.as_dict(), "cells": int(cells.max(initial=-1) + 1)}
    for t in traits:
        n_h = t.trait.size
        rates = true_rates(ft, t.trait, t.signal, named)
        adv, ev = named_household_scores(ft, cells, t.signal, named, n_h, rates)
        orc, ev_o = oracle_scores(ft, t.signal, named, n_h, rates)
        ev = ev & ev_o
        b = resamples if resamples is not None else resamples_for(int(ev.sum()))
        res: dict = {
            "rates": asdict(rates),
            "named_household": roc_summary(adv[ev], t.trait[ev], resamples=b, seed=seed),
            "oracle": roc_summary(orc[ev], t.trait[ev], resamples=b, seed=seed),
        }
        if classifier:
            cs, cm = classifier_scores(ft, cells, named, t.trait, ev, seed=seed)
            res["classifier"] = roc_summary(cs[cm], t.trait[cm], resamples=b, seed=seed)
        out[t.name] = res
    return out
