"""ISP-scale linkability model: each policy's alias selection applied to a synthetic trace.

No namespaces and no packets: a vectorized trace of flows (who, which device, when, which
site, which TLS ticket) gets the *alias-selection semantics* of each policy applied to it,
and then exactly the linkers and metrics used on the emulated network score it. This is how
the draft's open questions get answers at 10^4..10^6 subscribers, which an emulation cannot
reach; ``validate_against_emulation`` checks the model against the emulation at its scale.

Trace (``generate_trace``): per subscriber (household) a Poisson number of sessions over the
duration (rate ``sessions_per_hour``); a session is on one device (1..``devices_max`` per
household), one site (Zipf over ``sites``; trait households go to one of ``sensitive_sites``
with probability ``sensitive_prob``) and opens 1 + Poisson(``flows_per_session`` - 1)
connections within ``session_spread_s``. TLS resumption: sessions of one (device, site) chain
while consecutive sessions are less than ``ticket_lifetime_s`` apart and the client resumes
(probability ``resume_prob``); a session's first connection is issued the chain's ticket and
its other connections present it with probability ``resume_prob``. Tickets are per site, as
TLS 1.3 binds them to the server name.

Policies (``apply_policy``), the alias the front door sees for each flow:

* ``route``: the subscriber's own address (IPv6, stable per-device IID; port random
  ephemeral). Prefixes: /64 = /56 = the household's; /48 groups ``households_per_48``
  neighbouring households (a /48 holds 256 /56 delegations).
* ``ipv6-temp``: own /64 kept, IID = f(device, floor((t + phase) / temp_lifetime_s)) with a
  random phase per device (RFC 8981 DESYNC).
* ``nptv6``: stable 1:1 prefix translation (RFC 6296): a random permutation of /56s; per
  device addresses stay 1:1.
* ``cgn``: paired pooling (RFC 4787/6888), one stable address per subscriber. With
  ``cgn_block`` None (the default, what the relay does): address = keyed hash of the
  subscriber mod pool, ports kept as the client chose them. With a block size (a CGN with
  RFC 7422-style port blocks, which the relay does not have): subscribers in keyed-hash order
  dealt round-robin over the pool, an aligned block of ``cgn_block`` ports (above 1023) per
  subscriber on that address, random port inside it.
* ``cfr-flow``: alias uniform over the pool for every flow, random port 1024..65535.
* ``cfr-epoch``: alias = keyed_hash(subscriber, epoch) mod pool, epoch = floor(t /
  ``epoch_s``) (global boundaries), random port.

Applied to an emulated trace (``trace_from_flows``, which keeps each flow's own address),
the dual-stack variant ``_apply_to_own_addresses`` is used instead; see its docstring.

With ``v6_fraction`` > 0 the synthetic trace is dual stack (``_synthetic_own_addresses``)
and policies act per family as the relay does (``_apply_to_own_addresses``: cgn on IPv4
only; CFR pools per family; fresh IPv6 aliases every epoch). Otherwise pool policies are
modelled as IPv4-like: their prefix columns equal the address, i.e. an
IPv6 alias pool is assumed to give each alias its own /64 or more. (A pool packed into one
/64 only makes prefix linkers join everything, i.e. chance precision: no worse for privacy.)

Over 400 lines on purpose: the trace generator and each policy's alias choice are one
vectorised model of the relay (relay/policies.py), kept together so that a policy's
semantics are read, and tested, in one place.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from benchmarks.linkability import linkers as lk
from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.metrics import (
    anonymity_sets,
    combine,
    dense,
    destination_exposure,
    pairwise_scores,
    trait_inference,
)

POLICIES: tuple[str, ...] = ("route", "cgn", "nptv6", "ipv6-temp", "cfr-flow", "cfr-epoch")
POOL_POLICIES: tuple[str, ...] = ("cgn", "cfr-flow", "cfr-epoch")
_EPHEMERAL = (32768, 61000)  # Linux default ip_local_port_range
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class SimParams:
    """Trace and policy parameters (defaults: ~20 flows per subscriber per hour)."""

    subscribers: int = 10_000
    duration_s: float = 3600.0
    sessions_per_hour: float = 5.0
    flows_per_session: float = 4.0
    session_spread_s: float = 2.0
    devices_max: int = 4
    sites: int = 1000
    zipf_s: float = 1.0
    trait_fraction: float = 0.1
    sensitive_sites: int = 4
    sensitive_prob: float = 0.25
    resume_prob: float = 0.5
    ticket_lifetime_s: float = 3600.0
    temp_lifetime_s: float = 86400.0
    households_per_48: int = 256
    pool: int | None = None
    subscribers_per_alias: int = 32
    cgn_block: int | None = None
    epoch_s: float = 300.0
    window_s: float = 60.0
    burst_gap_s: float = 30.0
    v6_pool_layout: str = "spread"
    seed: int = 1
    weak_trait_fraction: float = 0.1
    weak_sites: int = 10
    weak_first_rank: int = 30
    weak_prob: float = 0.05
    activity_sigma: float = 0.5
    v6_fraction: float = 0.0

    def pool_size(self) -> int:
        """Alias pool for cgn/cfr-*: ``pool`` or subscribers / ``subscribers_per_alias``."""
        if self.pool is not None:
            return max(1, int(self.pool))
        return max(1, int(np.ceil(self.subscribers / self.subscribers_per_alias)))


@dataclass
class Trace:
    """Ground-truth flows before any policy: what subscribers did."""

    ts: np.ndarray
    household: np.ndarray
    device: np.ndarray
    site: np.ndarray
    sensitive: np.ndarray
    session: np.ndarray | None
    psk: np.ndarray
    issued_flow: np.ndarray
    issued_ticket: np.ndarray
    device_household: np.ndarray
    trait: np.ndarray
    names: dict = field(default_factory=dict)
    own_addr: np.ndarray | None = None
    own_prefix: dict[int, np.ndarray] | None = None
    own_family: np.ndarray | None = None
    weak_trait: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ts.size)

    def weak_signal(self, p: SimParams) -> np.ndarray:
        """Flows on the weak trait's sites (ordinary sites everybody visits, see workload)."""
        lo = p.weak_first_rank - 1
        return (self.site >= lo) & (self.site < lo + p.weak_sites)


