"""ROC figures with their uncertainty: AUC and TPR at a fixed FPR, with bootstrap CIs.

Why a module of its own: every trait figure the suite prints must carry an interval, since
with 20..100 trait households an AUC moves by 0.05..0.1 between seeds (issue 15: 0.51 vs 0.56
was shown as a difference and was noise). Households are the unit of resampling (a
household's score is one observation); positives and negatives are resampled separately
(stratified), so every resample has both classes and the prevalence of the data.

* ``auc``: Mann-Whitney with average ranks for ties (0.5 = chance).
* ``tpr_at_fpr``: the share of positives scored strictly above the threshold that at most
  ``fpr`` of negatives exceed. With fewer than 1 / ``fpr`` negatives this means no false
  positive at all; ``negatives`` is reported so a reader sees the resolution.
* ``roc_summary``: both figures with CIs (``level``, default 95 %) and a verdict against
  chance: ``above chance`` when the AUC CI lies above 0.5, ``at chance`` when it contains
  0.5, ``below chance`` otherwise. With ``resamples`` 0 (used above ~2x10^5 households,
  where the CI is narrow anyway) the CIs are analytic (Hanley-McNeil, Wilson).

Which interval, and why (measured, ``tests/unit/test_rocstats.py``): the percentile
bootstrap over households alone undercovers badly near the ceiling. Behind ``cgn`` (AUC
~0.996, 30 trait households of 300) its 95 % CI held the expected AUC in only 41 % of 80
independent traces: a sample in which every trait household outranks every other gives
bootstrap replicates that are all 1.0, an interval of width zero (the "zero events"
problem of a binomial). The reported ``auc_ci`` is therefore the hull of the percentile
bootstrap interval and a *score* interval (Newcombe 2006: every A with (Â - A)^2 <= z^2
V(A), V the Hanley-McNeil variance evaluated at A, not at Â), which never collapses while
the sample is finite; likewise ``tpr_at_fpr_ci`` is the hull of the bootstrap and the
Wilson interval over the positives. Both parts are kept (``auc_ci_bootstrap``,
``auc_ci_score``...) so a reader sees which one set the bound. Households stay the unit:
flows of one household are never resampled apart, and the AUC's resamples draw the
scored households themselves (stratified by label).

Scores of households that share alias cells are not independent, which no household
bootstrap models. Measured (named-household adversary on model traces, 95 % CIs, coverage
of the mean AUC over independent traces; pool 8, 300 s epochs, dual stack, 30 sessions per
household-hour):

| policy, households | traces | mean AUC (sd) | bootstrap alone | score alone | hull (reported) |
|---|---|---|---|---|---|
| route, 300 | 80 | 0.999 (0.003) | 0.09 | 0.96 | 1.00 (width 0.060) |
| cgn, 300 | 80 | 0.996 (0.007) | 0.41 | 0.97 | 1.00 (width 0.066) |
| cfr-flow, 300 | 80 | 0.495 (0.052) | 0.96 | 0.95 | 0.96 (width 0.222) |
| cfr-epoch, 300 | 80 | 0.719 (0.044) | 0.95 | 0.97 | 0.97 (width 0.209) |
| cfr-flow, 1000 (125 per alias) | 50 | 0.499 (0.029) | 0.92 | 0.94 | 0.94 (width 0.122) |
| cfr-epoch, 1000 (125 per alias) | 50 | 0.630 (0.026) | 0.98 | 0.98 | 0.98 (width 0.122) |

So at these sizes the cell sharing does not break coverage; near the ceiling the hull is
conservative (it says ">= 0.94" where the traces vary by 0.007), which is the honest
direction. ``tests/unit/test_rocstats.py`` keeps the coverage measurements running.
"""

from __future__ import annotations

import numpy as np

