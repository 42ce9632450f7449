"""Join client ground truth with the front-door log: who really made each observed flow.

The ECH load generator records, per flow, the truth (subscriber, household, device, site) and
the TLS ``client_random``; the front door logs what it saw (peer address/port, inner SNI,
presented ticket hash, tickets it issued) with the same ``client_random``. The 32-byte random
is unique per ClientHello, so it is an exact join key that needs no clock agreement.

Coverage is reported, never hidden: flows only in the ground truth (failed before reaching the
front door, or lost logs) and flows only at the front door (no truth: foreign traffic or lost
client records) are counted. Front-door-only flows stay in the table with ``household = -1``
(an adversary would see them) and are dropped by the metrics, which need truth.

What each column of the resulting ``FlowTable`` comes from:

* ``ts``: front-door ``ts`` (the adversary's clock; ground-truth ``ts`` if absent).
* ``household``: ground-truth ``household``, else ``subscriber``.
* ``device``: ground-truth ``device``, else ``local_addr`` (the client's own address).
* ``site``: inner SNI as the front door decrypted it, else ground-truth ``site``.
* ``addr``/``port``/``prefix``: front-door ``peer_addr``/``peer_port``.
* ``psk``: ``psk_id_hash``; ``issued_*``: ``issued_ticket_hashes`` (optional list).
* ``own_*``: ground-truth ``local_addr`` (the client's own address; model input only).
* ``extra``: the front door's fingerprints of each connection (``syn``, ``rtt_us``,
  ``ja4``, ``tls_groups``, ``h2_settings``), coded by ``fingerprint_columns`` under the
  names of ``fingerprints.COLUMNS``; ``-1`` where the log has no value. ``extra["conn"]``
  (``CONN_COLUMN``): the front-door connection each row belongs to.

Rows are (connection, host) pairs. A connection's log line may list the hosts its HTTP
requests named (optional ``hosts``: ``[{"host", "requests", "first_ms"}]``, and
``requests``): a browser coalesces visits to other sites onto an open HTTP/2 connection when
the certificate covers them (RFC 9113 sec. 9.1.1), and the front door, serving those
requests, knows they came over one connection. Each further host then becomes a row of its
own (site = that host, ts = connection start + ``first_ms``), joined to the ground-truth
visit with the same ``client_random`` and site, sharing the connection's address, port and
fingerprints; presented and issued tickets stay on the connection's first row. Without
``hosts`` (older logs, split front) a connection is one row, as before.

The on-path access observer is modelled by ``access_observer_view``: it sees the subscriber's
own address and the *outer* SNI (the public name) when ECH was accepted, the real name
otherwise (ECH rejected or not offered leaks the destination on the access link).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.linkability.fingerprints import COLUMNS, rtt_bucket
from benchmarks.linkability.flows import PREFIX_BITS, FlowTable, factorize

TS_HZ = 1000  # TCP timestamp clock of the senders (Linux: 1 kHz since 4.13)
CONN_COLUMN = "conn"  # FlowTable.extra: front-door connection code of each row


def load_jsonl(path: str | Path) -> list[dict]:
    """Read JSON lines, skipping blank lines; a malformed line raises with its number."""
    out: list[dict] = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from e
    return out


def load_many(paths: str | Path | Sequence[str | Path]) -> list[dict]:
    """Concatenate one or several JSON-lines files."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[dict] = []
    for p in paths:
        out.extend(load_jsonl(p))
    return out


@dataclass
class JoinCoverage:
    """How complete the join was (counts of flows)."""

    ground_truth: int
    frontdoor: int
    joined: int
    ground_truth_only: int
    frontdoor_only: int
    ground_truth_without_key: int
    frontdoor_without_key: int
    duplicate_keys_ground_truth: int
    duplicate_keys_frontdoor: int
    # rows added for further hosts coalesced onto a logged connection (``hosts``)
    coalesced_host_rows: int = 0

    @property
    def coverage(self) -> float:
        """Share of ground-truth flows found at the front door."""
        return self.joined / self.ground_truth if self.ground_truth else float("nan")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["coverage"] = self.coverage
        return d


