"""Fingerprint linkers: what ties flows together at the front door besides the address.

The front door logs, per connection, the client's SYN (TTL / hop limit, IP ID, window, TCP
option order, MSS, window scale, TCP timestamp), the handshake RTT, the JA4 fingerprint and
key-exchange groups of the ClientHello it received (the outer one under ECH), and the
client's HTTP/2 SETTINGS (`ech/README.md`). ``observations.join_records`` turns them into
per-flow integer codes in ``FlowTable.extra`` under the names in ``COLUMNS``; this module
links on them. A source-aliasing relay changes none of these signals, so whatever they link
under ``route`` they still link under ``cfr-flow``: they are the report's "what the CFR does
not fix", measured rather than assumed.

Each linker is ``FlowTable -> int64 cluster ids`` like those in ``linkers.py``. Single
signals put a flow whose signal was not observed (code ``-1``) in a cluster of its own: an
absent signal links nothing. Categorical signals (TTL, SYN shape, JA4, groups, HTTP/2,
RTT bucket) name a device *class*: in a homogeneous population they join everyone (recall
1, precision at chance); in a mixed one they split it into classes, and precision rises with
how rare a household's class is. Two signals can identify one *device*:

* the TCP timestamp offset (TSval minus the sender's clock): constant per host, or per
  (source, destination) address pair, where a stack keeps it so; random per connection on
  Linux with ``tcp_timestamps=1`` since 4.10 (per-connection offsets), where it links
  nothing, which is then shown, not assumed;
* the IPv4 IP ID: a host-wide counter (older stacks) makes consecutive flows of one host
  carry nearly consecutive IDs; Linux draws per-connection IDs, so it links only by
  coincidence there (random IDs fall into a chain's window now and then: chance level,
  growing with the flow rate).

``fingerprint`` intersects the categorical signals (a flow's device class; a missing signal
counts as its own value there, since "no HTTP/2" is also a trait of a device); and
``fp+combined&tsoffset`` intersects that with the timestamp-offset chains (one device of
one class: it links only where the offsets do).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.linkers import Linker, intersection
from benchmarks.linkability.metrics import combine, dense

# FlowTable.extra names written by observations.fingerprint_columns.
COLUMNS: dict[str, str] = {
    "ttl": "fp_ttl",  # TTL / hop limit as received
    "syn": "fp_syn",  # SYN window, option order, MSS, window scale
    "ipid": "fp_ipid",  # IPv4 identification of the SYN (raw value)
    "tsoffset": "fp_tsoffset",  # TSval - SYN time in ms, mod 2^32 (raw value)
    "ja4": "fp_ja4",  # JA4 of the received ClientHello
    "groups": "fp_groups",  # supported_groups of the received ClientHello
    "h2": "fp_h2",  # HTTP/2 SETTINGS + WINDOW_UPDATE
    "rtt": "fp_rtt",  # handshake RTT bucket (RTT_BUCKETS_PER_OCTAVE per doubling)
}
CATEGORICAL = ("ttl", "syn", "ja4", "groups", "h2", "rtt")
RTT_BUCKETS_PER_OCTAVE = 4
TS_TOLERANCE_MS = 25.0
IPID_MAX_STEP = 256
IPID_MAX_GAP_S = 60.0


def rtt_bucket(rtt_us: float) -> int:
    """Quarter-octave bucket of an RTT in microseconds (19-21 ms fall in one bucket, a 2 ms
    line and a 20 ms line never do); -1 when unknown."""
    if not rtt_us or rtt_us <= 0:
        return -1
    return int(np.floor(np.log2(rtt_us) * RTT_BUCKETS_PER_OCTAVE))


def column(ft: FlowTable, signal: str) -> np.ndarray:
    """The signal's code per flow; all -1 when the table has no such column (a trace from
    the model, or a log from before fingerprints were recorded)."""
    col = ft.extra.get(COLUMNS[signal])
    if col is None:
        return np.full(len(ft), -1, dtype=np.int64)
    return np.asarray(col, dtype=np.int64)


def _singletons_for_missing(codes: np.ndarray) -> np.ndarray:
    """Cluster ids equal to the codes, except that each -1 gets a fresh id of its own."""
    codes = np.asarray(codes, dtype=np.int64)
    out, k = dense(codes)
    missing = np.flatnonzero(codes < 0)
    out[missing] = k + np.arange(missing.size)
    return dense(out)[0]


def categorical(signal: str) -> Linker:
    """One cluster per observed value of a categorical signal; unobserved flows alone."""
    if signal not in CATEGORICAL:
        raise ValueError(f"{signal!r} is not a categorical signal (one of {CATEGORICAL})")

    def link(ft: FlowTable) -> np.ndarray:
        return _singletons_for_missing(column(ft, signal))

    link.__name__ = f"fp_{signal}"
    return link


def ts_offset(tolerance_ms: float = TS_TOLERANCE_MS) -> Linker:
    """Flows whose TCP timestamp offsets lie within ``tolerance_ms`` of each other, chained in
    sorted order (1-D single linkage): a host that keeps one offset produces one chain."""

    def link(ft: FlowTable) -> np.ndarray:
        off = column(ft, "tsoffset")
        n = len(ft)
        labels = np.arange(n, dtype=np.int64)
        seen = np.flatnonzero(off >= 0)
        if seen.size == 0:
            return labels
        order = seen[np.argsort(off[seen], kind="stable")]
        breaks = np.concatenate(([True], np.diff(off[order]) > tolerance_ms))
        chain = np.cumsum(breaks) - 1
        labels[order] = n + chain
        return dense(labels)[0]

    link.__name__ = f"fp_tsoffset_{tolerance_ms:g}ms"
    return link


def ip_id_counter(max_step: int = IPID_MAX_STEP, max_gap_s: float = IPID_MAX_GAP_S) -> Linker:
    """IPv4 flows joined to the earlier flow (within ``max_gap_s``) whose IP ID is the
    closest below theirs, 1..``max_step`` less (mod 2^16): the trace of a host-wide IP ID
    counter. Each flow links to at most one predecessor, so a stranger that happens to fall
    into a counter's window adds one edge but does not break the counter's chain."""

    def link(ft: FlowTable) -> np.ndarray:
        ipid = column(ft, "ipid")
        n = len(ft)
        idx = np.flatnonzero(ipid >= 0)
        idx = idx[np.argsort(ft.ts[idx], kind="stable")]
        ts, ids = ft.ts[idx], ipid[idx]
        lo = np.searchsorted(ts, ts - max_gap_s, side="left")
        src: list[int] = []
        dst: list[int] = []
        for k in range(1, idx.size):
            if lo[k] >= k:
                continue
            step = (ids[k] - ids[lo[k] : k]) % 65536
            ok = (step >= 1) & (step <= max_step)
            if ok.any():
                j = lo[k] + int(np.flatnonzero(ok)[np.argmin(step[ok])])
                src.append(int(idx[j]))
                dst.append(int(idx[k]))
        graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
        return connected_components(graph, directed=False)[1].astype(np.int64)

    link.__name__ = "fp_ipid_counter"
    return link


def fingerprint(signals: tuple[str, ...] = CATEGORICAL) -> Linker:
    """Intersection of categorical signals: one cluster per device class (a missing signal
    is a value of its own here)."""

    def link(ft: FlowTable) -> np.ndarray:
        labels = np.zeros(len(ft), dtype=np.int64)
        for s in signals:
            labels = dense(combine(labels, column(ft, s) + 1))[0]
        return labels

    link.__name__ = "fp_" + "+".join(signals)
    return link


def has_fingerprints(ft: FlowTable) -> bool:
    """Whether the table carries any fingerprint column with an observed value."""
    return any((ft.extra.get(c) is not None and (ft.extra[c] >= 0).any()) for c in COLUMNS.values())


def fingerprint_linkers() -> dict[str, Linker]:
    """The named fingerprint linkers for the report: one per signal, then combinations."""
    out: dict[str, Linker] = {f"fp-{s}": categorical(s) for s in CATEGORICAL}
    out["fp-tsoffset"] = ts_offset()
    out["fp-ipid"] = ip_id_counter()
    out["fp+combined"] = fingerprint()
    out["fp+combined&tsoffset"] = intersection(fingerprint(), ts_offset())
    return out
