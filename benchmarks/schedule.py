"""Interleaved, randomized, seeded run order of the paths being compared.

Why: the machines are shared and drift (other jobs, thermal state, caches). Running all of A,
then all of B would turn drift into a fake difference between A and B. Instead every block
runs each path exactly once, in a fresh random order (A,B,C / C,A,B / B,C,A ...), so drift hits
all paths alike and within-run comparisons stay fair. Warm-up blocks come first, are marked
and discarded by the analysis (first connections pay for ARP, conntrack, caches, JIT).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.definitions import BenchmarkDefinition, Measurement


@dataclass(frozen=True)
class ScheduleItem:
    """One sample to take. Fields map 1:1 to the raw record's rep/block/order/warmup."""

    path: str
    #: 0-based repetition index within its kind (measured reps and warm-ups count separately)
    rep: int
    #: 0-based block index over the whole schedule, warm-up blocks included
    block: int
    #: position within the block (0 = ran first)
    order: int
    warmup: bool


def derive_seed(seed: int, *parts: object) -> int:
    """A stable per-purpose seed (e.g. per benchmark/measurement/sweep point) from the run seed.

    Uses CRC-32 of the parts, not `hash()`, which is salted per process and would make runs
    irreproducible."""
    key = "\x1f".join(str(p) for p in parts).encode()
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(key)])
    return int(ss.generate_state(1)[0])


def make_schedule(
    paths: Sequence[str], repetitions: int, warmup: int = 0, seed: int = 0
) -> list[ScheduleItem]:
    """`warmup` warm-up blocks then `repetitions` measured blocks; each block has every path
    exactly once, in a seeded random order. Same arguments -> same schedule."""
    if not paths:
        raise ValueError("make_schedule: no paths")
    if len(set(paths)) != len(paths):
        raise ValueError(f"make_schedule: duplicate paths in {list(paths)}")
    if repetitions < 0 or warmup < 0:
        raise ValueError("make_schedule: repetitions and warmup must be >= 0")
    rng = np.random.default_rng(seed)
    items: list[ScheduleItem] = []
    block = 0
    for is_warmup, count in ((True, warmup), (False, repetitions)):
        for rep in range(count):
            for order, idx in enumerate(rng.permutation(len(paths))):
                items.append(ScheduleItem(paths[int(idx)], rep, block, order, is_warmup))
            block += 1
    return items


def blocks(schedule: Sequence[ScheduleItem]) -> Iterator[list[ScheduleItem]]:
    """Group a schedule into its blocks, in order (for a runner that reconfigures per block)."""
    current: list[ScheduleItem] = []
    for item in schedule:
        if current and item.block != current[0].block:
            yield current
            current = []
        current.append(item)
    if current:
        yield current


@dataclass(frozen=True)
class PlanStep:
    """One measurement at one sweep point, with its interleaved schedule."""

    benchmark: str
    sweep: dict[str, float]
    measurement: Measurement
    schedule: list[ScheduleItem]


def plan(definition: BenchmarkDefinition, seed: int = 0) -> list[PlanStep]:
    """The whole run of one (profile-resolved) benchmark: sweep points outermost (changing a
    link delay is slow and must settle), then each measurement with its own seeded schedule.

    The seed of each schedule is derived from (seed, benchmark, measurement, sweep point), so
    adding a measurement does not reshuffle the others."""
    steps = []
    for point in definition.sweep_points():
        for m in definition.measurements:
            s = derive_seed(seed, definition.name, m.name, sorted(point.items()))
            steps.append(
                PlanStep(definition.name, dict(point), m,
                         make_schedule(m.paths, m.repetitions, m.warmup, s))
            )
    return steps