def _index_by_key(records: Iterable[dict]) -> tuple[dict[str, dict], int, int]:
    """client_random -> record (first wins); returns (index, without key, duplicates)."""
    idx: dict[str, dict] = {}
    missing = dup = 0
    for r in records:
        key = r.get("client_random")
        if not key:
            missing += 1
            continue
        key = str(key).lower()
        if key in idx:
            dup += 1
            continue
        idx[key] = r
    return idx, missing, dup


def _prefix_key(addr: str, bits: int) -> str:
    """IPv6 /bits network of addr; IPv4 addresses keep their own (separate) key space."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return f"raw:{addr}"
    if ip.version == 4:
        return f"v4:{ip}"
    return str(ipaddress.IPv6Network((int(ip) >> (128 - bits) << (128 - bits), bits)))


def _syn_shape(syn: dict) -> str | None:
    """The SYN's stack-specific shape: window, option order, MSS and window scale (p0f's
    signature fields, without the TTL, which is its own signal)."""
    if not syn:
        return None
    return f"{syn.get('window')}:{syn.get('options')}:{syn.get('mss')}:{syn.get('wscale')}"


def _ts_offset(r: dict) -> int:
    """TSval minus the SYN's arrival in sender-clock ticks, mod 2^32; -1 without TSval.

    The arrival is estimated as accept time minus the handshake RTT (the SYN-ACK/ACK round
    trip), which removes most of the per-path difference between accept and SYN."""
    syn = r.get("syn") or {}
    tsval = syn.get("tsval")
    if tsval is None or r.get("ts") is None:
        return -1
    arrival_s = float(r["ts"]) - float(r.get("rtt_us") or 0) / 1e6
    return int((int(tsval) - round(arrival_s * TS_HZ)) % (1 << 32))


def fingerprint_columns(rows: Sequence[dict]) -> dict[str, np.ndarray]:
    """Per-flow integer codes of the front door's fingerprint fields (-1 = not logged)."""
    syns = [r.get("syn") or {} for r in rows]

    def codes(values: list) -> np.ndarray:
        return factorize(values, missing=None)[0]

    return {
        COLUMNS["ttl"]: np.array(
            [int(s["ttl"]) if s.get("ttl") is not None else -1 for s in syns], dtype=np.int64
        ),
        COLUMNS["syn"]: codes([_syn_shape(s) for s in syns]),
        COLUMNS["ipid"]: np.array(
            [int(s["ip_id"]) if s.get("ip_id") is not None else -1 for s in syns], dtype=np.int64
        ),
        COLUMNS["tsoffset"]: np.array([_ts_offset(r) for r in rows], dtype=np.int64),
        COLUMNS["ja4"]: codes([r.get("ja4") for r in rows]),
        COLUMNS["groups"]: codes([r.get("tls_groups") for r in rows]),
        COLUMNS["h2"]: codes([r.get("h2_settings") for r in rows]),
        COLUMNS["rtt"]: np.array(
            [rtt_bucket(float(r.get("rtt_us") or 0)) for r in rows], dtype=np.int64
        ),
    }


