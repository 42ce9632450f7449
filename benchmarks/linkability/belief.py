"""The adversary's belief about who sent each flow, and chance-corrected clustering scores.

Why this replaces "households per alias cell" as the anonymity figure (issue 15): that count
is a property of the alias, not of the adversary's uncertainty. Under ``cfr-flow`` the
alias says nothing, so the honest sender set of a flow is every household active at that
time (hundreds), not the handful that happened to share its alias.

Posterior (``sender_posteriors``): the combined adversary of the threat model knows the
household of every named (ordinary) visit. For a flow in cell ``c`` (the adversary's cell,
e.g. alias x epoch, cut into ``window_s`` windows) in window ``w`` it mixes two beliefs:

    q(h) = beta * a_hc / A_c  +  (1 - beta) * u_hw

with ``a_hc / A_c`` household h's share of the named visits in the cell and ``u_hw`` its
share of named visits in the window (the population prior: who was active then). ``beta``
is how much the cell says, fitted by the adversary itself by maximum leave-one-out
likelihood of the named visits (no ground truth beyond the names): ~1 where cells are
per-household (route, cfr-epoch within an epoch), ~0 where they are random (cfr-flow).

Per flow (all flows, split by the flow's IP family):

* sender entropy H = -sum_h q(h) log2 q(h) (Serjantov & Danezis 2002), reported as bits and
  as the effective set 2^H;
* degree of anonymity d = H / log2 N (Diaz et al. 2002), N the households active in the
  window (d = 1: the flow could be anyone active; 0: identified);
* q(true sender): the probability the adversary puts on the right household.

Each with a bootstrap CI over households (flows resampled by their household).

Clustering (``clustering_scores``): adjusted Rand index and adjusted mutual information of a
linker's clusters against the households (scikit-learn), 0 = chance, 1 = exact; unlike
pairwise precision they correct for cluster sizes. On more than ``max_flows`` flows a random
subsample of households is scored; CIs from half-samples of households.
"""

from __future__ import annotations

import numpy as np

from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.metrics import combine, dense, group_counts


def _fit_beta(p_cell: np.ndarray, p_pop: np.ndarray) -> float:
    """argmax over a grid of sum log(beta p_cell + (1 - beta) p_pop)."""
    if p_cell.size == 0:
        return 0.0
    grid = np.linspace(0.0, 1.0, 101)
    ll = [np.log(b * p_cell + (1 - b) * p_pop + 1e-300).sum() for b in grid]
    return float(grid[int(np.argmax(ll))])


def _boot_mean_ci(
    values: np.ndarray, groups: np.ndarray, resamples: int, seed: int
) -> list[float | None]:
    """Percentile CI of the flow mean, resampling groups (households) with replacement."""
    if values.size == 0:
        return [None, None]
    g, k = dense(groups)
    sums = np.bincount(g, weights=values, minlength=k)
    cnts = np.bincount(g, minlength=k).astype(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, (resamples, k))
    boot = sums[idx].sum(axis=1) / np.maximum(cnts[idx].sum(axis=1), 1.0)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return [float(lo), float(hi)]