def mix64(x: np.ndarray, key: int) -> np.ndarray:
    """Keyed splitmix64 finalizer on uint64: a fast, well-mixed keyed hash for arrays."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + np.uint64(key & 0xFFFFFFFFFFFFFFFF) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _zipf_sample(rng: np.random.Generator, n: int, s: float, size: int) -> np.ndarray:
    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -s)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n - 1).astype(np.int64)


def generate_trace(p: SimParams) -> Trace:
    """Vectorized synthetic trace (see module docstring); no Python loop over flows."""
    rng = np.random.default_rng(p.seed)
    s_n = int(p.subscribers)
    n_dev = rng.integers(1, p.devices_max + 1, s_n)
    dev_start = np.concatenate(([0], np.cumsum(n_dev)[:-1]))
    device_household = np.repeat(np.arange(s_n, dtype=np.int64), n_dev)
    trait = np.zeros(s_n, dtype=bool)
    trait[rng.choice(s_n, size=int(round(p.trait_fraction * s_n)), replace=False)] = True

    # Weak trait and activity from their own stream (see workload.py). Sessions on trait sites
    # come *on top of* ordinary ones (thinning: a trait household's ordinary visits are as
    # many as anyone's), so the count of ordinary visits alone says nothing about the trait.
    rng_w = np.random.default_rng([p.seed, 0x3EA4])
    weak = np.zeros(s_n, dtype=bool)
    weak[rng_w.choice(s_n, size=int(round(p.weak_trait_fraction * s_n)), replace=False)] = True
    sig = p.activity_sigma
    activity = rng_w.lognormal(-0.5 * sig * sig, sig, s_n) if sig > 0 else np.ones(s_n)
    mult = activity / np.where(trait, 1.0 - p.sensitive_prob, 1.0)
    mult /= np.where(weak, 1.0 - p.weak_prob, 1.0)
    n_sess = rng.poisson(p.sessions_per_hour * p.duration_s / 3600.0 * mult)
    sess_hh = np.repeat(np.arange(s_n, dtype=np.int64), n_sess)
    ns = sess_hh.size
    sess_ts = rng.uniform(0.0, p.duration_s, ns)
    sess_dev = dev_start[sess_hh] + (rng.random(ns) * n_dev[sess_hh]).astype(np.int64)
    sess_site = _zipf_sample(rng, p.sites, p.zipf_s, ns)
    go_sens = trait[sess_hh] & (rng.random(ns) < p.sensitive_prob)
    sess_site[go_sens] = p.sites + rng.integers(0, max(1, p.sensitive_sites), int(go_sens.sum()))
    go_weak = weak[sess_hh] & ~go_sens & (rng_w.random(ns) < p.weak_prob)
    sess_site[go_weak] = p.weak_first_rank - 1 + rng_w.integers(0, p.weak_sites, int(go_weak.sum()))

    # Resumption chains over sessions of one (device, site).
    n_site_codes = p.sites + max(1, p.sensitive_sites)
    ds = sess_dev * n_site_codes + sess_site
    tq = np.floor(sess_ts * 1000.0).astype(np.int64)
    order = np.argsort(ds * (int(tq.max(initial=0)) + 1) + tq, kind="stable")
    ds_o, ts_o = ds[order], sess_ts[order]
    start = np.ones(ns, dtype=bool)
    if ns > 1:
        start[1:] = (
            (ds_o[1:] != ds_o[:-1])
            | (np.diff(ts_o) > p.ticket_lifetime_s)
            | (rng.random(ns - 1) >= p.resume_prob)
        )
    chain = np.empty(ns, dtype=np.int64)
    chain[order] = np.cumsum(start) - 1
    resumed_session = np.empty(ns, dtype=bool)
    resumed_session[order] = ~start

    # Flows: 1 + Poisson(m - 1) per session, the first at session start.
    per = 1 + rng.poisson(max(0.0, p.flows_per_session - 1.0), ns)
    f_sess = np.repeat(np.arange(ns, dtype=np.int64), per)
    nf = f_sess.size
    first_idx = np.concatenate(([0], np.cumsum(per)[:-1]))
    is_first = np.zeros(nf, dtype=bool)
    is_first[first_idx] = True
    ts = sess_ts[f_sess] + np.where(is_first, 0.0, rng.uniform(0.0, p.session_spread_s, nf))
    present = np.where(is_first, resumed_session[f_sess], rng.random(nf) < p.resume_prob)
    psk = np.where(present, chain[f_sess], -1).astype(np.int64)
    own = _synthetic_own_addresses(p, rng_w, ns, f_sess, sess_hh, sess_dev, s_n)
    return Trace(
        ts=ts,
        household=sess_hh[f_sess],
        device=sess_dev[f_sess],
        site=sess_site[f_sess],
        sensitive=sess_site[f_sess] >= p.sites,
        session=f_sess,
        psk=psk,
        issued_flow=first_idx.astype(np.int64),
        issued_ticket=chain,
        device_household=device_household,
        trait=trait,
        weak_trait=weak,
        **own,
    )


def _synthetic_own_addresses(
    p: SimParams,
    rng: np.random.Generator,
    ns: int,
    f_sess: np.ndarray,
    sess_hh: np.ndarray,
    sess_dev: np.ndarray,
    s_n: int,
) -> dict:
    """Dual stack for a synthetic trace (``v6_fraction`` > 0), as the emulation runs it.

    A session is IPv6 with probability ``v6_fraction``. Own addresses: IPv4 one per household
    (home NAT); IPv6 one stable address per device inside the household's /56 (a /48 holds
    ``households_per_48`` households). With them ``apply_policy`` takes the per-family,
    relay-matching path (``_apply_to_own_addresses``). ``v6_fraction`` 0 keeps the older
    single-family (IPv4-like) model.
    """
    if p.v6_fraction <= 0:
        return {}
    v6 = (rng.random(ns) < p.v6_fraction)[f_sess]
    hh, dev = sess_hh[f_sess], sess_dev[f_sess]
    off = np.int64(1) << 36  # IPv4 codes live apart from IPv6 prefix codes
    addr = np.where(v6, s_n + dev, hh).astype(np.int64)
    prefix = {
        64: np.where(v6, hh, off + hh),
        56: np.where(v6, hh, off + hh),
        48: np.where(v6, hh // max(1, p.households_per_48), off + hh),
    }
    return {
        "own_addr": addr,
        "own_prefix": prefix,
        "own_family": np.where(v6, 6, 4).astype(np.int8),
    }


def trace_from_flows(ft: FlowTable, trait: np.ndarray) -> Trace:
    """Re-use an emulated trace (ground truth + tickets) so policies can be re-applied to it."""
    lab = ft.labelled()
    dev, n_dev = dense(lab.device)
    dev_hh = np.zeros(n_dev, dtype=np.int64)
    dev_hh[dev] = lab.household
    return Trace(
        ts=lab.ts,  # absolute: epoch and window boundaries as the relay and analysis see them
        household=lab.household.astype(np.int64),
        device=dev,
        site=lab.site.astype(np.int64),
        sensitive=lab.sensitive.astype(bool),
        session=np.arange(len(lab)) if lab.session is None else lab.session,
        psk=lab.psk,
        issued_flow=lab.issued_flow,
        issued_ticket=lab.issued_ticket,
        device_household=dev_hh,
        trait=np.asarray(trait, dtype=bool),
        names=lab.names,
        own_addr=lab.own_addr,
        own_prefix=lab.own_prefix,
        own_family=lab.own_family,
    )


def _policy_rng(policy: str, p: SimParams) -> tuple[np.random.Generator, int]:
    rng = np.random.default_rng([p.seed, POLICIES.index(policy) if policy in POLICIES else 99])
    return rng, int(mix64(np.array([p.seed], dtype=np.uint64), 0x5EED)[0])


def _apply_to_own_addresses(trace: Trace, policy: str, p: SimParams) -> FlowTable:
    """Trace-driven variant for an emulated trace that knows each flow's own address.

    Dual stack as the emulated network runs it: ``route``/``nptv6``/``ipv6-temp`` leave the
    clustering of own addresses unchanged (NPTv6 is a 1:1 renaming; temporary addresses are
    already in the trace); ``cgn`` translates IPv4 flows only (IPv6 is routed); the CFR
    policies draw IPv4 and IPv6 aliases from separate pools of ``pool`` aliases each. The
    IPv6 pool layout (``SimParams.v6_pool_layout``) must match the relay's: ``spread`` (each
    alias in its own /48 or more, prefix linkers see no more than addresses) or ``one-64``
    (all aliases in one /64, prefix linkers join every IPv6 pool flow).
    """
    assert trace.own_addr is not None and trace.own_prefix is not None
    assert trace.own_family is not None
    rng, key = _policy_rng(policy, p)
    n, hh = len(trace), trace.household
    pool = p.pool_size()
    fam = trace.own_family.astype(np.int8)
    v4 = fam == 4
    base = int(trace.own_addr.max(initial=0)) + 1  # alias codes never collide with own ones
    addr = trace.own_addr.astype(np.int64).copy()
    port = rng.integers(*_EPHEMERAL, n)
    prefix = {b: c.astype(np.int64).copy() for b, c in trace.own_prefix.items()}
    if policy in ("route", "nptv6", "ipv6-temp"):  # the testbed runs nptv6 with v4 = route
        pass
    elif policy == "cgn":
        if p.cgn_block is None:
            # The relay: jhash(subscriber address) with a fixed seed, ports kept as chosen.
            addr[v4] = base + (mix64(hh[v4], key) % np.uint64(pool)).astype(np.int64)
        else:
            n_hh = int(trace.trait.size)
            rank = np.empty(n_hh, dtype=np.int64)
            rank[np.argsort(mix64(np.arange(n_hh), key), kind="stable")] = np.arange(n_hh)
            first = -(-1024 // p.cgn_block) * p.cgn_block
            blocks = max(1, (65536 - first) // p.cgn_block)
            addr[v4] = base + rank[hh[v4]] % pool
            port[v4] = (
                first
                + ((rank[hh[v4]] // pool) % blocks) * p.cgn_block
                + rng.integers(0, p.cgn_block, int(v4.sum()))
            )
    elif policy in ("cfr-flow", "cfr-epoch"):
        epoch = np.floor(trace.ts / p.epoch_s).astype(np.int64)
        if policy == "cfr-flow":
            idx = rng.integers(0, pool, n)
        else:
            # jhash(IPv4 address) and jhash(IPv6 /56) with the epoch's seed: independent
            # indices per family, like the relay's two rules.
            with np.errstate(over="ignore"):
                salt = mix64(fam.astype(np.uint64), key + 2)
                k = mix64(hh.astype(np.uint64) ^ mix64(epoch, key + 1) ^ salt, key)
            idx = (k % np.uint64(pool)).astype(np.int64)
        # IPv6 aliases are derived afresh every epoch (relay/epoch.py v6_aliases), for
        # cfr-flow too; the IPv4 pool is fixed.
        e_rel = epoch - epoch.min(initial=0)
        addr = base + np.where(v4, idx, pool + e_rel * pool + idx)
        port = rng.integers(1024, 65536, n)
    else:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    if policy in POOL_POLICIES:
        translated = v4 if policy == "cgn" else np.ones(n, dtype=bool)
        # Translated prefixes go above every own prefix code: injective and order-preserving
        # as an offset of 2^40 was, but small, so ``metrics.dense`` stays on its bincount
        # path (a 2^40 offset sent it to np.unique: an argsort of every flow, 10 s per
        # window at 10^6 subscribers).
        shift = 1 + max((int(c.max(initial=-1)) for c in prefix.values()), default=-1)
        for b in prefix:
            prefix[b][translated] = addr[translated] + shift
        if policy != "cgn" and p.v6_pool_layout == "one-64":
            for b in prefix:
                prefix[b][~v4] = 1 << 41  # every IPv6 alias inside one /64
        elif p.v6_pool_layout != "spread":
            raise ValueError(
                f"v6_pool_layout must be 'spread' or 'one-64', not {p.v6_pool_layout!r}"
            )
    return FlowTable(
        ts=trace.ts,
        household=hh,
        device=trace.device,
        site=trace.site,
        sensitive=trace.sensitive,
        family=fam,
        addr=addr,
        port=np.asarray(port, dtype=np.int64),
        prefix=prefix,
        psk=trace.psk,
        issued_flow=trace.issued_flow,
        issued_ticket=trace.issued_ticket,
        session=trace.session,
        names=trace.names,
    )


def apply_policy(trace: Trace, policy: str, p: SimParams) -> FlowTable:
    """The front door's view of ``trace`` under ``policy`` (see module docstring)."""
    if trace.own_addr is not None and trace.own_prefix is not None:
        return _apply_to_own_addresses(trace, policy, p)
    rng, key = _policy_rng(policy, p)
    n = len(trace)
    hh = trace.household
    n_hh = int(trace.trait.size)
    pool = p.pool_size()
    ephemeral = rng.integers(*_EPHEMERAL, n)
    random_port = rng.integers(1024, 65536, n)
    pfx48 = hh // max(1, p.households_per_48)
    if policy == "route":
        addr, port, fam = trace.device, ephemeral, 6
        prefix = {64: hh, 56: hh, 48: pfx48}
    elif policy == "ipv6-temp":
        phase = rng.uniform(0.0, p.temp_lifetime_s, int(trace.device_household.size))
        gen = np.floor((trace.ts + phase[trace.device]) / p.temp_lifetime_s).astype(np.int64)
        addr, port, fam = combine(trace.device, gen - gen.min(initial=0)), ephemeral, 6
        prefix = {64: hh, 56: hh, 48: pfx48}
    elif policy == "nptv6":
        perm = rng.permutation(max(n_hh, 1))
        ext = perm[hh]
        addr, port, fam = trace.device, ephemeral, 6
        prefix = {64: ext, 56: ext, 48: ext // max(1, p.households_per_48)}
    elif policy == "cgn":
        # Subscribers in keyed-hash order dealt round-robin over the pool: balanced and
        # stable. Aligned port blocks above the well-known ports, one per subscriber on its
        # address (shared only when the address holds more subscribers than blocks).
        if p.cgn_block is None:
            # The relay: jhash(subscriber) with a fixed seed, ports kept (random ephemeral).
            addr = (mix64(hh, key) % np.uint64(pool)).astype(np.int64)
            port = ephemeral
        else:
            rank = np.empty(n_hh, dtype=np.int64)
            rank[np.argsort(mix64(np.arange(n_hh), key), kind="stable")] = np.arange(n_hh)
            sub_addr = rank % pool
            first = -(-1024 // p.cgn_block) * p.cgn_block
            blocks = max(1, (65536 - first) // p.cgn_block)
            block = (rank // pool) % blocks
            addr = sub_addr[hh]
            port = first + block[hh] * p.cgn_block + rng.integers(0, p.cgn_block, n)
        fam, prefix = 4, None
    elif policy == "cfr-flow":
        addr, port, fam, prefix = rng.integers(0, pool, n), random_port, 4, None
    elif policy == "cfr-epoch":
        epoch = np.floor(trace.ts / p.epoch_s).astype(np.int64)
        with np.errstate(over="ignore"):
            k = mix64(hh.astype(np.uint64) ^ mix64(epoch, key + 1), key)
        addr, port, fam, prefix = (k % np.uint64(pool)).astype(np.int64), random_port, 4, None
    else:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    addr = np.asarray(addr, dtype=np.int64)
    if prefix is None:
        prefix = {64: addr, 56: addr, 48: addr}
    return FlowTable(
        ts=trace.ts,
        household=hh,
        device=trace.device,
        site=trace.site,
        sensitive=trace.sensitive,
        family=np.full(n, fam, dtype=np.int8),
        addr=addr,
        port=np.asarray(port, dtype=np.int64),
        prefix={b: np.asarray(c, dtype=np.int64) for b, c in prefix.items()},
        psk=trace.psk,
        issued_flow=trace.issued_flow,
        issued_ticket=trace.issued_ticket,
        session=trace.session,
        names=trace.names,
    )


def model_linkers(p: SimParams) -> dict[str, lk.Linker]:
    """The linker set used at ISP scale (time-burst left out: at 10^5+ subscribers a
    sub-second window holds thousands of unrelated flows, so it joins everything)."""
    return {
        "addr": lk.same_address,
        "v6/64": lk.same_prefix(64),
        "v6/56": lk.same_prefix(56),
        "v6/48": lk.same_prefix(48),
        f"port-block-{p.cgn_block or 1024}": lk.port_block(p.cgn_block or 1024),
        f"addr-burst-{p.burst_gap_s:g}s": lk.address_burst(p.burst_gap_s),
        "resumption": lk.resumption,
        "addr+resumption": lk.union(lk.same_address, lk.resumption),
    }


def evaluate(
    ft: FlowTable,
    trait: np.ndarray,
    linkers: dict[str, lk.Linker],
    window_s: float = 60.0,
    profile_linkers: tuple[str, ...] | None = ("addr",),
    cache: dict | None = None,
) -> dict:
    """All metrics for one policy: pairwise per linker, anonymity, exposure, trait inference.

    ``profile_linkers`` limits the (costlier) exposure and trait metrics to some linkers; None
    means all. ``cache`` (name -> labels) lets callers reuse policy-independent linkers such as
    ``resumption``. Linkers returning the very same array share one score computation.
    """
    ft = ft if (ft.household >= 0).all() else ft.labelled()
    out: dict = {"flows": len(ft), "households": int(np.unique(ft.household).size)}
    pair: dict[str, dict] = {}
    labels_by_name: dict[str, np.ndarray] = {}
    seen: dict[int, dict] = {}
    dense_of: dict[int, np.ndarray] = {}
    raw_refs: list[np.ndarray] = []  # keeps raw arrays alive so their id()s stay unique
    for name, linker in linkers.items():
        raw = cache[name] if cache is not None and name in cache else linker(ft)
        labels = dense_of.get(id(raw))
        if labels is None:
            # Renumber once so every metric below takes its bincount fast path.
            labels = dense(raw)[0]
            dense_of[id(raw)] = labels
            raw_refs.append(raw)
        labels_by_name[name] = labels
        score = seen.get(id(labels))
        if score is None:
            score = pairwise_scores(ft.household, labels).as_dict()
            seen[id(labels)] = score
        pair[name] = score
    out["pairwise"] = pair
    best = lk.best_single({k: v["f1"] for k, v in pair.items()})
    out["best_single"] = best
    out["anonymity"] = anonymity_sets(ft.ts, ft.addr, ft.household, window_s).as_dict()
    if profile_linkers is None and best is not None:
        # The alias as the best linker sees it (e.g. address + port block under CGN): the
        # anonymity an adversary using that signal actually faces.
        out["anonymity_best"] = anonymity_sets(
            ft.ts, labels_by_name[best], ft.household, window_s
        ).as_dict()
    names = (
        list(linkers) if profile_linkers is None else [n for n in profile_linkers if n in linkers]
    )
    if best is not None and best not in names:
        names.append(best)
    out["exposure"] = {
        n: destination_exposure(ft.household, ft.site, labels_by_name[n]).as_dict() for n in names
    }
    # Ceiling: an oracle that clusters by true household; below 1 when some trait households
    # never visited a sensitive site during the trace.
    out["trait_ceiling"] = trait_inference(
        ft.household, ft.sensitive, ft.household, trait
    ).as_dict()
    out["trait"] = {
        n: trait_inference(ft.household, ft.sensitive, labels_by_name[n], trait).as_dict()
        for n in names
    }
    return out


_FORK_STATE: dict = {}


def _evaluate_forked(policy: str) -> tuple[str, dict, float]:
    """Worker body: the trace and linkers come from the parent by fork (nothing pickled)."""
    st = _FORK_STATE
    t1 = time.perf_counter()
    ft = apply_policy(st["trace"], policy, st["p"])
    res = evaluate(ft, st["trace"].trait, st["linkers"], st["p"].window_s, cache=st["cache"])
    return policy, res, time.perf_counter() - t1


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def simulate(
    p: SimParams,
    policies: tuple[str, ...] = POLICIES,
    linkers: dict[str, lk.Linker] | None = None,
    trace: Trace | None = None,
    workers: int = 1,
) -> dict:
    """Generate (or take) a trace, apply each policy, score it; returns a JSON-able dict.

    ``workers`` > 1 evaluates policies in forked processes (Linux): the trace is shared
    copy-on-write and each worker needs about 3 GB at 10^6 subscribers x 1 h. Results do not
    depend on ``workers``: every policy draws from its own seeded generator.
    """
    t0, c0, cc0 = time.perf_counter(), time.process_time(), _children_cpu()
    trace = trace if trace is not None else generate_trace(p)
    t_trace = time.perf_counter() - t0
    linkers = linkers if linkers is not None else model_linkers(p)
    cache: dict[str, np.ndarray] = {}
    if "resumption" in linkers:
        # Ticket chains do not depend on the alias policy: compute once.
        cache["resumption"] = lk.resumption(apply_policy(trace, "route", p))
    results: dict = {}
    timings: dict = {"trace_s": t_trace, "workers": workers}
    if workers > 1 and len(policies) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _FORK_STATE.update(trace=trace, p=p, linkers=linkers, cache=cache)
        try:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
                for pol, res, secs in ex.map(_evaluate_forked, policies):
                    results[pol] = res
                    timings[pol] = secs
        finally:
            _FORK_STATE.clear()
    else:
        for pol in policies:
            t1 = time.perf_counter()
            ft = apply_policy(trace, pol, p)
            results[pol] = evaluate(ft, trace.trait, linkers, p.window_s, cache=cache)
            timings[pol] = time.perf_counter() - t1
    lk.forget_memo()
    timings["total_s"] = time.perf_counter() - t0
    # CPU seconds of this process and its workers: robust to other load on shared cores.
    timings["cpu_s"] = time.process_time() - c0 + _children_cpu() - cc0
    return {
        "params": asdict(p),
        "pool": p.pool_size(),
        "flows": len(trace),
        "subscribers": int(p.subscribers),
        "policies": {pol: results[pol] for pol in policies},
        "timings": timings,
    }


# Tolerances for model-vs-emulation agreement at the emulated scale.
DEFAULT_TOLERANCE: dict[str, float] = {
    "precision_abs": 0.10,
    "recall_abs": 0.15,
    "f1_abs": 0.10,
    "anonymity_rel": 0.25,
    "anonymity_abs_floor": 1.0,
    "auc_abs": 0.10,
}


def _get(d: dict, *path: str) -> float:
    cur: object = d
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return float("nan")
        cur = cur[k]
    try:
        return float(cur)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _auc_se(trait: dict) -> float:
    """Hanley-McNeil (1982) standard error of an AUC from its positives and negatives."""
    a, n, prev = trait.get("auc"), trait.get("households"), trait.get("prevalence")
    if a is None or n is None or prev is None or not np.isfinite(a):
        return 0.0
    n_pos, n_neg = round(prev * n), n - round(prev * n)
    if n_pos < 1 or n_neg < 1:
        return 0.0
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def validate_against_emulation(
    emulated_metrics: dict,
    sim_metrics: dict,
    tolerance: dict[str, float] | None = None,
    linkers: tuple[str, ...] = ("addr", "v6/64"),
) -> list[dict]:
    """Compare per-policy metrics of the emulation and of the model at the same scale.

    Both inputs map policy -> ``evaluate()`` output (``simulate()['policies']`` or the
    ``policies`` part of ``analyse_emulation``). Checks, per policy present in both:
    pairwise precision/recall/F1 of each linker in ``linkers`` within an absolute tolerance
    (default |delta| <= 0.10, 0.15, 0.10), median anonymity set within 25 % (or 1 subscriber,
    whichever is larger), and trait AUC of the address linker within max(0.10, 2 sigma) where
    sigma combines both AUCs' Hanley-McNeil standard errors (with 20 trait households out of
    200 one AUC alone has sigma ~ 0.07, so a fixed 0.10 would fail on noise). A metric that is
    NaN on both sides passes (both undefined); NaN on one side fails.
    Returns rows: policy, metric, emulated, simulated, delta, tolerance, passed.
    """
    tol = {**DEFAULT_TOLERANCE, **(tolerance or {})}
    rows: list[dict] = []

    def check(policy: str, metric: str, e: float, s: float, allowed: float, kind: str) -> None:
        both_nan = np.isnan(e) and np.isnan(s)
        delta = s - e
        ok = bool(both_nan or (np.isfinite(delta) and abs(delta) <= allowed + 1e-12))
        rows.append(
            {
                "policy": policy,
                "metric": metric,
                "emulated": e,
                "simulated": s,
                "delta": delta,
                "tolerance": f"{kind} {allowed:g}",
                "passed": ok,
            }
        )

    for policy in (p for p in POLICIES if p in emulated_metrics and p in sim_metrics):
        em, sm = emulated_metrics[policy], sim_metrics[policy]
        for ln in linkers:
            for m in ("precision", "recall", "f1"):
                check(
                    policy,
                    f"{ln} {m}",
                    _get(em, "pairwise", ln, m),
                    _get(sm, "pairwise", ln, m),
                    tol[f"{m}_abs"],
                    "|d| <=",
                )
        e = _get(em, "anonymity", "size", "median")
        s = _get(sm, "anonymity", "size", "median")
        allowed = (
            max(tol["anonymity_rel"] * abs(e), tol["anonymity_abs_floor"]) if np.isfinite(e) else 0
        )
        check(policy, "anonymity median", e, s, allowed, "|d| <=")
        e_auc, s_auc = _get(em, "trait", "addr", "auc"), _get(sm, "trait", "addr", "auc")
        noise = np.hypot(
            _auc_se(em.get("trait", {}).get("addr", {})),
            _auc_se(sm.get("trait", {}).get("addr", {})),
        )
        check(policy, "trait auc (addr)", e_auc, s_auc, max(tol["auc_abs"], 2.0 * noise), "|d| <=")
    return rows


def with_params(p: SimParams, **changes: object) -> SimParams:
    """A copy of ``p`` with some fields changed (sweeps)."""
    return replace(p, **changes)


def trace_from_workload(workload: object, base_ts: float = 0.0) -> Trace:
    """The model's trace from the emulation's own workload (``workload.Workload``).

    One workload generator then drives both sides: the load generator replays these records
    (one connection per record: it reuses the connection for a page's sub-resources), and
    the model applies each policy's alias choice to the very same sessions, devices, own
    addresses, sites and traits. No TLS tickets (the model does not know which the client
    will present). ``base_ts`` shifts the records' relative times onto the clock the relay's
    epochs run on.
    """
    import ipaddress

    from benchmarks.linkability.flows import PREFIX_BITS, factorize

    def _prefix_key(addr: str, bits: int) -> str:
        ip = ipaddress.ip_address(addr)
        if ip.version == 4:
            return f"v4:{ip}"  # IPv4 keeps its own key space (as observations.py does)
        return str(ipaddress.IPv6Network((int(ip) >> (128 - bits) << (128 - bits), bits)))

    recs = workload.records  # type: ignore[attr-defined]
    table = workload.household_table()  # type: ignore[attr-defined]
    hh_names = [h["household"] for h in table["households"]]
    hh_code = {h: i for i, h in enumerate(hh_names)}
    sens = set(table.get("sensitive_sites", []))
    n = len(recs)
    household = np.array([hh_code[r["household"]] for r in recs], dtype=np.int64)
    device, dev_names = factorize([r["device"] for r in recs])
    site, site_names = factorize([r["site"] for r in recs])
    own = [r["source"] for r in recs]
    own_addr, _ = factorize(own)
    dev_hh = np.zeros(len(dev_names), dtype=np.int64)
    dev_hh[device] = household
    empty = np.zeros(0, dtype=np.int64)
    return Trace(
        ts=base_ts + np.array([float(r["t"]) for r in recs]),
        household=household,
        device=device,
        site=site,
        sensitive=np.array([r["site"] in sens for r in recs], dtype=bool),
        session=np.arange(n, dtype=np.int64),
        psk=np.full(n, -1, dtype=np.int64),
        issued_flow=empty,
        issued_ticket=empty,
        device_household=dev_hh,
        trait=np.array([bool(h.get("trait")) for h in table["households"]], dtype=bool),
        names={"household": hh_names, "device": dev_names, "site": site_names},
        own_addr=own_addr,
        own_prefix={b: factorize([_prefix_key(a, b) for a in own])[0] for b in PREFIX_BITS},
        own_family=np.array([6 if ":" in a else 4 for a in own], dtype=np.int8),
        weak_trait=np.array([bool(h.get("weak_trait")) for h in table["households"]], bool),
    )
