"""Workload generator: reproducibility, Zipf, RFC 8981 rotation, profiling scenario."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from benchmarks.linkability.workload import (
    WorkloadParams,
    example_address_plan,
    generate_workload,
    load_household_table,
    site_name,
)

SMALL = WorkloadParams(households=40, duration_s=1800, seed=3)


def test_reproducible_with_seed_and_different_with_another() -> None:
    a = generate_workload(SMALL)
    b = generate_workload(SMALL)
    c = generate_workload(WorkloadParams(households=40, duration_s=1800, seed=4))
    assert a.records == b.records
    assert a.household_table() == b.household_table()
    assert a.records != c.records
    assert len(a.records) > 100


def test_records_sorted_and_have_fields() -> None:
    w = generate_workload(SMALL)
    ts = [r["t"] for r in w.records]
    assert ts == sorted(ts)
    keys = {
        "t",
        "subscriber",
        "household",
        "device",
        "source",
        "family",
        "site",
        "path",
        "subresources",
        "session_id",
    }
    for r in w.records:
        assert keys <= r.keys()
        assert r["family"] in (4, 6)
        assert ipaddress.ip_address(r["source"]).version == r["family"]
    assert len({r["session_id"] for r in w.records}) == len(w.records)


def test_address_plan_callable_or_list() -> None:
    plan = [example_address_plan(i + 100) for i in range(5)]
    w = generate_workload(WorkloadParams(households=5, seed=1), address_plan=plan)
    assert [h.ipv4 for h in w.households] == [v4 for v4, _ in plan]
    with pytest.raises(ValueError):
        generate_workload(
            WorkloadParams(households=1), address_plan=[("198.18.1.1", "2001:db8::/64")]
        )


def test_zipf_rank_frequency_slope() -> None:
    p = WorkloadParams(households=200, duration_s=3 * 3600, trait_fraction=0.0, zipf_s=1.0, seed=9)
    w = generate_workload(p)
    counts = Counter(r["site"] for r in w.records)
    top = 30
    freq = np.array([counts.get(site_name(r, p.sites), 0) for r in range(1, top + 1)], float)
    slope = np.polyfit(np.log(np.arange(1, top + 1)), np.log(freq), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.15)
    # A different exponent shows up in the slope too.
    p2 = WorkloadParams(households=200, duration_s=3 * 3600, trait_fraction=0.0, zipf_s=0.6, seed=9)
    counts2 = Counter(r["site"] for r in generate_workload(p2).records)
    freq2 = np.array([counts2.get(site_name(r, p2.sites), 0) for r in range(1, top + 1)], float)
    slope2 = np.polyfit(np.log(np.arange(1, top + 1)), np.log(freq2), 1)[0]
    assert slope2 == pytest.approx(-0.6, abs=0.15)


def test_temporary_iids_rotate_but_64_stays() -> None:
    p = WorkloadParams(
        households=30,
        duration_s=3600,
        temp_addr_lifetime_s=300,
        temp_addr_fraction=0.5,
        v6_fraction=1.0,
        seed=5,
    )
    w = generate_workload(p)
    hh = {h.household: h for h in w.households}
    modes = {d.device: d.iid_mode for h in w.households for d in h.devices}
    by_dev: dict[str, set[str]] = defaultdict(set)
    for r in w.records:
        by_dev[r["device"]].add(r["source"])
        net64 = ipaddress.IPv6Network(hh[r["household"]].ipv6_prefix64)
        assert ipaddress.IPv6Address(r["source"]) in net64
        assert net64.subnet_of(ipaddress.IPv6Network(hh[r["household"]].ipv6_prefix56))
    rotated = [d for d, s in by_dev.items() if modes[d] == "temporary" and len(s) > 1]
    stable = [d for d, s in by_dev.items() if modes[d] == "stable"]
    assert rotated, "no temporary-address device ever rotated"
    assert stable and all(len(by_dev[d]) == 1 for d in stable)
    # A temporary device uses at most one address per lifetime (plus one for the phase).
    for d in rotated:
        assert len(by_dev[d]) <= p.duration_s / p.temp_addr_lifetime_s + 1


def test_trait_households_visit_sensitive_sites_others_never() -> None:
    p = WorkloadParams(
        households=100, duration_s=3600, trait_fraction=0.1, sensitive_prob=0.3, seed=2
    )
    w = generate_workload(p)
    trait = {h.household: h.trait for h in w.households}
    assert sum(trait.values()) == 10
    sens = set(p.sensitive_sites)
    visited = {r["household"] for r in w.records if r["site"] in sens}
    assert visited and all(trait[h] for h in visited)
    assert len(visited) >= 8  # nearly every trait household within an hour


def test_write_and_load(tmp_path) -> None:
    w = generate_workload(WorkloadParams(households=3, duration_s=600, seed=1))
    w.write(tmp_path / "w.jsonl", tmp_path / "h.json")
    lines = (tmp_path / "w.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == w.records
    table = load_household_table(tmp_path / "h.json")
    assert table == json.loads(json.dumps(w.household_table()))
    assert table["sensitive_sites"][0] == "pineapple-pizza.example"
