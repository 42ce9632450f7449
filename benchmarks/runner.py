"""The benchmark runner: definitions in, raw records out.

For every benchmark (and sweep point) it brings up the network the definition asks for (a
network is shared by benchmarks whose scenarios are identical), calibrates its emulated links
and refuses to measure on a mis-emulated one (the run fails naming the link), starts the
services, then walks the interleaved schedule from `benchmarks.schedule` block by block,
switching the path before each sample and appending one raw record per metric.

Sequential sampling: after every `look_every` measured blocks of a measurement the runner
asks `benchmarks.analysis.decide` (the same code the offline analysis replays) which
comparisons are decided, and stops sampling a path once every comparison it takes part in is
decided; the rest of its blocks are skipped. Report-only measurements always run their
whole budget. The statistics themselves are computed afterwards from the raw records
(`benchmarks.analysis`, again by `cfrbench report`).
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

from benchmarks import paths as path_table
from benchmarks.analysis import Blocks, decide
from benchmarks.calgate import after_measurements, calibration_gate
from benchmarks.definitions import BenchmarkDefinition, available_benchmarks, load_benchmarks
from benchmarks.environment import BenchEnv
from benchmarks.leakcheck import run_leak_check
from benchmarks.records import RecordWriter, make_record
from benchmarks.registry import TOOLS as TOOL_SPECS
from benchmarks.schedule import PlanStep, ScheduleItem, blocks, plan
from benchmarks.sequential import LookPlan
from benchmarks.tools import TOOLS
from relay.policies import CFR_POLICIES
from testbed.lifecycle import RunRegistry
from testbed.network import Network
from testbed.scenario import Scenario, merge_link_overrides
from topologies import load_topology

DEFAULT_BENCHMARKS = ("latency", "throughput", "connrate")
#: report-only benchmarks a profile adds to the defaults when they are defined (the unshaped
#: veth capacity measures the machine, not the path: never in the quick run)
PROFILE_EXTRA_BENCHMARKS = {"full": ("capacity",)}


def default_benchmarks(profile: str) -> list[str]:
    """The benchmarks `cfrbench run` runs when none are named, for this profile."""
    extra = [n for n in PROFILE_EXTRA_BENCHMARKS.get(profile, ())
             if n in available_benchmarks()]
    return [*DEFAULT_BENCHMARKS, *extra]


@dataclass
class NetworkGroup:
    """Plan steps that run on one network (same scenario)."""

    scenario: Scenario
    definition: BenchmarkDefinition
    steps: list[PlanStep] = field(default_factory=list)
    #: user-set link values the definitions replaced on this network ("wan delay 20 ms ->
    #: 10 ms (definition)")
    overridden: list[str] = field(default_factory=list)


@dataclass
class RunOutcome:
    definitions: list[BenchmarkDefinition]
    calibrations: list[dict[str, Any]]
    mechanism: str
    samples: int
    failed_samples: int
    switch_seconds: list[float]
    leak_checks: list[dict] = field(default_factory=list)
    #: per measurement and sweep point: blocks run, and the block at which each path stopped
    sequential: list[dict] = field(default_factory=list)
    #: calibration gate failures found after a network's measurements (emulator drops)
    calibration_failures: list[str] = field(default_factory=list)

    @property
    def leaks_passed(self) -> bool:
        return all(c["passed"] for c in self.leak_checks)


def scenario_for(base: Scenario, definition: BenchmarkDefinition,
                 sweep: dict[str, float]) -> Scenario:
    """The testbed scenario of one benchmark at one sweep point (see `scenario_and_overrides`)."""
    return scenario_and_overrides(base, definition, sweep)[0]


def scenario_and_overrides(base: Scenario, definition: BenchmarkDefinition,
                           sweep: dict[str, float]) -> tuple[Scenario, list[str]]:
    """The testbed scenario of one benchmark at one sweep point, and one line per link value
    the user set that the definition replaced (printed per network and kept in provenance:
    what the user sets is what runs unless a definition says otherwise, and then it says so).

    Link delays in definitions are one-way per link class; `detour` is a path's extra one-way
    delay, split over its crossings in one place (testbed.scenario.detour_link_delay_ms)."""
    s = replace(base, ech_mode=definition.scenario.ech_mode,
                subscribers=max(base.subscribers, definition.scenario.subscribers))
    delays = dict(definition.scenario.link_delay_ms)
    if sweep and definition.sweep is not None:
        delays[definition.sweep.link] = sweep["delay_ms"]
    scenario, overridden = merge_link_overrides(s, delays, definition.scenario.link_rate_mbit,
                                                definition.scenario.link_queue_packets)
    return scenario.validate(), overridden


def group_by_network(base: Scenario, definitions: Sequence[BenchmarkDefinition],
                     seed: int) -> list[NetworkGroup]:
    groups: dict[str, NetworkGroup] = {}
    for definition in definitions:
        for step in plan(definition, seed):
            scenario, overridden = scenario_and_overrides(base, definition, step.sweep)
            key = json.dumps(scenario.to_dict(), sort_keys=True) + json.dumps(
                [definition.scenario.pool_size, definition.scenario.epoch_s])
            group = groups.setdefault(key, NetworkGroup(scenario, definition))
            group.overridden = sorted(set(group.overridden) | set(overridden))
            group.steps.append(step)
    return list(groups.values())


#: Seconds between progress lines when the console is a log, not a terminal.
LOG_PROGRESS_EVERY_S = 30.0


def run_benchmarks(base: Scenario, names: Sequence[str] | None, profile: str, run_dir: Path,
                   registry: RunRegistry, console: Console, seed: int = 0,
                   family: str | None = None) -> RunOutcome:
    """Run the benchmarks; `family` ("ipv4", "ipv6", "dual": `cfrbench run --family`)
    replaces the definitions' address families (default: each definition's own, see
    benchmarks.definitions.load_benchmarks)."""
    definitions = load_benchmarks(list(names) if names else default_benchmarks(profile),
                                  profile, family=family)
    groups = group_by_network(base, definitions, seed)
    definitions_by_name = {d.name: d for d in definitions}
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
            if group.overridden:
                progress.console.print(f"[yellow]      {label}: the benchmark definition "
                                       f"overrides your {'; '.join(group.overridden)}[/]")
            with Network(group.scenario, registry,
                         topology=load_topology(group.scenario.topology)) as net:
                outcome.mechanism = net.mechanism
                progress.update(task, description=f"{label}: calibrating")
                where = f"{label} ({_describe(group)})"
                record, cal = calibration_gate(
                    net, where,
                    {"network": index, "benchmarks": sorted({s.benchmark for s in group.steps}),
                     "sweep": group.steps[0].sweep, "scenario": group.scenario.to_dict(),
                     "overridden_by_definition": group.overridden})
                outcome.calibrations.append(record)
                paths = sorted({i.path for s in group.steps for i in s.schedule})
                env = BenchEnv(net, registry.make_tmpdir("bench"),
                               ech_mode=group.scenario.ech_mode,
                               pool_size=group.definition.scenario.pool_size or 8,
                               epoch_s=group.definition.scenario.epoch_s or 60.0).start(paths)
                try:
                    for step in group.steps:
                        _run_step(env, step, writer, progress, task, label, outcome,
                                  definitions_by_name[step.benchmark])
                    aliasing = aliasing_policies(paths)
                    if aliasing:
                        progress.update(task, description=f"{label}: leak check")
                        outcome.leak_checks.append(
                            run_leak_check(env, aliasing, run_dir / "raw", tag=f"net{index}"))
                    failures = after_measurements(net, record, cal)
                    outcome.calibration_failures += [f"{where}: {f}" for f in failures]
                finally:
                    outcome.switch_seconds.extend(env.switch_seconds)
                    env.stop()
    return outcome


def aliasing_policies(paths: Sequence[str]) -> list[str]:
    """The CFR policies (relay.policies.CFR_POLICIES) the measured paths put on the relay:
    the leak check runs under each. Path and policy names are different things (a path is
    how the client is reached, a policy what the relay does); the path table
    (benchmarks/paths.py) maps one to the other."""
    used = {path_table.policy_of(p) for p in paths}
    return [policy for policy in CFR_POLICIES if policy in used]


def _describe(group: NetworkGroup) -> str:
    names = sorted({s.benchmark for s in group.steps})
    sweep = group.steps[0].sweep if group.steps else {}
    return ", ".join(names) + (f" @ {sweep}" if sweep else "")


class StepState:
    """The measured values of one step so far, and which paths still need samples."""

    def __init__(self, definition: BenchmarkDefinition, step: PlanStep) -> None:
        self.definition = definition
        self.step = step
        m = step.measurement
        self.metrics = {ms.name: ms for ms in TOOL_SPECS[m.tool].metrics}
        self.pairs = definition.analysis.pairs_for(m)
        self.plan = LookPlan(m.repetitions, m.look_every, definition.analysis.alpha)
        self.looks = set(self.plan.looks) if not m.report_only else set()
        self.values: dict[tuple[str, str], Blocks] = {}
        self.active = list(m.paths)
        self.stopped: dict[str, int] = {}

    def add(self, item: ScheduleItem, values: dict[str, float | None]) -> None:
        if item.warmup:
            return
        for metric, value in values.items():
            if value is not None:
                self.values.setdefault((item.path, metric), {})[item.block] = (item.rep,
                                                                               float(value))

    def look(self, blocks_done: int) -> list[str]:
        """At a planned look: stop every path whose comparisons are all decided; returns the
        paths stopped now."""
        if blocks_done not in self.looks:
            return []
        spec, m = self.definition.analysis, self.step.measurement
        open_paths: set[str] = set()
        for a_path, b_path in self.pairs:
            for metric, ms in self.metrics.items():
                d = decide(ms, metric, spec, m, self.values.get((a_path, metric), {}),
                           self.values.get((b_path, metric), {}), available_blocks=blocks_done)
                if not d.decided:
                    open_paths.update((a_path, b_path))
        stopped = [p for p in self.active if p not in open_paths]
        for p in stopped:
            self.stopped[p] = blocks_done
        self.active = [p for p in self.active if p in open_paths]
        return stopped

    def to_dict(self, blocks_run: int) -> dict[str, Any]:
        m = self.step.measurement
        return {"benchmark": self.step.benchmark, "measurement": m.name,
                "sweep": self.step.sweep, "report_only": m.report_only,
                "budget_blocks": m.repetitions, "blocks_run": blocks_run,
                "plan": self.plan.to_dict(), "stopped": dict(self.stopped)}


def _run_step(env: BenchEnv, step: PlanStep, writer: RecordWriter, progress: Progress,
              task: Any, label: str, outcome: RunOutcome,
              definition: BenchmarkDefinition) -> None:
    tool = TOOLS[step.measurement.tool]
    state = StepState(definition, step)
    sweep = f" @ {step.sweep}" if step.sweep else ""
    description = f"{label}: {step.benchmark}/{step.measurement.name}{sweep}"
    progress.update(task, description=description)
    in_log = not progress.console.is_terminal
    total = len(step.schedule)
    if in_log:
        progress.console.print(f"      {description}: up to {total} samples, looks after "
                               f"blocks {list(state.plan.looks)}, paths "
                               f"{', '.join(step.measurement.paths)}")
    started = last_note = time.monotonic()
    done = blocks_run = 0
    for block in blocks(step.schedule):
        items = [i for i in block if i.path in state.active]
        if not items:
            progress.advance(task, len(block))
            continue
        for item in items:
            env.select(item.path)
            values, extra = tool(env, item.path, step.measurement.options)
            for metric, value in values.items():
                writer.write(make_record(step.benchmark, step.measurement.name, metric, value,
                                         item, step.sweep, extra=extra))
            state.add(item, values)
            outcome.samples += 1
            outcome.failed_samples += any(v is None for v in values.values())
            done += 1
        progress.advance(task, len(block))
        if block[0].warmup:
            continue
        blocks_run = block[0].rep + 1
        if blocks_run >= step.measurement.repetitions:
            break  # budget spent: the analysis takes the last look
        stopped = state.look(blocks_run)
        if stopped and in_log:
            progress.console.print(f"        after {blocks_run} blocks: decided, stop "
                                   f"sampling {', '.join(stopped)}")
        now = time.monotonic()
        if in_log and now - last_note >= LOG_PROGRESS_EVERY_S and state.active:
            # A long step in a log (CI, nohup) still says how far it is.
            last_note = now
            per_sample = (now - started) / max(done, 1)
            left = (step.measurement.repetitions - blocks_run) * len(state.active)
            progress.console.print(f"        {done} samples, {outcome.failed_samples} failed "
                                   f"so far, at most {per_sample * left / 60:.1f} min left "
                                   f"in this step")
    outcome.sequential.append(state.to_dict(blocks_run))


def outcome_dict(outcome: RunOutcome) -> dict[str, Any]:
    switches = sorted(outcome.switch_seconds)
    return {"samples": outcome.samples, "failed_samples": outcome.failed_samples,
            "calibrations": outcome.calibrations, "mechanism": outcome.mechanism,
            "sequential": outcome.sequential,
            "calibration_failures": outcome.calibration_failures,
            "benchmarks": [d.name for d in outcome.definitions],
            "policy_switches": len(switches),
            "policy_switch_median_ms": 1000 * switches[len(switches) // 2] if switches else None}
