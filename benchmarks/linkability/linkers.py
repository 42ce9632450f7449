"""Adversaries: ways the ECH front door can join flows, each returning a clustering.

A linker is a function ``FlowTable -> int64 array`` giving a cluster id per flow (flows with
equal ids are claimed to be one subscriber). Every linker uses only what the front door sees:
source address and port, timing, and TLS resumption identities; never ground truth.

* ``same_address``: one cluster per observed source address.
* ``same_prefix(bits)``: one cluster per IPv6 /bits prefix (RFC 8981 temporary addresses only
  change the interface ID, so /64 undoes them; /56 joins a household's /64s, /48 neighbours).
  IPv4 flows fall back to their address.
* ``port_block(size)``: same address and port in the same aligned block of ``size`` ports:
  the signature of CGN port-block allocation (RFC 7422 style), which turns a shared address
  back into a per-subscriber key.
* ``address_burst(gap)``: flows on one address chained while they start within ``gap``
  seconds of the previous one: a browsing session. Splits long-lived shared aliases into
  per-session clusters (higher precision than ``same_address`` under sharing).
* ``time_burst(window)``: address-independent: flows chained while each starts within
  ``window`` seconds of the previous flow at the front door (a page's sub-resource fetches
  arrive together, whatever alias each one got).
* ``resumption``: TLS 1.3 resumption: flows presenting the same ticket identity are joined,
  and joined to the connection that was issued that ticket (``issued_ticket_hashes``).
  Tickets are bound to the inner server name, so this links visits *to one site* across
  aliases; joined with an address linker it chains across sites.
* ``same_connection``: rows of one front-door connection are one client. A browser keeps
  its HTTP/2 connection open and coalesces visits to other sites onto it when they resolve
  to the same front-door address and the certificate covers them (RFC 9113 sec. 9.1.1); the
  front door serves those requests, so it knows the sites were visited by one device,
  whatever alias the relay gave the connection. Rows come from the log's optional ``hosts``
  (``observations.CONN_COLUMN``); without it every row is its own connection.
* ``same_code(name)``: one cluster per value of an adversary-visible per-flow code in
  ``FlowTable.extra`` (a fingerprint); unobserved (-1) flows stay alone.
* ``alias_epoch(epoch_s)``: (alias, family, epoch) cells, the epoch length *inferred* from
  the observations when not given (``adversary.infer_epoch``, alias-lifetime method: it needs
  no names; the IPv6 estimate serves IPv4 too, the relay has one schedule). Under
  ``cfr-epoch`` this is the per-epoch pseudonym; under ``cfr-flow`` it joins nothing real.
* ``epoch_continuity(gap)``: alias-epoch cells chained across each epoch boundary when the
  last cell to end before it and the first to start after it are within ``gap`` seconds (a
  browsing burst that straddles the rotation), per family.
* ``rare_destination(max_cells)``: statistical disclosure without names: alias-epoch cells
  that share a destination seen in at most ``max_cells`` cells overall are joined (a
  household's long-tail sites recur across epochs; popular sites say nothing).
* ``v4v6_pairing(window)``: joins a household's IPv4 and IPv6 keys: for each IPv4 key
  (address, /56 for IPv6) the IPv6 key with the most co-visits (the same destination from
  both families within ``window`` s, or one TLS ticket presented over both), kept when the
  choice is mutual and rests on at least ``min_count`` co-visits.
* ``union(*linkers)``: connected components of the union of the linkers' link graphs (an
  adversary using every signal). Unions only ever merge, so recall rises and precision
  usually falls.
* ``intersection(*linkers)``: flows are joined only when every linker joins them (the
  conservative combination: precision rises).

``best_single`` picks, per policy, the linker with the highest F1 in a score table: an upper
bound on an adversary who already knows which signal works best against that policy.

Over 400 lines on purpose: the catalogue of linkers, each a small function over one
FlowTable, read side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from benchmarks.linkability.adversary import adversary_cells, infer_epoch
from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.metrics import combine, dense, group_counts

Linker = Callable[[FlowTable], np.ndarray]


def same_address(ft: FlowTable) -> np.ndarray:
    """One cluster per observed source address."""
    return np.asarray(ft.addr, dtype=np.int64)


def same_prefix(bits: int) -> Linker:
    """One cluster per observed IPv6 /``bits`` prefix (IPv4: per address)."""

    def link(ft: FlowTable) -> np.ndarray:
        if bits not in ft.prefix:
            raise KeyError(f"flow table has no /{bits} prefix column")
        return np.asarray(ft.prefix[bits], dtype=np.int64)

    link.__name__ = f"same_prefix_{bits}"
    return link


def port_block(size: int) -> Linker:
    """Same address and same aligned block of ``size`` source ports."""

    def link(ft: FlowTable) -> np.ndarray:
        return combine(ft.addr, np.asarray(ft.port, dtype=np.int64) // size)

    link.__name__ = f"port_block_{size}"
    return link


def _chain_by_gap(key: np.ndarray, ts: np.ndarray, gap: float) -> np.ndarray:
    """Cluster ids: within each key, sort by time and cut where consecutive starts exceed gap."""
    n = ts.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k, _ = dense(key)
    # One argsort on a combined key is several times faster than lexsort at 10^7 rows.
    tmin = float(ts.min())
    tq = np.floor((ts - tmin) * 1000.0).astype(np.int64)  # ms resolution for ordering only
    span = int(tq.max()) + 1
    if (int(k.max()) + 1) * span < np.iinfo(np.int64).max:
        order = np.argsort(k * span + tq, kind="stable")
    else:
        order = np.lexsort((ts, k))
    ks, tss = k[order], ts[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (ks[1:] != ks[:-1]) | (np.diff(tss) > gap)
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.cumsum(new) - 1
    return labels


def address_burst(gap: float) -> Linker:
    """Flows on one address chained while each starts within ``gap`` s of the previous."""

    def link(ft: FlowTable) -> np.ndarray:
        return _chain_by_gap(ft.addr, ft.ts, gap)

    link.__name__ = f"address_burst_{gap:g}"
    return link


def time_burst(window: float) -> Linker:
    """Address-independent: flows chained while each starts within ``window`` s of the last."""

    def link(ft: FlowTable) -> np.ndarray:
        return _chain_by_gap(np.zeros(len(ft), dtype=np.int64), ft.ts, window)

    link.__name__ = f"time_burst_{window:g}"
    return link


def _components(
    n_flows: int, n_other: int, flow_idx: np.ndarray, other_idx: np.ndarray
) -> np.ndarray:
    """Connected components of the bipartite graph flows--other nodes; labels for flows only."""
    n = n_flows + n_other
    if n_flows == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.asarray(flow_idx, dtype=np.int64)
    cols = np.asarray(other_idx, dtype=np.int64) + n_flows
    data = np.ones(rows.size, dtype=np.int8)
    graph = coo_matrix((data, (rows, cols)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return dense(labels[:n_flows])[0]


# The ticket columns do not depend on the alias policy, so the model re-applies policies to
# one trace with the very same arrays; remember the last answer (held by reference, compared
# with ``is``, so a reused id() can never return a stale result).
_RESUMPTION_MEMO: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []


def resumption(ft: FlowTable) -> np.ndarray:
    """Join flows sharing a presented ticket, and each ticket to the flow it was issued on."""
    for psk, iss_f, iss_t, labels in _RESUMPTION_MEMO:
        if psk is ft.psk and iss_f is ft.issued_flow and iss_t is ft.issued_ticket:
            return labels
    labels = _resumption(ft)
    _RESUMPTION_MEMO[:] = [(ft.psk, ft.issued_flow, ft.issued_ticket, labels)]
    return labels


def forget_memo() -> None:
    """Drop the remembered resumption labels (frees the arrays they hold)."""
    _RESUMPTION_MEMO.clear()


def _resumption(ft: FlowTable) -> np.ndarray:
    n = len(ft)
    presented = np.flatnonzero(ft.psk >= 0)
    flow_idx = np.concatenate((presented, ft.issued_flow)).astype(np.int64)
    tickets = np.concatenate((ft.psk[presented], ft.issued_ticket)).astype(np.int64)
    if tickets.size == 0:
        return np.arange(n, dtype=np.int64)
    t_codes, n_t = dense(tickets)
    return _components(n, n_t, flow_idx, t_codes)


def same_code(name: str) -> Linker:
    """One cluster per value of ``ft.extra[name]``; unobserved (-1) flows are singletons."""

    def link(ft: FlowTable) -> np.ndarray:
        if name not in ft.extra:
            raise KeyError(f"flow table has no extra column {name!r}")
        code = np.asarray(ft.extra[name], dtype=np.int64).copy()
        miss = code < 0
        code[miss] = int(code.max(initial=0)) + 1 + np.arange(int(miss.sum()))
        return code

    link.__name__ = f"same_code_{name}"
    return link


def same_connection(ft: FlowTable) -> np.ndarray:
    """One cluster per front-door connection (``extra["conn"]``); rows without one, or tables
    without the column (the model's traces), stay alone."""
    col = ft.extra.get("conn")
    if col is None:
        return np.arange(len(ft), dtype=np.int64)
    return same_code("conn")(ft)


def _epoch_lengths(ft: FlowTable, epoch_s: float | None) -> dict[int, float | None]:
    if epoch_s is not None:
        return {4: epoch_s, 6: epoch_s}
    est = infer_epoch(ft, named=np.zeros(len(ft), dtype=bool)).by_family
    one = est.get(6) or est.get(4)
    return {4: est.get(4) or one, 6: est.get(6) or one}


def alias_epoch(epoch_s: float | None = None) -> Linker:
    """(alias, family, epoch) cells; epoch length inferred when ``epoch_s`` is None."""

    def link(ft: FlowTable) -> np.ndarray:
        return adversary_cells(ft, "cfr-epoch", _epoch_lengths(ft, epoch_s))

    link.__name__ = "alias_epoch" if epoch_s is None else f"alias_epoch_{epoch_s:g}"
    return link


def _merge(n_nodes: int, labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Relabel flows after joining node pairs (a[i], b[i]) of the node ids in ``labels``."""
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes)).tocsr()
    _, comp = connected_components(graph, directed=False)
    return dense(comp[labels])[0]


def epoch_continuity(gap: float = 2.0, epoch_s: float | None = None) -> Linker:
    """Alias-epoch cells chained over each boundary by the burst that straddles it."""

    def link(ft: FlowTable) -> np.ndarray:
        lengths = _epoch_lengths(ft, epoch_s)
        cells = adversary_cells(ft, "cfr-epoch", lengths)
        n_c = int(cells.max(initial=-1)) + 1
        a_all, b_all = [], []
        for fam in (4, 6):
            length = lengths.get(fam)
            m = ft.family == fam
            if length is None or not m.any():
                continue
            c, t = cells[m], ft.ts[m]
            first = np.full(n_c, np.inf)
            last = np.full(n_c, -np.inf)
            np.minimum.at(first, c, t)
            np.maximum.at(last, c, t)
            present = np.unique(c)
            f, la = first[present], last[present]
            b_end = np.floor(la / length).astype(np.int64) + 1  # the boundary after the cell
            # per boundary: the last cell to end before it, the first to start after it
            order_end = np.lexsort((la, b_end))
            be = b_end[order_end]
            last_of = np.flatnonzero(np.r_[be[1:] != be[:-1], True])
            enders = dict(zip(be[last_of].tolist(), order_end[last_of].tolist(), strict=True))
            b_start = np.floor(f / length).astype(np.int64)
            order_start = np.lexsort((f, b_start))
            bs = b_start[order_start]
            first_of = np.flatnonzero(np.r_[True, bs[1:] != bs[:-1]])
            for bnd, j in zip(bs[first_of].tolist(), order_start[first_of].tolist(), strict=True):
                i = enders.get(bnd)
                if i is not None and f[j] - la[i] <= gap:
                    a_all.append(present[i])
                    b_all.append(present[j])
        if not a_all:
            return cells
        return _merge(n_c, cells, np.array(a_all), np.array(b_all))

    link.__name__ = f"epoch_continuity_{gap:g}"
    return link


def rare_destination(max_cells: int = 2, epoch_s: float | None = None) -> Linker:
    """Alias-epoch cells joined through destinations seen in at most ``max_cells`` cells."""

    def link(ft: FlowTable) -> np.ndarray:
        cells = adversary_cells(ft, "cfr-epoch", _epoch_lengths(ft, epoch_s))
        n_c = int(cells.max(initial=-1)) + 1
        site, n_s = dense(ft.site)
        keys, _ = group_counts(site * n_c + cells)  # distinct (site, cell)
        ks, kc = keys // n_c, keys % n_c
        per_site = np.bincount(ks, minlength=n_s)
        rare = per_site[ks] <= max_cells
        if not rare.any():
            return cells
        return _components(n_c, n_s, kc[rare], ks[rare])[cells]

    link.__name__ = f"rare_destination_{max_cells}"
    return link


def v4v6_pairing(window: float = 60.0, min_count: int = 2) -> Linker:
    """Join each IPv4 key with the IPv6 key it mutually co-visits most (see module doc)."""

    def link(ft: FlowTable) -> np.ndarray:
        key = dense(np.asarray(ft.prefix.get(56, ft.addr)))[0]
        n_k = int(key.max(initial=-1)) + 1
        v6 = ft.family == 6
        # Co-visits: consecutive flows to one site, one per family, within the window.
        order = np.lexsort((ft.ts, ft.site))
        s, t, f, k = ft.site[order], ft.ts[order], v6[order], key[order]
        adj = (s[1:] == s[:-1]) & (f[1:] != f[:-1]) & (np.diff(t) <= window)
        k4 = np.where(f[:-1], k[1:], k[:-1])[adj]
        k6 = np.where(f[:-1], k[:-1], k[1:])[adj]
        # One ticket presented (or issued) over both families.
        tk = np.concatenate((ft.psk, np.full(ft.issued_flow.size, -1)))
        fl = np.concatenate((np.arange(len(ft)), ft.issued_flow))
        tk[len(ft) :] = ft.issued_ticket
        has = tk >= 0
        tk, fl = tk[has], fl[has]
        o = np.argsort(tk, kind="stable")
        tk, fl = tk[o], fl[o]
        same = (tk[1:] == tk[:-1]) & (v6[fl[1:]] != v6[fl[:-1]])
        a, b = fl[:-1][same], fl[1:][same]
        k4 = np.concatenate((k4, np.where(v6[a], key[b], key[a])))
        k6 = np.concatenate((k6, np.where(v6[a], key[a], key[b])))
        if k4.size == 0:
            return key
        pairs, cnt = group_counts(k4 * n_k + k6)
        p4, p6 = pairs // n_k, pairs % n_k
        best6 = np.full(n_k, -1)
        best6_cnt = np.zeros(n_k, dtype=np.int64)
        best4 = np.full(n_k, -1)
        best4_cnt = np.zeros(n_k, dtype=np.int64)
        for src, dst, best, bcnt in ((p4, p6, best6, best6_cnt), (p6, p4, best4, best4_cnt)):
            o = np.lexsort((-cnt, src))  # per src, highest count first
            first = np.r_[True, src[o][1:] != src[o][:-1]]
            best[src[o][first]] = dst[o][first]
            bcnt[src[o][first]] = cnt[o][first]
        mutual = (best6[p4] == p6) & (best4[p6] == p4) & (cnt >= min_count)
        if not mutual.any():
            return key
        return _merge(n_k, key, p4[mutual], p6[mutual])

    link.__name__ = f"v4v6_pairing_{window:g}"
    return link


def union(*linkers: Linker) -> Linker:
    """Connected components of the union of the given linkers' clusterings."""

    def link(ft: FlowTable) -> np.ndarray:
        # Nodes are the clusters of every linker; each flow is an edge from its cluster in the
        # first linker to its cluster in each other one. Components of that (much smaller)
        # graph are the components of the union graph over flows.
        codes = [dense(lk(ft)) for lk in linkers]
        if len(ft) == 0:
            return np.zeros(0, dtype=np.int64)
        base, k0 = codes[0]
        rows, cols, offset = [], [], k0
        for c, k in codes[1:]:
            rows.append(base)
            cols.append(c + offset)
            offset += k
        n = offset
        if rows:
            r, c = np.concatenate(rows), np.concatenate(cols)
        else:
            r = c = np.zeros(0, dtype=np.int64)
        graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(n, n)).tocsr()
        _, comp = connected_components(graph, directed=False)
        return dense(comp[base])[0]

    link.__name__ = "union_" + "_".join(getattr(lk, "__name__", "linker") for lk in linkers)
    return link


def intersection(*linkers: Linker) -> Linker:
    """Joined only where every given linker joins (product clustering)."""

    def link(ft: FlowTable) -> np.ndarray:
        labels = np.zeros(len(ft), dtype=np.int64)
        for lk in linkers:
            labels = dense(combine(labels, lk(ft)))[0]
        return labels

    link.__name__ = "intersection_" + "_".join(getattr(lk, "__name__", "linker") for lk in linkers)
    return link


def default_linkers(
    burst_gap: float = 30.0, time_window: float = 0.05, port_blocks: tuple[int, ...] = (1024, 2048)
) -> dict[str, Linker]:
    """The named linker set the report uses (ordered: single signals, then combinations)."""
    out: dict[str, Linker] = {"addr": same_address}
    for bits in (64, 56, 48):
        out[f"v6/{bits}"] = same_prefix(bits)
    for b in port_blocks:
        out[f"port-block-{b}"] = port_block(b)
    out[f"addr-burst-{burst_gap:g}s"] = address_burst(burst_gap)
    out[f"time-burst-{time_window * 1000:g}ms"] = time_burst(time_window)
    out["resumption"] = resumption
    out["same-conn"] = same_connection
    out["alias-epoch"] = alias_epoch()
    out["epoch-continuity-2s"] = epoch_continuity(2.0)
    out["rare-dest-2"] = rare_destination(2)
    out["v4v6-pair"] = v4v6_pairing(60.0)
    out["addr+resumption"] = union(same_address, resumption)
    out["v4v6-pair+resumption"] = union(v4v6_pairing(60.0), resumption)
    out["v6/64+resumption"] = union(same_prefix(64), resumption)
    out["same-conn+resumption"] = union(same_connection, resumption)
    singles = [lk for name, lk in out.items() if "+" not in name]
    out["union-all"] = union(*singles)
    return out


def best_single(f1_by_linker: Mapping[str, float], exclude_combined: bool = True) -> str | None:
    """Name of the linker with the highest F1 (NaN counts as -1); combined ones optional."""
    best, best_f1 = None, -np.inf
    for name, f1 in f1_by_linker.items():
        if exclude_combined and ("+" in name or name.startswith("union")):
            continue
        v = f1 if f1 is not None and np.isfinite(f1) else -1.0
        if v > best_f1:
            best, best_f1 = name, v
    return best
