"""The ISP-scale profiling model, streamed by time window: 10^6 subscribers x 24 h.

Why streamed: 10^6 subscribers browsing ~23 flows an hour make ~5.5 x 10^8 flows a day;
held at once that is tens of GB. The trait adversary's evidence is a sum over its cells
(``adversary.score_components``), and the cells never straddle a window when the window is
a multiple of the epoch, so the day is generated and scored one window (default 1 h) at a
time and only per-household sums (a few arrays of 10^6) are kept. Peak memory is one
window's flows.

What is modelled per window (``_window``): the same households throughout (devices, trait,
weak trait and activity fixed for the day), sessions as in ``simulator.generate_trace``
(Poisson per household at its activity, trait sessions on top, Zipf sites, dual stack with
``v6_fraction``), then each policy's alias choice with the relay's semantics
(``simulator.apply_policy``, dual-stack path). Left out, documented: TLS resumption chains
across windows (the profiling adversary here does not use tickets) and the classifier (it
runs on the emulation and on the in-memory model).

What is cut at window edges: cells whose key outlives a window (route's /56, cgn's
address) are split into one cell per window. For the centred shared-cell statistic the
per-window deviations and variances are *summed* before standardising, which is the pooled
statistic over the day except that the unexplained-signal floor is estimated per window.

Epoch length: inferred by the adversary from the first window (``adversary.infer_epoch``)
and kept for the day. Rates (labelled-panel knowledge) from the first window's truth.

Timing it alone: ``python -m benchmarks.linkability.streaming --subscribers 1000000 --hours
24 --progress`` prints the wall time, the load average, the peak RSS of every process and the
final AUCs. What keeps 10^6 x 24 h within minutes and 8 GiB (measured, README "Figures"):
per window the rates and the oracle are computed once (they are policy-free) and the named
visits' (cell, household) grouping once per policy (both traits reuse it); unread columns are
zero-memory views or freed; codes stay small so renumbering is a bincount, not a sort; and
the heap is kept between windows (``_retain_heap``) instead of re-faulting every page.

Beyond one machine: windows are independent given the fixed household table, so the same
code runs as a map over (policy, window) on any number of machines, each returning its
per-household component sums (a few x 8 MB at 10^6 households), and a reduce that adds
them; the only cross-window state is the household table (seeded, regenerated anywhere).
Households can be sharded too (components are per household), except that the cells mix
households: a shard must hold whole cells, i.e. shard by alias, not by household, for the
pool policies.

Over 400 lines on purpose: one streamed pass (windows, per-policy alias choice, scoring,
memory reuse) whose parts share the window's arrays; its command-line timing entry point
sits beside it so the figure is reproduced by the code that produces it.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from benchmarks.linkability.adversary import (
    POOL_POLICIES,
    Rates,
    adversary_cells,
    cell_key,
    finish_scores,
    infer_epoch,
    named_groups,
    oracle_components,
    score_components,
    true_rates,
)
from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.rocstats import roc_summary
from benchmarks.linkability.simulator import SimParams, Trace, _zipf_sample, apply_policy

ANALYTIC_ABOVE = 200_000


@dataclass
class StreamParams:
    """A day of the model, streamed (defaults: the issue's 10^6 x 24 h)."""

    base: SimParams = field(
        default_factory=lambda: SimParams(
            subscribers=1_000_000, duration_s=86400.0, v6_fraction=0.7, epoch_s=300.0
        )
    )
    window_s: float = 3600.0
    policies: tuple[str, ...] = ("route", "cgn", "cfr-flow", "cfr-epoch")
    checkpoints_h: tuple[float, ...] = (1, 2, 4, 8, 12, 24)
    workers: int = 2
    resamples: int = 50  # bootstrap; 0 above ANALYTIC_ABOVE households (analytic CIs)
    progress: bool = False  # one line per window on stderr (long runs)


@dataclass
class _Households:
    n_dev: np.ndarray
    dev_start: np.ndarray
    trait: np.ndarray
    weak: np.ndarray
    mult: np.ndarray
    device_household: np.ndarray


def _households(p: SimParams) -> _Households:
    rng = np.random.default_rng([p.seed, 0xD0])
    s_n = int(p.subscribers)
    n_dev = rng.integers(1, p.devices_max + 1, s_n)
    trait = np.zeros(s_n, dtype=bool)
    trait[rng.choice(s_n, size=int(round(p.trait_fraction * s_n)), replace=False)] = True
    weak = np.zeros(s_n, dtype=bool)
    weak[rng.choice(s_n, size=int(round(p.weak_trait_fraction * s_n)), replace=False)] = True
    sig = p.activity_sigma
    act = rng.lognormal(-0.5 * sig * sig, sig, s_n) if sig > 0 else np.ones(s_n)
    mult = act / np.where(trait, 1.0 - p.sensitive_prob, 1.0) / np.where(weak, 1 - p.weak_prob, 1)
    dev_start = np.concatenate(([0], np.cumsum(n_dev)[:-1]))
    dev_hh = np.repeat(np.arange(s_n, dtype=np.int64), n_dev)
    return _Households(n_dev, dev_start, trait, weak, mult, dev_hh)


def _window(p: SimParams, hh: _Households, index: int, t0: float, length: float) -> Trace:
    """Flows of sessions starting in [t0, t0 + length): a dual-stack trace, no tickets."""
    rng = np.random.default_rng([p.seed, 0x5173, index])
    n_sess = rng.poisson(p.sessions_per_hour * length / 3600.0 * hh.mult)
    s_hh = np.repeat(np.arange(n_sess.size, dtype=np.int64), n_sess)
    ns = s_hh.size
    s_ts = t0 + rng.uniform(0.0, length, ns)
    s_dev = hh.dev_start[s_hh] + (rng.random(ns) * hh.n_dev[s_hh]).astype(np.int64)
    site = _zipf_sample(rng, p.sites, p.zipf_s, ns)
    sens = hh.trait[s_hh] & (rng.random(ns) < p.sensitive_prob)
    site[sens] = p.sites + rng.integers(0, max(1, p.sensitive_sites), int(sens.sum()))
    weak = hh.weak[s_hh] & ~sens & (rng.random(ns) < p.weak_prob)
    site[weak] = p.weak_first_rank - 1 + rng.integers(0, p.weak_sites, int(weak.sum()))
    v6 = rng.random(ns) < p.v6_fraction
    per = 1 + rng.poisson(max(0.0, p.flows_per_session - 1.0), ns)
    f = np.repeat(np.arange(ns, dtype=np.int64), per)
    first = np.zeros(f.size, dtype=bool)
    first[np.concatenate(([0], np.cumsum(per)[:-1]))] = True
    ts = s_ts[f] + np.where(first, 0.0, rng.uniform(0.0, p.session_spread_s, f.size))
    # cells never straddle windows: a page's late sub-resources stay in its window
    ts = np.minimum(ts, t0 + length - 1e-6)
    h, fam6 = s_hh[f], v6[f]
    s_n = int(p.subscribers)
    # Own codes: IPv4 address = household, IPv6 address = s_n + device; /56 = household for
    # IPv6, s_n + household for IPv4 (a separate code space just above, so codes stay below
    # 2 s_n and ``metrics.dense`` renumbers them by bincount, not by np.unique's argsort).
    own_addr = np.where(fam6, s_n + s_dev[f], h)
    own56 = np.where(fam6, h, s_n + h)
    del s_dev, s_ts
    fsite = site[f]
    del f, site
    empty = np.zeros(0, dtype=np.int64)
    # Columns the streamed adversary never reads (device, TLS identities) are zero-memory
    # views: at 10^6 subscribers each full column is ~170 MB per window and per worker.
    none = np.broadcast_to(np.int64(-1), ts.shape)
    return Trace(
        ts=ts,
        household=h,
        device=none,
        site=fsite,
        sensitive=fsite >= p.sites,
        session=None,
        psk=none,
        issued_flow=empty,
        issued_ticket=empty,
        device_household=hh.device_household,
        trait=hh.trait,
        own_addr=own_addr,
        own_prefix={56: own56},
        own_family=np.where(fam6, 6, 4).astype(np.int8),
        weak_trait=hh.weak,
    )


def _weak_signal(p: SimParams, site: np.ndarray) -> np.ndarray:
    lo = p.weak_first_rank - 1
    return (site >= lo) & (site < lo + p.weak_sites)


def _add(acc: dict | None, comp: dict) -> dict:
    if acc is None:
        return {k: v.copy() for k, v in comp.items()}
    for k, v in comp.items():
        acc[k] += v
    return acc


class _PolicyState:
    """What one policy keeps across windows: per-household component sums and checkpoints."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.acc: dict[str, dict | None] = {"strong": None, "weak": None}
        self.epoch = None
        self.points: dict[str, list] = {"strong": [], "weak": []}
        self.flows = 0
        self.cpu_s = 0.0


def _drop_unread(ft: FlowTable, policy: str) -> None:
    """Free the columns this adversary never reads (~170 MB each per window at 10^6).

    It reads ts, household, family and the cell key (``adversary.cell_key``): the alias
    address for the CFR pools, the /56 otherwise. Ports are never read.
    """
    none = np.broadcast_to(np.int64(-1), ft.ts.shape)
    ft.port = none
    if policy in POOL_POLICIES:
        ft.prefix = {}
    else:
        ft.addr = none


def _retain_heap(on: bool) -> None:
    """Keep freed memory in the process for reuse (glibc only; elsewhere a no-op).

    Why: every window allocates the same few dozen arrays of 10^7..10^8 bytes. glibc serves
    each from a fresh mmap and unmaps it on free, so the kernel faults and zeroes every page
    again: measured at 10^6 subscribers, system time was 46 % of the CPU (77 s of 166 s
    over 4 windows). With mmap off and trimming deferred, windows reuse the heap; on exit
    of the phase the defaults come back and the heap is trimmed.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4
    if on:
        mallopt(m_mmap_max, 0)
        mallopt(m_trim_threshold, 1 << 30)  # keep up to 1 GiB of free top of heap
    else:
        mallopt(m_mmap_max, 65536)  # glibc defaults
        mallopt(m_trim_threshold, 128 * 1024)
        trim(0)


def stream_policies(sp: StreamParams, policies: tuple[str, ...]) -> list[dict]:
    """Policies over the day (see ``_stream_policies``), with the heap kept between windows."""
    _retain_heap(True)
    try:
        return _stream_policies(sp, policies)
    finally:
        _retain_heap(False)


def _stream_policies(sp: StreamParams, policies: tuple[str, ...]) -> list[dict]:
    """Policies over the day, each window generated once and shared by the policies.

    The rates (labelled panel) and the oracle depend on the true households only, not on
    the policy, so they are computed once per window and shared: the oracle's ROC at a
    checkpoint is the same for every policy (the evaluated households are those with a
    named visit, also policy-free).
    """
    p = sp.base
    hh = _households(p)
    n_h = int(p.subscribers)
    n_win = int(np.ceil(p.duration_s / sp.window_s))
    states = [_PolicyState(pol) for pol in policies]
    checkpoints = {int(round(c * 3600 / sp.window_s)) for c in sp.checkpoints_h}
    resamples = 0 if n_h > ANALYTIC_ABOVE else sp.resamples
    t_start = time.perf_counter()
    gen_cpu = 0.0
    truths = {"strong": hh.trait, "weak": hh.weak}
    rates: dict[str, Rates] = {}
    oracle: dict[str, dict | None] = {"strong": None, "weak": None}
    for w in range(n_win):
        c0 = time.process_time()
        tr = _window(p, hh, w, w * sp.window_s, sp.window_s)
        signals = {"strong": tr.sensitive, "weak": _weak_signal(p, tr.site)}
        named = ~(signals["strong"] | signals["weak"])
        for name, sig in signals.items():
            if name not in rates:
                rates[name] = true_rates(tr, truths[name], sig, named)  # type: ignore[arg-type]
            ocomp = oracle_components(tr, sig, named, n_h, rates[name])  # type: ignore[arg-type]
            oracle[name] = _add(oracle[name], ocomp)
        gen_cpu += time.process_time() - c0
        oracle_points: dict[str, dict] = {}
        for st in states:
            c1 = time.process_time()
            ft: FlowTable = apply_policy(tr, st.policy, p)
            _drop_unread(ft, st.policy)
            st.flows += len(ft)
            if st.epoch is None:
                st.epoch = infer_epoch(ft, named, key=cell_key(ft, st.policy))
            cells = adversary_cells(ft, st.policy, st.epoch)
            groups = named_groups(ft, cells, named, n_h)  # shared by both traits
            for name, sig in signals.items():
                comp = score_components(ft, cells, sig, named, n_h, rates[name], groups=groups)
                st.acc[name] = _add(st.acc[name], comp)
            del ft, cells, groups
            if (w + 1) in checkpoints:
                for name, truth in truths.items():
                    score, ev = finish_scores(st.acc[name])  # type: ignore[arg-type]
                    if name not in oracle_points:
                        oscore, oev = finish_scores(oracle[name])  # type: ignore[arg-type]
                        oracle_points[name] = roc_summary(
                            oscore[oev], truth[oev], resamples=resamples, seed=w
                        )
                    st.points[name].append(
                        {
                            "observed_s": (w + 1) * sp.window_s,
                            "named_household": roc_summary(
                                score[ev], truth[ev], resamples=resamples, seed=w
                            ),
                            "oracle": dict(oracle_points[name]),
                        }
                    )
            st.cpu_s += time.process_time() - c1
        del tr, signals, named
        if sp.progress:
            import sys

            cpu = ", ".join(f"{st.policy} {st.cpu_s:.0f}" for st in states)
            print(
                f"window {w + 1}/{n_win}: {time.perf_counter() - t_start:.0f} s wall; "
                f"CPU s: generation + oracle {gen_cpu:.0f}, {cpu}",
                file=sys.stderr,
                flush=True,
            )
    wall = time.perf_counter() - t_start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return [
        {
            "policy": st.policy,
            "flows": st.flows,
            "epoch": None if st.epoch is None else st.epoch.as_dict(),
            "rates": {k: asdict(v) for k, v in rates.items()},
            "curves": {k: {"points": v} for k, v in st.points.items()},
            "cpu_s": st.cpu_s,
            "generation_cpu_s_shared": gen_cpu,
            "worker_wall_s": wall,
            "wall_s": wall,
            "max_rss_gib": rss,
            "worker_policies": list(policies),
            "worker_pid": os.getpid(),
        }
        for st in states
    ]


def stream_policy(sp: StreamParams, policy: str) -> dict:
    """One policy over the day (see ``stream_policies``)."""
    return stream_policies(sp, (policy,))[0]


_STATE: dict = {}

# Relative CPU per window (measured at 10^6 subscribers, 1 h windows): cfr-flow's cells hold
# one named visit each, so its (cell, household) grouping is the largest.
_POLICY_COST = {"route": 6.0, "cgn": 5.0, "cfr-flow": 15.0, "cfr-epoch": 11.0}


def _balanced_groups(policies: tuple[str, ...], workers: int) -> tuple[tuple[str, ...], ...]:
    """Policies dealt to workers, costliest first to the least loaded (LPT scheduling).

    Why: every worker generates each window once for its policies, so the day's wall time
    is the slowest worker's; round-robin put route and cfr-flow together (25 vs 20 s)."""
    load = [0.0] * workers
    groups: list[list[str]] = [[] for _ in range(workers)]
    for pol in sorted(policies, key=lambda q: -_POLICY_COST.get(q, 10.0)):
        i = load.index(min(load))
        groups[i].append(pol)
        load[i] += _POLICY_COST.get(pol, 10.0)
    return tuple(tuple(p for p in policies if p in g) for g in groups if g)


def _forked(policies: tuple[str, ...]) -> list[dict]:
    return stream_policies(_STATE["sp"], policies)


def stream_profile(sp: StreamParams | None = None) -> dict:
    """All policies (in ``workers`` forked processes); per-policy curves and timing."""
    from benchmarks.linkability.profiling import summarise_curve

    sp = sp or StreamParams()
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    if sp.workers > 1 and len(sp.policies) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _STATE["sp"] = sp
        try:
            ctx = multiprocessing.get_context("fork")
            groups = _balanced_groups(sp.policies, sp.workers)
            with ProcessPoolExecutor(max_workers=sp.workers, mp_context=ctx) as ex:
                runs = [r for group in ex.map(_forked, groups) for r in group]
        finally:
            _STATE.clear()
    else:
        runs = stream_policies(sp, sp.policies)
    for r in runs:
        for c in r["curves"].values():
            c["time_to_profiling_s"] = summarise_curve(c["points"])
            c["oracle_time_to_profiling_s"] = summarise_curve(c["points"], "oracle")
    return {
        "params": asdict(sp),
        "policies": {
            r["policy"]: r for r in sorted(runs, key=lambda r: sp.policies.index(r["policy"]))
        },
        "wall_s": time.perf_counter() - t0,
        "load_average_before": load0,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }


def _peak_rss_gib(runs: list[dict]) -> dict[str, float]:
    """Peak RSS of the parent and of each worker; their sum bounds the simultaneous total."""
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    workers: dict[tuple, float] = {}
    for r in runs:
        if r.get("worker_pid") != os.getpid():  # in-process runs are the parent itself
            workers[tuple(r["worker_policies"])] = r["max_rss_gib"]
    return {
        "parent": parent,
        **{"+".join(k): v for k, v in workers.items()},
        "sum": parent + sum(workers.values()),
    }


def main(argv: list[str] | None = None) -> int:
    """Time the streamed model alone: ``python -m benchmarks.linkability.streaming``.

    Prints wall time, the load average before/after, peak RSS per process and their sum,
    and the final AUC per policy and trait, so the issue's performance figure is one command.
    """
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--subscribers", type=int, default=1_000_000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--window-s", type=float, default=3600.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--policies", default="route,cgn,cfr-flow,cfr-epoch")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--progress", action="store_true", help="one line per window on stderr")
    ap.add_argument("--json", metavar="PATH", help="also write the full result here")
    a = ap.parse_args(argv)
    sp = StreamParams(
        base=SimParams(
            subscribers=a.subscribers,
            duration_s=a.hours * 3600.0,
            v6_fraction=0.7,
            epoch_s=300.0,
            seed=a.seed,
        ),
        window_s=a.window_s,
        policies=tuple(a.policies.split(",")),
        checkpoints_h=tuple(h for h in (1, 2, 4, 8, 12, 24, 48) if h <= a.hours),
        workers=a.workers,
        progress=a.progress,
    )
    res = stream_profile(sp)
    runs = list(res["policies"].values())
    rss = _peak_rss_gib(runs)
    la0, la1 = res["load_average_before"], res["load_average_after"]
    print(
        f"{a.subscribers:,} subscribers x {a.hours:g} h, {sp.workers} workers on "
        f"{res['cpus']} CPUs: wall {res['wall_s']:.1f} s ({res['wall_s'] / 60:.1f} min); "
        f"load average {la0[0]:.2f} before, {la1[0]:.2f} after"
    )
    print("peak RSS GiB: " + ", ".join(f"{k} {v:.2f}" for k, v in rss.items()))
    for pol, r in res["policies"].items():
        for trait, c in r["curves"].items():
            if not c["points"]:
                continue
            nh, orc = c["points"][-1]["named_household"], c["points"][-1]["oracle"]
            print(
                f"{pol:10s} {trait:6s} flows {r['flows']:,} cpu {r['cpu_s']:.0f} s  "
                f"AUC {nh['auc']:.4f} TPR@1% {nh['tpr_at_fpr']:.4f}  oracle {orc['auc']:.4f}"
            )
    if a.json:
        from benchmarks.linkability.report import clean_json

        res["peak_rss_gib"] = rss
        with open(a.json, "w") as fh:
            json.dump(clean_json(res), fh, indent=1)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
