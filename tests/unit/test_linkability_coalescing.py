"""Connection reuse and HTTP/2 coalescing at the front door: the join expands a connection's
``hosts`` into one row per site, and ``same_connection`` links the sites of one connection
(benchmarks/linkability/observations.py, linkers.py)."""

from __future__ import annotations

import numpy as np

from benchmarks.linkability import linkers as lk
from benchmarks.linkability.metrics import pairwise_scores
from benchmarks.linkability.observations import CONN_COLUMN, join_records


def _visit(cr: str, hh: str, dev: str, site: str, t: float) -> dict:
    return {"client_random": cr, "household": hh, "device": dev, "site": site, "ts": t}


def _conn(cr: str, t: float, addr: str, port: int, site: str, hosts: list | None, **kw) -> dict:
    rec = {"client_random": cr, "ts": t, "peer_addr": addr, "peer_port": port,
           "inner_sni": site, "psk_id_hash": kw.get("psk"),
           "issued_ticket_hashes": kw.get("issued", [])}
    if hosts is not None:
        rec["hosts"] = [{"host": h, "requests": n, "first_ms": ms} for h, n, ms in hosts]
        rec["requests"] = sum(n for _, n, _ in hosts)
    return rec


def test_hosts_expand_into_rows_joined_to_their_visits() -> None:
    a, b = f"{1:064x}", f"{2:064x}"
    gt = [_visit(a, "h1", "d1", "a.example", 10.0), _visit(a, "h1", "d1", "b.example", 10.5),
          _visit(b, "h2", "d2", "c.example", 11.0)]
    fd = [_conn(a, 10.0, "198.19.0.1", 40001, "a.example",
                [("b.example", 3, 500.0), ("A.example", 4, 0.0)], psk="p0", issued=["t1"]),
          _conn(b, 11.0, "198.19.0.2", 40002, "c.example", [("c.example", 1, 0.0)])]
    ft, cov = join_records(gt, fd)
    assert len(ft) == 3 and cov.coalesced_host_rows == 1 and cov.joined == 2
    sites = [ft.names["site"][s] for s in ft.site]
    assert sites == ["a.example", "b.example", "c.example"]
    conn = ft.extra[CONN_COLUMN]
    assert conn[0] == conn[1] != conn[2]
    assert ft.ts[1] == 10.5 and ft.addr[0] == ft.addr[1]
    hh = [ft.names["household"][h] for h in ft.household]
    assert hh == ["h1", "h1", "h2"]
    # tickets belong to the connection's handshake: on its first row only
    assert ft.psk[0] >= 0 and ft.psk[1] == -1
    assert ft.issued_flow.tolist() == [0]


def test_log_without_hosts_is_one_row_per_connection() -> None:
    gt = [_visit(f"{i:064x}", f"h{i}", "d", "s.example", float(i)) for i in range(3)]
    fd = [_conn(f"{i:064x}", float(i), "198.19.0.1", 40000 + i, "s.example", None)
          for i in range(3)]
    ft, cov = join_records(gt, fd)
    assert len(ft) == 3 and cov.coalesced_host_rows == 0
    assert len(set(lk.same_connection(ft).tolist())) == 3


def _trace(coalesce: bool, households: int = 30, seed: int = 1) -> tuple[list, list]:
    """cfr-flow-like trace: every connection gets a fresh alias from a pool of 4 and a fresh
    port; each household visits 3 sites of one certificate group in a row. With
    coalescing the three visits share one connection; without, each has its own."""
    rng = np.random.default_rng(seed)
    gt, fd = [], []
    n = 0
    for h in range(households):
        t = float(rng.uniform(0, 60))
        sites = [f"s{h % 5}-{j}.example" for j in range(3)]
        groups = [sites] if coalesce else [[s] for s in sites]
        for grp in groups:
            n += 1
            cr = f"{n:064x}"
            alias = f"198.19.1.{rng.integers(1, 5)}"
            hosts = [(s, 2, 300.0 * j) for j, s in enumerate(grp)]
            fd.append(_conn(cr, t, alias, 20000 + n, grp[0], hosts))
            for j, s in enumerate(grp):
                gt.append(_visit(cr, f"h{h}", f"h{h}-d0", s, t + 0.3 * j))
            t += 0.3 * len(grp)
    return gt, fd


def test_coalesced_connection_links_its_sites_and_only_those() -> None:
    gt, fd = _trace(coalesce=True)
    ft, _ = join_records(gt, fd)
    assert len(ft) == 90
    s = pairwise_scores(ft.household, lk.same_connection(ft))
    # every pair it claims is one household; it finds each household's 3 pairs
    assert s.precision == 1.0 and s.recall == 1.0
    # under fresh aliases the address links mostly strangers
    assert pairwise_scores(ft.household, lk.same_address(ft)).precision < 0.2


def test_coalescing_off_leaves_the_linker_nothing() -> None:
    on, _ = join_records(*_trace(coalesce=True))
    off, _ = join_records(*_trace(coalesce=False))
    assert len(off) == len(on) == 90
    s_off = pairwise_scores(off.household, lk.same_connection(off))
    assert len(set(lk.same_connection(off).tolist())) == len(off)  # all singletons
    s_on = pairwise_scores(on.household, lk.same_connection(on))
    assert s_on.recall > 0.0 and not s_off.recall > 0.0
    # and in the report's union the coalesced signal adds links
    u_on = pairwise_scores(on.household, lk.default_linkers()["same-conn+resumption"](on))
    assert u_on.recall == 1.0


def test_same_connection_without_column_joins_nothing() -> None:
    gt, fd = _trace(coalesce=True, households=3)
    ft, _ = join_records(gt, fd)
    ft.extra.pop(CONN_COLUMN)
    assert len(set(lk.same_connection(ft).tolist())) == len(ft)


def test_alias_signatures_count_connections_not_coalesced_hosts() -> None:
    # A relay renewing every IPv6 alias per 15 s epoch: connection c1 opens at t=2 with
    # alias A, a host coalesced onto it is first asked at t=20 (next epoch) on that same
    # alias; c2 opens at t=5 on A too (a collision in the pool). Counted per row, alias A
    # appears in two epochs (turnover < 1); counted per connection it stays in one.
    from benchmarks.linkability.observations import connections_only
    from benchmarks.linkability.validation import household_statistics

    a, b = f"{1:064x}", f"{2:064x}"
    gt = [_visit(a, "h1", "d1", "site-0001.example", 2.0),
          _visit(a, "h1", "d1", "site-0002.example", 20.0),
          _visit(b, "h2", "d2", "site-0003.example", 5.0)]
    fd = [_conn(a, 2.0, "2001:db8:a::1", 40001, "site-0001.example",
                [("site-0001.example", 1, 0.0), ("site-0002.example", 1, 18000.0)]),
          _conn(b, 5.0, "2001:db8:a::1", 40002, "site-0003.example", None)]
    ft, _ = join_records(gt, fd, households=["h1", "h2"])
    assert len(ft) == 3 and ft.ts[1] == 20.0
    per_row = household_statistics(ft, 15.0)["v6_alias_turnover"]
    conns = connections_only(ft)
    per_conn = household_statistics(conns, 15.0)["v6_alias_turnover"]
    assert len(conns) == 2 and per_row[0].sum() / per_row[1].sum() == 0.0
    assert per_conn[0].sum() / per_conn[1].sum() == 1.0
    ft.extra.pop(CONN_COLUMN)
    assert connections_only(ft) is ft
