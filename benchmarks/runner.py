"""The benchmark runner: definitions in, raw records out.

For every benchmark (and sweep point) it brings up the network the definition asks for (a
network is shared by benchmarks whose scenarios are identical), starts the services, then
walks the interleaved schedule from `benchmarks.schedule`, switching the path before each
sample and appending one raw record per metric. Nothing here computes statistics: that is
`benchmarks.analysis`, run on the raw records afterwards (and again by `cfrbench report`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.definitions import BenchmarkDefinition, load_benchmarks
from benchmarks.environment import BenchEnv
from benchmarks.leakcheck import ALIASING_POLICIES, run_leak_check
from benchmarks.records import RecordWriter, make_record
from benchmarks.schedule import PlanStep, plan
from benchmarks.tools import TOOLS
from testbed.calibration import calibrate
from testbed.calibration import summary as calibration_summary
from testbed.lifecycle import RunRegistry
from testbed.network import Network
from testbed.scenario import Scenario, with_link_override

DEFAULT_BENCHMARKS = ("latency", "throughput", "connrate")


@dataclass
class NetworkGroup:
    """Plan steps that run on one network (same scenario)."""

    scenario: Scenario
    definition: BenchmarkDefinition
    steps: list[PlanStep] = field(default_factory=list)


@dataclass
class RunOutcome:
    definitions: list[BenchmarkDefinition]
    calibrations: list[dict[str, Any]]
    mechanism: str
    samples: int
    failed_samples: int
    switch_seconds: list[float]
    leak_checks: list[dict] = field(default_factory=list)

    @property
    def leaks_passed(self) -> bool:
        return all(c["passed"] for c in self.leak_checks)


def scenario_for(base: Scenario, definition: BenchmarkDefinition,
                 sweep: dict[str, float]) -> Scenario:
    """The testbed scenario of one benchmark at one sweep point.

    Link delays in definitions are one-way per link class; `detour` is the extra one-way
    delay of the detour (the detour link is crossed twice, so it gets half)."""
    s = replace(base, ech_mode=definition.scenario.ech_mode,
                subscribers=max(base.subscribers, definition.scenario.subscribers))
    delays = dict(definition.scenario.link_delay_ms)
    if sweep and definition.sweep is not None:
        delays[definition.sweep.link] = sweep["delay_ms"]
    for link_class, delay in delays.items():
        one_way = delay / 2 if link_class == "detour" else delay
        s = with_link_override(s, link_class, delay_ms=float(one_way))
    for link_class, rate in definition.scenario.link_rate_mbit.items():
        s = with_link_override(s, link_class, rate_mbit=float(rate))
    return s.validate()


def group_by_network(base: Scenario, definitions: Sequence[BenchmarkDefinition],
                     seed: int) -> list[NetworkGroup]:
    groups: dict[str, NetworkGroup] = {}
    for definition in definitions:
        for step in plan(definition, seed):
            scenario = scenario_for(base, definition, step.sweep)
            key = json.dumps(scenario.to_dict(), sort_keys=True) + json.dumps(
                [definition.scenario.pool_size, definition.scenario.epoch_s])
            group = groups.setdefault(key, NetworkGroup(scenario, definition))
            group.steps.append(step)
    return list(groups.values())


#: Seconds between progress lines when the console is a log, not a terminal.
LOG_PROGRESS_EVERY_S = 30.0


def run_benchmarks(base: Scenario, names: Sequence[str] | None, profile: str, run_dir: Path,
                   registry: RunRegistry, console: Console, seed: int = 0) -> RunOutcome:
    definitions = load_benchmarks(list(names) if names else list(DEFAULT_BENCHMARKS), profile)
    groups = group_by_network(base, definitions, seed)
    total = sum(len(s.schedule) for g in groups for s in g.steps)
    outcome = RunOutcome(definitions, [], "", 0, 0, [])
    # A progress bar on a terminal; in a log (CI), one line per measurement instead.
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False,
                        disable=not console.is_terminal)
    with progress, RecordWriter(run_dir) as writer:
        task = progress.add_task("benchmarks", total=total)
        for index, group in enumerate(groups, 1):
            label = f"network {index}/{len(groups)}"
            progress.update(task, description=f"{label}: starting")
            with Network(group.scenario, registry) as net:
                outcome.mechanism = net.mechanism
                cal = calibrate(net, count=100)
                outcome.calibrations.append({"scenario": group.scenario.to_dict(),
                                             **calibration_summary(cal)})
                paths = sorted({i.path for s in group.steps for i in s.schedule})
                env = BenchEnv(net, registry.make_tmpdir("bench"),
                               ech_mode=group.scenario.ech_mode,
                               pool_size=group.definition.scenario.pool_size or 8,
                               epoch_s=group.definition.scenario.epoch_s or 60.0).start(paths)
                try:
                    for step in group.steps:
                        _run_step(env, step, writer, progress, task, label, outcome)
                    aliasing = [p for p in ALIASING_POLICIES if p in paths]
                    if aliasing:
                        progress.update(task, description=f"{label}: leak check")
                        outcome.leak_checks.append(
                            run_leak_check(env, aliasing, run_dir / "raw", tag=f"net{index}"))
                finally:
                    outcome.switch_seconds.extend(env.switch_seconds)
                    env.stop()
    return outcome


def _run_step(env: BenchEnv, step: PlanStep, writer: RecordWriter, progress: Progress,
              task: Any, label: str, outcome: RunOutcome) -> None:
    tool = TOOLS[step.measurement.tool]
    sweep = f" @ {step.sweep}" if step.sweep else ""
    description = f"{label}: {step.benchmark}/{step.measurement.name}{sweep}"
    progress.update(task, description=description)
    in_log = not progress.console.is_terminal
    if in_log:
        progress.console.print(f"      {description}: {len(step.schedule)} samples, paths "
                               f"{', '.join(step.measurement.paths)}")
    started = last_note = time.monotonic()
    for done, item in enumerate(step.schedule, 1):
        env.select(item.path)
        values, extra = tool(env, item.path, step.measurement.options)
        for metric, value in values.items():
            writer.write(make_record(step.benchmark, step.measurement.name, metric, value, item,
                                     step.sweep, extra=extra))
        outcome.samples += 1
        outcome.failed_samples += any(v is None for v in values.values())
        progress.advance(task)
        now = time.monotonic()
        if in_log and now - last_note >= LOG_PROGRESS_EVERY_S and done < len(step.schedule):
            # A long step in a log (CI, nohup) still says how far it is and when it ends.
            last_note = now
            eta = (now - started) / done * (len(step.schedule) - done)
            progress.console.print(f"        {done}/{len(step.schedule)} samples, "
                                   f"{outcome.failed_samples} failed so far, "
                                   f"about {eta / 60:.1f} min left in this step")


def outcome_dict(outcome: RunOutcome) -> dict[str, Any]:
    switches = sorted(outcome.switch_seconds)
    return {"samples": outcome.samples, "failed_samples": outcome.failed_samples,
            "calibrations": outcome.calibrations, "mechanism": outcome.mechanism,
            "benchmarks": [d.name for d in outcome.definitions],
            "policy_switches": len(switches),
            "policy_switch_median_ms": 1000 * switches[len(switches) // 2] if switches else None}
