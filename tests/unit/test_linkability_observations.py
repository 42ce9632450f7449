"""Join of ground truth with the front-door log, on the golden hand-made trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.linkability import linkers as lk
from benchmarks.linkability.observations import (
    access_observer_view,
    join_records,
    load_jsonl,
    trait_vector,
)
from benchmarks.linkability.workload import load_household_table

GOLDEN = Path(__file__).parent / "golden" / "linkability"


def load() -> tuple:
    gt = load_jsonl(GOLDEN / "ground_truth.jsonl")
    fd = load_jsonl(GOLDEN / "frontdoor.jsonl")
    table = load_household_table(GOLDEN / "households.json")
    return gt, fd, table


def test_join_coverage_counts_both_sides() -> None:
    gt, fd, table = load()
    hh = [h["household"] for h in table["households"]]
    ft, cov = join_records(gt, fd, table["sensitive_sites"], hh)
    assert (cov.ground_truth, cov.frontdoor, cov.joined) == (7, 7, 6)
    assert (cov.ground_truth_only, cov.frontdoor_only) == (1, 1)
    assert cov.coverage == 6 / 7
    assert len(ft) == 7  # the front-door-only flow is kept, unlabelled
    assert (ft.household == -1).sum() == 1
    lab = ft.labelled()
    assert len(lab) == 6
    assert [ft.names["household"][h] for h in lab.household] == ["hh-A"] * 3 + ["hh-B"] * 2 + [
        "hh-C"
    ]
    assert lab.sensitive.tolist() == [True] + [False] * 5
    assert trait_vector(lab, table).tolist() == [True, False, False]


def test_golden_linkers() -> None:
    gt, fd, table = load()
    ft, _ = join_records(gt, fd, table["sensitive_sites"])
    lab = ft.labelled()
    a = lk.same_address(lab)
    p64 = lk.same_prefix(64)(lab)
    r = lk.resumption(lab)
    assert a[0] != a[1] and p64[0] == p64[1]  # temporary addresses, one /64
    assert p64[0] != p64[3] and p64[3] == p64[4]
    assert r[3] == r[4] and r[0] != r[1]
    assert len(np.unique(r)) == 5


def test_access_observer_sees_public_name_only() -> None:
    gt, fd, _ = load()
    v = access_observer_view(gt, fd)
    assert v["flows"] == 6 and v["subscribers"] == 3
    assert v["leaked_destination_share_mean"] == 0.0
    fd2 = [dict(r, ech="rejected") if r["conn_id"] == 6 else r for r in fd]
    v2 = access_observer_view(gt, fd2)
    assert v2["leaked_destination_share_mean"] == (0 + 0 + 1) / 3
