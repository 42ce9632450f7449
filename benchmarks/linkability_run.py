"""`cfrbench run linkability`: the emulated linkability experiment.

One seeded workload (households with several devices, dual stack, RFC 8981 temporary
addresses, Zipf sites, Poisson sessions, the pineapple-pizza trait) is replayed by the real
ECH load generator on the population host, once per policy, through the real relay on the
ISP edge (`cfr run`, so `cfr-epoch` rotates on its own clock) to the real front door with
resumption on. The ground truth and the front-door log of each replay are then joined and
attacked by every linker (`benchmarks.linkability`), and the ISP-scale model is run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from benchmarks.environment import BenchEnv
from benchmarks.linkability.analysis import analyse_emulation
from benchmarks.linkability.model import ModelParams, run_model
from benchmarks.linkability.simulator import SimParams
from benchmarks.linkability.workload import WorkloadParams, generate_workload
from testbed.errors import ParameterError
from testbed.lifecycle import RunRegistry
from testbed.network import Network
from testbed.scenario import Scenario
from testbed.services import ech as ech_service

POPULATION_HOST = "crowd"
# (policy as the analysis names it, relay policy, everyone on temporary IPv6 addresses?)
POLICY_RUNS = (
    ("route", "route", False),
    ("cgn", "cgn", False),
    ("nptv6", "nptv6", False),
    ("ipv6-temp", "route", True),
    ("cfr-flow", "cfr-flow", False),
    ("cfr-epoch", "cfr-epoch", False),
)


@dataclass(frozen=True)
class LinkabilityParams:
    households: int = 200
    duration_s: float = 60.0
    epoch_s: float = 15.0
    pool_size: int = 8
    sessions_per_device_per_hour: float = 60.0
    window_s: float = 15.0
    seed: int = 1
    model: str = "quick"  # quick | full | none

    def validate(self, population: int) -> LinkabilityParams:
        if not 2 <= self.households <= population:
            raise ParameterError("households", self.households,
                                 f"2..{population} (the population host's subscribers)")
        if not 5 <= self.duration_s <= 3600:
            raise ParameterError("duration", self.duration_s, "5..3600 seconds")
        if self.model not in ("quick", "full", "none"):
            raise ParameterError("model", self.model, "quick, full or none")
        return self


def _workloads(p: LinkabilityParams, net: Network, first_subscriber: int):
    plan = net.graph.plan

    def address_plan(i: int) -> tuple[str, str]:
        sub = plan.subscriber(first_subscriber + i)
        return str(sub.v4), str(sub.v6_prefix)

    base = WorkloadParams(seed=p.seed, households=p.households, duration_s=p.duration_s,
                          sessions_per_device_per_hour=p.sessions_per_device_per_hour,
                          temp_addr_lifetime_s=max(p.duration_s / 3, 1.0))
    return (generate_workload(base, address_plan),
            generate_workload(replace(base, temp_addr_fraction=1.0), address_plan))


def _add_device_addresses(net: Network, workloads) -> int:
    """Devices' IPv6 addresses (stable and temporary) onto the population host's interface."""
    present = {a.split("/")[0] for addrs in net.info[POPULATION_HOST].addresses.values()
               for a in addrs}
    wanted = sorted({r["source"] for w in workloads for r in w.records
                     if ":" in r["source"] and r["source"] not in present})
    lines = [f"addr add {a}/64 dev {POPULATION_HOST}-acc nodad" for a in wanted]
    net.mn[POPULATION_HOST].ip_batch(lines)
    return len(wanted)


def replay(env: BenchEnv, loader: ech_service.LoadGenerator, policy: str, records: list[dict],
           out: Path, name: str, duration_s: float) -> tuple[Path, Path, dict]:
    """Replay a workload under one relay policy (`cfr run`); write ground truth and the
    front door's log of the same connections. Returns both paths and counts."""
    env.relay.start_daemon(policy)
    before = len(env.cdn.front.records())
    result = loader.run(workload=records, resumption=env.resumption, check=False,
                        timeout=duration_s * 4 + 120)
    time.sleep(2.0)  # the front door logs a connection when it closes
    seen = env.cdn.front.records()[before:]
    truth, front = out / f"truth-{name}.jsonl", out / f"frontdoor-{name}.jsonl"
    truth.write_text("".join(json.dumps(r) + "\n" for r in result.records))
    front.write_text("".join(json.dumps(r) + "\n" for r in seen))
    failed = sum(1 for r in result.records if r.get("error"))
    return truth, front, {"flows": len(result.records), "failed": failed, "seen": len(seen)}


def run_linkability(base: Scenario, params: LinkabilityParams, run_dir: Path,
                    registry: RunRegistry, console: Console) -> dict:
    scenario = replace(base, ech_mode="shared", population=max(base.population,
                                                                   params.households))
    params.validate(scenario.population)
    out = run_dir / "raw" / "linkability"
    out.mkdir(parents=True, exist_ok=True)
    with Network(scenario, registry) as net:
        workload, temp_workload = _workloads(params, net, scenario.subscribers)
        workload.write(out / "workload.jsonl", out / "households.json")
        temp_workload.write(out / "workload-ipv6-temp.jsonl", out / "households-ipv6-temp.json")
        added = _add_device_addresses(net, (workload, temp_workload))
        console.print(f"      workload: {params.households} households, "
                      f"{len(workload.records)} sessions over {params.duration_s:.0f} s, "
                      f"{added} device IPv6 addresses added to {POPULATION_HOST}")
        env = BenchEnv(net, registry.make_tmpdir("linkability"), ech_mode="shared",
                       pool_size=params.pool_size, epoch_s=params.epoch_s, resumption=True,
                       named_sites=tuple(workload.params.sensitive_sites))
        env.start(["direct"])
        truth: dict[str, Path] = {}
        front: dict[str, Path] = {}
        try:
            loader = ech_service.LoadGenerator(net[POPULATION_HOST], dns=env.dns.address,
                                               ca_file=env.ca_file, workdir=out / "load")
            for name, policy, temporary in POLICY_RUNS:
                t0 = time.monotonic()
                records = (temp_workload if temporary else workload).records
                truth[name], front[name], errors = replay(env, loader, policy, records, out,
                                                          name, params.duration_s)
                console.print(f"      {name:10} {errors['flows']:5} flows "
                              f"({errors['failed']} failed), {errors['seen']} seen by the "
                              f"front door, {time.monotonic() - t0:.0f} s")
            env.relay.stop_daemon()
        finally:
            env.stop()
    model_params = SimParams(subscribers=params.households, duration_s=params.duration_s,
                             pool=params.pool_size, epoch_s=params.epoch_s,
                             window_s=params.window_s, seed=params.seed)
    section = analyse_emulation(truth, front, workload, run_dir, window_s=params.window_s,
                                model_params=model_params)
    section["parameters"] = {k: getattr(params, k) for k in params.__dataclass_fields__}
    if params.model != "none":
        mp = ModelParams.quick() if params.model == "quick" else ModelParams()
        section["model"] = run_model(mp, run_dir)
    return section
