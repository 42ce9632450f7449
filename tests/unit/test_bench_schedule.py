"""Run order: every block holds each path once, blocks differ, warm-ups come first and are
marked, and the same seed gives the same schedule."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.definitions import DEFINITIONS_DIR, load_definition
from benchmarks.schedule import blocks, derive_seed, make_schedule, plan

PATHS = ["direct", "cfr-flow", "proxy"]


def test_each_block_has_each_path_once_warmups_first() -> None:
    s = make_schedule(PATHS, repetitions=20, warmup=3, seed=7)
    assert len(s) == 23 * 3
    bl = list(blocks(s))
    assert len(bl) == 23
    for i, b in enumerate(bl):
        assert sorted(item.path for item in b) == sorted(PATHS)
        assert [item.order for item in b] == [0, 1, 2]
        assert {item.block for item in b} == {i}
        assert {item.warmup for item in b} == {i < 3}
    warm = [it for it in s if it.warmup]
    measured = [it for it in s if not it.warmup]
    assert all(a.block < b.block for a in warm for b in measured)
    for p in PATHS:
        assert sorted(it.rep for it in measured if it.path == p) == list(range(20))
        assert sorted(it.rep for it in warm if it.path == p) == [0, 1, 2]


def test_order_is_randomized_and_balanced() -> None:
    s = make_schedule(PATHS, repetitions=600, warmup=0, seed=1)
    orders = {tuple(it.path for it in b) for b in blocks(s)}
    assert len(orders) == 6  # all permutations of 3 paths occur
    first = Counter(b[0].path for b in blocks(s))
    assert all(150 <= first[p] <= 250 for p in PATHS), first


def test_seed_reproducible() -> None:
    a = make_schedule(PATHS, 10, 2, seed=42)
    assert a == make_schedule(PATHS, 10, 2, seed=42)
    assert a != make_schedule(PATHS, 10, 2, seed=43)
    assert derive_seed(1, "latency", "ttfb") == derive_seed(1, "latency", "ttfb")
    assert derive_seed(1, "latency", "ttfb") != derive_seed(1, "latency", "hs")


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        make_schedule([], 3)
    with pytest.raises(ValueError):
        make_schedule(["direct", "direct"], 3)
    with pytest.raises(ValueError):
        make_schedule(PATHS, -1)


def test_plan_sweeps_outermost_and_seeds_per_measurement() -> None:
    full = load_definition(DEFINITIONS_DIR / "latency.toml", "full")
    steps = plan(full, seed=3)
    n = len(full.measurements)
    assert [s.sweep for s in steps[:n]] == [{"delay_ms": 0.0}] * n
    assert [s.measurement.name for s in steps[:n]] == [m.name for m in full.measurements]
    assert len(steps) == 4 * n
    assert plan(full, seed=3)[0].schedule == steps[0].schedule
    assert steps[0].schedule != steps[n].schedule  # other sweep point, other order
    hs = steps[0]
    assert hs.measurement.name == "connection"
    assert len(hs.schedule) == (hs.measurement.repetitions + hs.measurement.warmup) * 12  # dual
