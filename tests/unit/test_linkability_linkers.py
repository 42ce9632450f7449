"""Linkers on tiny hand-made traces (see benchmarks/linkability/linkers.py)."""

from __future__ import annotations

import numpy as np

from benchmarks.linkability import linkers as lk
from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.observations import join_records


def table(rows: list[dict]) -> FlowTable:
    """Build a flow table through the real join from minimal gt/front-door records."""
    gt, fd = [], []
    for i, r in enumerate(rows):
        cr = f"{i:064x}"
        gt.append(
            {"client_random": cr, "household": r.get("hh", f"h{i}"), "site": r.get("site", "s")}
        )
        rec = {
            "client_random": cr,
            "ts": r.get("ts", float(i)),
            "peer_addr": r["addr"],
            "peer_port": r.get("port", 40000 + i),
            "inner_sni": r.get("site", "s"),
            "psk_id_hash": r.get("psk"),
        }
        if "issued" in r:
            rec["issued_ticket_hashes"] = r["issued"]
        fd.append(rec)
    ft, cov = join_records(gt, fd)
    assert cov.joined == len(rows)
    return ft


def same(labels: np.ndarray, i: int, j: int) -> bool:
    return bool(labels[i] == labels[j])


def test_prefix64_merges_temporary_addresses_of_one_64_only() -> None:
    ft = table(
        [
            {"addr": "2001:db8:100:a00:1111:2222:3333:4444"},  # temp IID 1
            {"addr": "2001:db8:100:a00:aaaa:bbbb:cccc:dddd"},  # temp IID 2, same /64
            {"addr": "2001:db8:100:a01::1"},  # same /56, other /64
            {"addr": "2001:db8:100:b00::1"},  # other /56, same /48
            {"addr": "2001:db8:200:a00::1"},  # other /48
            {"addr": "198.18.1.1"},
            {"addr": "198.18.1.2"},  # IPv4 never merges by "prefix"
        ]
    )
    a = lk.same_address(ft)
    p64, p56, p48 = (lk.same_prefix(b)(ft) for b in (64, 56, 48))
    assert not same(a, 0, 1)
    assert same(p64, 0, 1) and not same(p64, 0, 2) and not same(p64, 0, 3)
    assert same(p56, 0, 2) and not same(p56, 0, 3)
    assert same(p48, 0, 3) and not same(p48, 0, 4)
    for labels in (p64, p56, p48):
        assert not same(labels, 5, 6)
        assert not same(labels, 4, 5)


def test_port_block() -> None:
    ft = table(
        [
            {"addr": "198.19.0.1", "port": 2048},
            {"addr": "198.19.0.1", "port": 4095},  # same 2048-block
            {"addr": "198.19.0.1", "port": 4096},  # next block
            {"addr": "198.19.0.2", "port": 2049},  # same block number, other address
        ]
    )
    b = lk.port_block(2048)(ft)
    assert same(b, 0, 1) and not same(b, 1, 2) and not same(b, 0, 3)
    b1024 = lk.port_block(1024)(ft)
    assert not same(b1024, 0, 1)


def test_resumption_links_ticket_holders_and_issuer() -> None:
    ft = table(
        [
            {"addr": "198.19.0.1", "issued": ["T1"]},  # full handshake, issued T1
            {"addr": "198.19.0.2", "psk": "T1", "issued": ["T2"]},  # resumes T1 elsewhere
            {"addr": "198.19.0.3", "psk": "T2"},  # resumes T2: chain back to flow 0
            {"addr": "198.19.0.4", "psk": "T1"},  # T1 again
            {"addr": "198.19.0.1"},  # same address as 0 but no ticket
            {"addr": "198.19.0.5", "psk": "T9"},  # unknown issuer: alone
            {"addr": "198.19.0.6", "psk": "T9"},  # ... but linked to the other T9 holder
        ]
    )
    r = lk.resumption(ft)
    assert same(r, 0, 1) and same(r, 1, 2) and same(r, 0, 3)
    assert not same(r, 0, 4)
    assert same(r, 5, 6) and not same(r, 0, 5)
    # Combined with the address linker, flow 4 joins the chain through flow 0's address.
    u = lk.union(lk.same_address, lk.resumption)(ft)
    assert same(u, 4, 2) and not same(u, 4, 5)
    i = lk.intersection(lk.same_address, lk.resumption)(ft)
    assert not same(i, 0, 4) and not same(i, 0, 1)


def test_address_burst_and_time_burst() -> None:
    ft = table(
        [
            {"addr": "198.19.0.1", "ts": 0.0},
            {"addr": "198.19.0.1", "ts": 20.0},  # within 30 s of previous
            {"addr": "198.19.0.1", "ts": 45.0},  # within 30 s of previous (chained)
            {"addr": "198.19.0.1", "ts": 100.0},  # gap 55 s: new burst
            {"addr": "198.19.0.2", "ts": 101.0},  # other address
            {"addr": "198.19.0.3", "ts": 100.02},  # other address, 20 ms after flow 3
        ]
    )
    b = lk.address_burst(30.0)(ft)
    assert same(b, 0, 1) and same(b, 1, 2) and not same(b, 2, 3) and not same(b, 3, 4)
    t = lk.time_burst(0.05)(ft)
    assert same(t, 3, 5)  # address-independent: 20 ms apart
    assert not same(t, 3, 4) and not same(t, 0, 1)


def test_default_linkers_and_best_single() -> None:
    ft = table([{"addr": "198.19.0.1"}, {"addr": "198.19.0.1"}])
    linkers = lk.default_linkers()
    for name, linker in linkers.items():
        labels = linker(ft)
        assert labels.shape == (2,), name
    assert "union-all" in linkers
    assert lk.best_single({"addr": 0.2, "v6/64": 0.9, "addr+resumption": 0.95}) == "v6/64"
    assert lk.best_single({"addr": float("nan"), "x": 0.1}) == "x"
