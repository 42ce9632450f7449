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
* ``roc_summary``: both figures with percentile bootstrap CIs (``level``, default 95 %) and a
  verdict against chance: ``above chance`` when the AUC CI lies above 0.5, ``at chance``
  when it contains 0.5, ``below chance`` otherwise. With ``resamples`` 0 (used above ~2x10^5
  households, where the CI is narrow anyway) the CIs are analytic (Hanley-McNeil, Wilson).
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
    lo, hi = np.quantile(aucs, [a, 1 - a])
    tlo, thi = np.quantile(tprs, [a, 1 - a])
    out["auc_ci"] = [float(lo), float(hi)]
    out["tpr_at_fpr_ci"] = [float(tlo), float(thi)]
    out["verdict"] = "above chance" if lo > 0.5 else ("at chance" if hi >= 0.5 else "below chance")
    return out


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