def join_records(
    ground_truth: Sequence[dict],
    frontdoor: Sequence[dict],
    sensitive_sites: Iterable[str] = (),
    households: Sequence[str] | None = None,
) -> tuple[FlowTable, JoinCoverage]:
    """Join on ``client_random``; returns the flow table and the coverage counts.

    ``households`` fixes the household code order (e.g. the household table's order, so
    trait flags index directly); unknown households are appended after it.
    """
    gt_idx, gt_missing, gt_dup = _index_by_key(ground_truth)
    fd_idx, fd_missing, fd_dup = _index_by_key(frontdoor)
    keys = list(fd_idx.keys())
    joined = sum(1 for k in keys if k in gt_idx)
    cov = JoinCoverage(
        ground_truth=len(ground_truth),
        frontdoor=len(frontdoor),
        joined=joined,
        ground_truth_only=len(ground_truth) - joined,
        frontdoor_only=len(frontdoor) - joined,
        ground_truth_without_key=gt_missing,
        frontdoor_without_key=fd_missing,
        duplicate_keys_ground_truth=gt_dup,
        duplicate_keys_frontdoor=fd_dup,
    )
    sens = set(sensitive_sites)
    rows_fd, rows_gt, conn_of, host_of, first_ms = _connection_host_rows(
        keys, fd_idx, gt_idx, ground_truth)
    cov.coalesced_host_rows = len(rows_fd) - len(keys)
    primary = np.r_[True, conn_of[1:] != conn_of[:-1]] if len(conn_of) else np.zeros(0, bool)

    def truth(i: int, *names: str) -> object:
        g = rows_gt[i]
        if g is None:
            return None
        for n in names:
            v = g.get(n)
            if v not in (None, ""):
                return v
        return None

    n = len(rows_fd)
    hh_vals = [truth(i, "household", "subscriber") for i in range(n)]
    order = list(households or [])
    known = set(order)
    for h in hh_vals:
        if h is not None and h not in known:
            known.add(h)
            order.append(h)
    hh_code = {h: c for c, h in enumerate(order)}
    household = np.array([hh_code[h] if h is not None else -1 for h in hh_vals], dtype=np.int64)
    device, dev_names = factorize([truth(i, "device", "local_addr") for i in range(n)])
    sites = [host_of[i] or rows_fd[i].get("inner_sni") or truth(i, "site") for i in range(n)]
    site, site_names = factorize(sites)
    peer = [str(r.get("peer_addr", "")) for r in rows_fd]
    addr, addr_names = factorize(peer)
    prefix = {b: factorize([_prefix_key(a, b) for a in peer])[0] for b in PREFIX_BITS}
    family = np.array([6 if ":" in a else 4 for a in peer], dtype=np.int8)
    ts = np.array(
        [
            float(r.get("ts") if r.get("ts") is not None else truth(i, "ts") or 0.0)
            + first_ms[i] / 1000.0
            for i, r in enumerate(rows_fd)
        ],
        dtype=np.float64,
    )
    port = np.array([int(r.get("peer_port") or 0) for r in rows_fd], dtype=np.int64)
    # Presented and issued tickets share one code space.
    ticket_code: dict[str, int] = {}

    def tcode(h: str) -> int:
        return ticket_code.setdefault(str(h), len(ticket_code))

    psk = np.array(
        [
            tcode(r["psk_id_hash"]) if r.get("psk_id_hash") and primary[i] else -1
            for i, r in enumerate(rows_fd)
        ],
        dtype=np.int64,
    )
    iss_f: list[int] = []
    iss_t: list[int] = []
    for i, r in enumerate(rows_fd):
        if not primary[i]:
            continue
        for h in r.get("issued_ticket_hashes") or ():
            iss_f.append(i)
            iss_t.append(tcode(h))
    session, _ = factorize([truth(i, "session_id") for i in range(n)])
    own = [str(truth(i, "local_addr") or "") for i in range(n)]
    own_addr, _ = factorize(own, missing="")
    own_prefix = {
        b: factorize([_prefix_key(a, b) if a else None for a in own])[0] for b in PREFIX_BITS
    }
    own_family = np.array([6 if ":" in a else (4 if a else 0) for a in own], dtype=np.int8)
    ft = FlowTable(
        ts=ts,
        household=household,
        device=device,
        site=site,
        sensitive=np.array([s in sens for s in sites], dtype=bool),
        family=family,
        addr=addr,
        port=port,
        prefix=prefix,
        psk=psk,
        issued_flow=np.array(iss_f, dtype=np.int64),
        issued_ticket=np.array(iss_t, dtype=np.int64),
        session=session,
        names={"household": order, "device": dev_names, "site": site_names, "addr": addr_names},
        own_addr=own_addr,
        own_prefix=own_prefix,
        own_family=own_family,
        extra={**fingerprint_columns(rows_fd), CONN_COLUMN: conn_of},
    )
    return ft, cov


def _host_name(h: object) -> str:
    return str(h).lower().rstrip(".")