def sender_posteriors(
    ft: FlowTable,
    cells: np.ndarray,
    named: np.ndarray,
    window_s: float = 300.0,
    resamples: int = 200,
    seed: int = 0,
) -> dict:
    """Per-flow sender entropy, degree, q(true sender), by IP family (see module doc)."""
    lab = ft.household >= 0
    if not lab.all():
        ft, cells, named = ft.subset(lab), np.asarray(cells)[lab], np.asarray(named)[lab]
    named = np.asarray(named, dtype=bool)
    hh = dense(ft.household)[0]
    n_h = int(hh.max(initial=-1)) + 1
    win = np.floor(ft.ts / window_s).astype(np.int64)
    win = dense(win)[0]
    cw = dense(combine(cells, win))[0]  # cells cut into windows
    nh = max(n_h, 1)
    n_c = int(cw.max(initial=-1)) + 1
    # named visits per (household, cell) and per (household, window)
    hc_keys, a_hc = group_counts(cw[named] * nh + hh[named])
    hc_c, hc_h = hc_keys // nh, hc_keys % nh
    a_c = np.bincount(hc_c, weights=a_hc, minlength=n_c)
    hw_keys, u_cnt = group_counts(win[named] * nh + hh[named])
    n_w = int(win.max(initial=-1)) + 1
    hw_w = hw_keys // nh
    act_w = np.bincount(hw_w, weights=u_cnt, minlength=n_w)
    n_active = np.bincount(hw_w, minlength=n_w)
    # leave-one-out likelihood of the named visits for beta
    f_hc = dict_lookup(cw[named] * nh + hh[named], hc_keys, a_hc)
    f_hw = dict_lookup(win[named] * nh + hh[named], hw_keys, u_cnt)
    a_cell = a_c[cw[named]]
    a_win = act_w[win[named]]
    ok = (a_cell > 1) & (a_win > 1)
    p_cell = (f_hc[ok] - 1) / (a_cell[ok] - 1)
    p_pop = (f_hw[ok] - 1) / (a_win[ok] - 1)
    beta = _fit_beta(p_cell, p_pop)
    # entropy per cell: households in the cell get the mixture, the rest (1 - beta) u
    cell_win = np.zeros(n_c, dtype=np.int64)
    cell_win[cw] = win
    u_all = u_cnt / act_w[hw_w]
    rest = (1 - beta) * u_all
    with np.errstate(divide="ignore", invalid="ignore"):
        t_w = -np.bincount(
            hw_w, weights=np.where(rest > 0, rest * np.log2(rest), 0.0), minlength=n_w
        )
    u_of_pair = dict_lookup(cell_win[hc_c] * nh + hc_h, hw_keys, u_cnt) / np.maximum(
        act_w[cell_win[hc_c]], 1.0
    )
    q = beta * a_hc / np.maximum(a_c[hc_c], 1.0) + (1 - beta) * u_of_pair
    r = (1 - beta) * u_of_pair
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(q > 0, q * np.log2(q), 0.0) - np.where(r > 0, r * np.log2(r), 0.0)
    h_c = t_w[cell_win] - np.bincount(hc_c, weights=corr, minlength=n_c)
    h_c = np.maximum(h_c, 0.0)
    # cells with no named visit: the population prior alone
    no_named = a_c == 0
    if no_named.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            t_pop = -np.bincount(hw_w, weights=u_all * np.log2(u_all), minlength=n_w)
        h_c[no_named] = t_pop[cell_win[no_named]]
    flow_h = h_c[cw]
    n_act = n_active[win].astype(float)
    degree = np.where(n_act > 1, flow_h / np.log2(np.maximum(n_act, 2.0)), np.nan)
    # probability on the true sender
    share = dict_lookup(cw * nh + hh, hc_keys, a_hc) / np.maximum(a_c[cw], 1.0)
    u_true = dict_lookup(win * nh + hh, hw_keys, u_cnt) / np.maximum(act_w[win], 1.0)
    q_true = np.where(a_c[cw] > 0, beta * share + (1 - beta) * u_true, u_true)
    out: dict = {"beta": beta, "window_s": window_s}
    for fam in (4, 6):
        m = ft.family == fam
        if not m.any():
            continue
        d = degree[m]
        dm = np.isfinite(d)
        out[f"ipv{fam}"] = {
            "flows": int(m.sum()),
            "entropy_bits_mean": float(flow_h[m].mean()),
            "entropy_bits_mean_ci": _boot_mean_ci(flow_h[m], hh[m], resamples, seed),
            "entropy_bits_median": float(np.median(flow_h[m])),
            "effective_set_median": float(np.exp2(np.median(flow_h[m]))),
            "degree_mean": float(d[dm].mean()) if dm.any() else float("nan"),
            "degree_mean_ci": _boot_mean_ci(d[dm], hh[m][dm], resamples, seed),
            "active_households_median": float(np.median(n_act[m])),
            "q_true_mean": float(q_true[m].mean()),
            "q_true_mean_ci": _boot_mean_ci(q_true[m], hh[m], resamples, seed),
        }
    return out


def dict_lookup(query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values[k] for each query equal to keys[k] (keys sorted unique); 0 where absent."""
    pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, max(keys.size - 1, 0))
    hit = keys.size > 0
    out = np.zeros(query.size, dtype=np.float64)
    if hit:
        m = keys[pos] == query
        out[m] = values[pos[m]]
    return out


def clustering_scores(
    truth: np.ndarray,
    labels: np.ndarray,
    max_flows: int = 20_000,
    resamples: int = 20,
    seed: int = 0,
) -> dict:
    """Adjusted Rand index and adjusted mutual information with household-bootstrap CIs."""
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    truth = dense(np.asarray(truth))[0]
    labels = dense(np.asarray(labels))[0]
    rng = np.random.default_rng(seed)
    n_h = int(truth.max(initial=-1)) + 1
    if truth.size > max_flows and n_h > 1:
        keep_h = rng.random(n_h) < max_flows / truth.size
        m = keep_h[truth]
        truth, labels = dense(truth[m])[0], dense(labels[m])[0]
        n_h = int(truth.max(initial=-1)) + 1
    if truth.size < 2:
        return {"ari": float("nan"), "ami": float("nan")}
    ari = float(adjusted_rand_score(truth, labels))
    ami = float(adjusted_mutual_info_score(truth, labels))
    # Half-samples of households without replacement (a bootstrap would duplicate households
    # whose copies share clusters, which these indices punish); for half-samples the
    # estimator's spread approximates that of the full sample, so CI = est +- 1.96 sd.
    boot_ari, boot_ami = [], []
    for _ in range(resamples):
        keep = rng.random(n_h) < 0.5
        m = keep[truth]
        if m.sum() < 2:
            continue
        boot_ari.append(adjusted_rand_score(truth[m], labels[m]))
        boot_ami.append(adjusted_mutual_info_score(truth[m], labels[m]))
    sd_ari = float(np.std(boot_ari)) if boot_ari else float("nan")
    sd_ami = float(np.std(boot_ami)) if boot_ami else float("nan")
    return {
        "ari": ari,
        "ari_ci": [ari - 1.96 * sd_ari, ari + 1.96 * sd_ari],
        "ami": ami,
        "ami_ci": [ami - 1.96 * sd_ami, ami + 1.96 * sd_ami],
        "flows": int(truth.size),
    }