from benchmarks.linkability.metrics import roc_auc


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> float:
    """TPR at the threshold letting at most ``fpr`` of negatives through (strict >)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    pos, neg = scores[labels], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    allowed = int(np.floor(fpr * neg.size))
    neg_sorted = np.sort(neg)[::-1]
    # Threshold: the (allowed+1)-th largest negative; scores strictly above it pass. At most
    # `allowed` negatives are strictly above it (ties at the threshold never pass).
    thr = neg_sorted[allowed] if allowed < neg.size else -np.inf
    return float((pos > thr).mean())


def _auc_many(scores: np.ndarray, pos_idx: np.ndarray, neg_idx: np.ndarray) -> np.ndarray:
    """AUC of each bootstrap resample (rows of pos_idx / neg_idx index into scores)."""
    out = np.empty(pos_idx.shape[0])
    for b in range(pos_idx.shape[0]):
        p, n = scores[pos_idx[b]], scores[neg_idx[b]]
        ns = np.sort(n)
        below = np.searchsorted(ns, p, side="left")
        upto = np.searchsorted(ns, p, side="right")
        out[b] = (below.sum() + 0.5 * (upto - below).sum()) / (p.size * n.size)
    return out


def roc_summary(
    scores: np.ndarray,
    labels: np.ndarray,
    fpr: float = 0.01,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """AUC and TPR at ``fpr`` with stratified percentile bootstrap CIs over households."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    pos = np.flatnonzero(labels)
    neg = np.flatnonzero(~labels)
    out: dict = {
        "households": int(labels.size),
        "positives": int(pos.size),
        "negatives": int(neg.size),
        "auc": roc_auc(scores, labels),
        "tpr_at_fpr": tpr_at_fpr(scores, labels, fpr),
        "fpr": fpr,
        "level": level,
        "resamples": resamples,
    }
    if pos.size == 0 or neg.size == 0:
        out.update(auc_ci=[None, None], tpr_at_fpr_ci=[None, None], verdict="undefined")
        return out
    if resamples < 1:
        return _analytic(out, level)
    rng = np.random.default_rng(seed)
    pi = pos[rng.integers(0, pos.size, (resamples, pos.size))]
    ni = neg[rng.integers(0, neg.size, (resamples, neg.size))]
    aucs = _auc_many(scores, pi, ni)
    tprs = np.empty(resamples)
    allowed = int(np.floor(fpr * neg.size))
    for b in range(resamples):
        ns = np.sort(scores[ni[b]])[::-1]
        thr = ns[allowed] if allowed < ns.size else -np.inf
        tprs[b] = (scores[pi[b]] > thr).mean()
    a = (1 - level) / 2
    blo, bhi = (float(x) for x in np.quantile(aucs, [a, 1 - a]))
    btlo, bthi = (float(x) for x in np.quantile(tprs, [a, 1 - a]))
    slo, shi = auc_score_interval(out["auc"], pos.size, neg.size, level)
    wlo, whi = wilson_interval(out["tpr_at_fpr"], pos.size, level)
    lo, hi = min(blo, slo), max(bhi, shi)
    out["auc_ci"] = [lo, hi]
    out["auc_ci_bootstrap"] = [blo, bhi]
    out["auc_ci_score"] = [slo, shi]
    out["tpr_at_fpr_ci"] = [min(btlo, wlo), max(bthi, whi)]
    out["tpr_at_fpr_ci_bootstrap"] = [btlo, bthi]
    out["tpr_at_fpr_ci_wilson"] = [wlo, whi]
    out["ci_method"] = "hull of household bootstrap and score/Wilson"
    out["verdict"] = "above chance" if lo > 0.5 else ("at chance" if hi >= 0.5 else "below chance")
    return out


def hanley_mcneil_var(a: np.ndarray | float, n_pos: int, n_neg: int) -> np.ndarray:
    """Hanley-McNeil variance of the AUC, evaluated at ``a`` (vectorised)."""
    a = np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0)
    core = 1.0 + (n_pos - 1) * (1 - a) / (2 - a) + (n_neg - 1) * a / (1 + a)
    return a * (1 - a) * core / (n_pos * n_neg)


def auc_score_interval(
    auc: float, n_pos: int, n_neg: int, level: float = 0.95, grid: int = 20001
) -> tuple[float, float]:
    """Score interval of the AUC (Newcombe 2006, "method 5"-like): every A in [0, 1] with
    (auc - A)^2 <= z^2 V_HM(A). Unlike the Wald interval it does not collapse at 0 or 1,
    since V_HM(A) > 0 inside (0, 1); a grid of ``grid`` points resolves it to 5e-5."""
    from scipy.stats import norm

    if n_pos < 1 or n_neg < 1 or not np.isfinite(auc):
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + level / 2))
    a = np.linspace(0.0, 1.0, grid)
    ok = (auc - a) ** 2 <= z * z * hanley_mcneil_var(a, n_pos, n_neg)
    ok[np.argmin(np.abs(a - auc))] = True  # the estimate itself always belongs
    inside = a[ok]
    return float(inside.min()), float(inside.max())


def wilson_interval(p: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` of ``n`` (TPR over the positives)."""
    from scipy.stats import norm

    if n < 1 or not np.isfinite(p):
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + level / 2))
    c = n + z * z
    mid = (p * n + z * z / 2) / c
    half = z * np.sqrt(p * (1 - p) * n + z * z / 4) / c
    return float(max(0.0, mid - half)), float(min(1.0, mid + half))


def _analytic(out: dict, level: float) -> dict:
    """Normal-approximation CIs for very large samples (bootstrap sorts cost too much):
    Hanley-McNeil for the AUC, Wilson for TPR over the positives (the threshold's own
    uncertainty, from ~10^5+ negatives, is neglected)."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    a, n_pos, n_neg = out["auc"], out["positives"], out["negatives"]
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    se = float(np.sqrt(max(var, 0.0)))
    lo, hi = max(0.0, a - z * se), min(1.0, a + z * se)
    t = out["tpr_at_fpr"]
    c = n_pos + z * z
    mid = (t * n_pos + z * z / 2) / c
    half = z * np.sqrt(t * (1 - t) * n_pos + z * z / 4) / c
    out["auc_ci"] = [lo, hi]
    out["tpr_at_fpr_ci"] = [float(max(0.0, mid - half)), float(min(1.0, mid + half))]
    out["ci_method"] = "analytic"
    out["verdict"] = "above chance" if lo > 0.5 else ("at chance" if hi >= 0.5 else "below chance")
    return out


def resamples_for(n: int) -> int:
    """Bootstrap resamples scaled to the data size (bounded cost: ~2e7 sorted values)."""
    return int(min(1000, max(100, 2e7 // max(n, 1))))