def _connection_host_rows(
    keys: list[str],
    fd_idx: dict[str, dict],
    gt_idx: dict[str, dict],
    ground_truth: Sequence[dict],
) -> tuple[list[dict], list[dict | None], np.ndarray, list[str | None], list[float]]:
    """Expand connections into (connection, host) rows (see module docstring).

    Returns per row: the front-door record, the ground-truth visit (None if unknown), the
    connection code, the host (None: the connection's own inner SNI) and the host's first
    request offset in ms. The connection's own host comes first, whatever its position in
    ``hosts``, so that a log without ``hosts`` gives exactly one row per connection.
    """
    by_key_site: dict[tuple[str, str], dict] = {}
    for g in ground_truth:
        k = g.get("client_random")
        if k and g.get("site"):
            by_key_site.setdefault((str(k).lower(), _host_name(g["site"])), g)
    rows_fd: list[dict] = []
    rows_gt: list[dict | None] = []
    conn: list[int] = []
    host: list[str | None] = []
    first: list[float] = []
    for c, k in enumerate(keys):
        r = fd_idx[k]
        rows_fd.append(r)
        rows_gt.append(gt_idx.get(k))
        conn.append(c)
        host.append(None)
        first.append(0.0)
        own = _host_name(r.get("inner_sni") or (gt_idx.get(k) or {}).get("site") or "")
        for h in r.get("hosts") or ():
            name = _host_name(h.get("host", "")) if isinstance(h, dict) else ""
            if not name or name == own:
                continue
            rows_fd.append(r)
            rows_gt.append(by_key_site.get((k, name)))
            conn.append(c)
            host.append(name)
            first.append(float(h.get("first_ms") or 0.0))
    return rows_fd, rows_gt, np.array(conn, dtype=np.int64), host, first


def connections_only(ft: FlowTable) -> FlowTable:
    """Each front-door connection's own row, without the rows of further hosts coalesced
    onto it. Why: a relay chooses an alias per connection, so a statistic of the relay's
    alias behaviour must count connections. A host coalesced onto a connection opened in an
    earlier epoch carries that epoch's alias into the next one; counted as a flow, it made
    a relay that renews every IPv6 alias per epoch read 0.91 (64 of 70 aliases) instead of
    1.0 in a keep-alive and coalescing run. A table without ``CONN_COLUMN`` is returned as
    is (every row its own connection)."""
    conn = ft.extra.get(CONN_COLUMN)
    if conn is None or len(conn) == 0:
        return ft
    return ft.subset(np.r_[True, conn[1:] != conn[:-1]])


def trait_vector(ft: FlowTable, household_table: dict) -> np.ndarray:
    """Trait flag per household code of ``ft`` (households missing from the table: False)."""
    traits = {h["household"]: bool(h.get("trait")) for h in household_table.get("households", [])}
    return np.array([traits.get(h, False) for h in ft.names.get("household", [])], dtype=bool)


def access_observer_view(ground_truth: Sequence[dict], frontdoor: Sequence[dict]) -> dict:
    """What the on-path access observer learns: subscriber address + visible SNI per flow.

    Returns counts and the mean over subscribers of the share of their distinct true
    destinations that travelled in clear (ECH not accepted). With ECH everywhere it is 0: the
    access side knows the subscriber but not the destination.
    """
    fd_idx, _, _ = _index_by_key(frontdoor)
    per_sub: dict[str, tuple[set, set]] = {}
    flows = 0
    for g in ground_truth:
        key = str(g.get("client_random") or "").lower()
        f = fd_idx.get(key)
        if f is None:
            continue
        flows += 1
        sub = str(g.get("household") or g.get("subscriber"))
        true_site = g.get("site") or f.get("inner_sni")
        accepted = f.get("ech") == "accepted"
        visible = f.get("outer_sni") if accepted else (f.get("inner_sni") or true_site)
        dests, leaked = per_sub.setdefault(sub, (set(), set()))
        dests.add(true_site)
        if visible == true_site:
            leaked.add(true_site)
    shares = [len(lk) / len(d) for d, lk in per_sub.values() if d]
    return {
        "flows": flows,
        "subscribers": len(per_sub),
        "leaked_destination_share_mean": float(np.mean(shares)) if shares else float("nan"),
    }
