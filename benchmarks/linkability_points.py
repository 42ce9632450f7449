"""Model against emulation at >= 3 (pool, epoch, households) points, in one command.

    sudo .venv/bin/python -m benchmarks.linkability_points [--out DIR] [--point P:E:H[:D]]...

Why a command of its own: issue 15 item 5 asks that the model be validated against the
real relay at several points and that the check can fail. For each point this brings up the
testbed (its own run prefix), generates ONE seeded workload (``workload.generate_workload``,
the generator the linkability run uses), replays it through the real relay (``cfr run``)
under ``cfr-flow``, ``cfr-epoch`` and ``cgn`` with that point's pool size and epoch, joins
ground truth with the front-door log, then runs the model on the same workload records and
compares behavioural signatures with paired household-bootstrap CIs, negative controls
included (``benchmarks.linkability.validate_points``). Results go to ``DIR/validate_points.json``
and ``.md``; raw records under ``DIR/raw/point-N``, so ``--reanalyse DIR`` recomputes the
table offline without root.

Devices run on the population host by default (no per-device namespaces: the signatures
concern the relay's alias choice, not fingerprints, and bring-up costs time); pass
``--device-namespaces`` to run them as the linkability job does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console

from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.observations import join_records, load_jsonl
from benchmarks.linkability.validate_points import (
    DEFAULT_POINTS,
    POLICIES,
    Point,
    clock_offset,
    evaluate_point,
    markdown,
    model_flows,
    parse_point,
    with_duration,
)
from benchmarks.linkability.workload import Workload, WorkloadParams, generate_workload
from benchmarks.linkability_run import (
    LinkabilityParams,
    population_host,
    replay,
    setup_devices,
)
from testbed.lifecycle import RunRegistry, run_registry
from testbed.network import Network
from testbed.scenario import Scenario
from testbed.services import ech as ech_service
from topologies import load_topology


def _workload(p: LinkabilityParams, net: Network, first_subscriber: int) -> Workload:
    """The linkability run's workload generator with this point's parameters."""
    plan = net.graph.plan

    def address_plan(i: int) -> tuple[str, str]:
        sub = plan.subscriber(first_subscriber + i)
        return str(sub.v4), str(sub.v6_prefix)

    return generate_workload(
        WorkloadParams(seed=p.seed, households=p.households, duration_s=p.duration_s,
                       sessions_per_device_per_hour=p.sessions_per_device_per_hour,
                       temp_addr_lifetime_s=max(p.duration_s / 3, 1.0),
                       trait_fraction=p.trait_fraction),
        address_plan)


def _add_addresses(net: Network, workload: Workload) -> int:
    host = population_host(net)
    present = {a.split("/")[0] for addrs in net.info[host].addresses.values() for a in addrs}
    wanted = sorted({r["source"] for r in workload.records
                     if ":" in r["source"] and r["source"] not in present})
    net.mn[host].ip_batch([f"addr add {a}/64 dev {net.roles.interface(host)} nodad"
                           for a in wanted])
    return len(wanted)


def emulate_point(point: Point, index: int, base: Scenario, run_dir: Path,
                  registry: RunRegistry, console: Console, seed: int,
                  device_namespaces: bool) -> Path:
    """Replay one point's workload under every policy; returns its raw directory."""
    out = run_dir / "raw" / f"point-{index}"
    out.mkdir(parents=True, exist_ok=True)
    params = LinkabilityParams(households=point.households, duration_s=point.duration_s,
                               epoch_s=point.epoch_s, pool_size=point.pool, seed=seed,
                               model="none", device_namespaces=device_namespaces)
    scenario = replace(base, ech_mode="shared",
                       population=max(base.population, point.households))
    params.validate(scenario.population)
    (out / "point.json").write_text(json.dumps(asdict(point), indent=1))
    with Network(scenario, registry, topology=load_topology(scenario.topology)) as net:
        workload = _workload(params, net, scenario.subscribers)
        workload.write(out / "workload.jsonl", out / "households.json")
        added = _add_addresses(net, workload)
        devices, profiles, _ = setup_devices(net, (workload,), params, out)
        if devices is not None:
            registry.defer(devices.down)
        console.print(f"  point {index} ({point.label}): {len(workload.records)} sessions over "
                      f"{point.duration_s:.0f} s, {added} IPv6 addresses")
        from benchmarks.environment import BenchEnv

        env = BenchEnv(net, registry.make_tmpdir(f"points{index}"), ech_mode="shared",
                       pool_size=point.pool, epoch_s=point.epoch_s, resumption=True,
                       named_sites=tuple(workload.params.sensitive_sites))
        env.start(["direct"])
        try:
            loader = ech_service.LoadGenerator(net[population_host(net)],
                                               dns=env.dns.address, ca_file=env.ca_file,
                                               workdir=out / "load")
            for pol in POLICIES:
                t0 = time.monotonic()
                _, _, c = replay(env, loader, pol, workload.records, out, pol,
                                 point.duration_s, profiles)
                console.print(f"    {pol:10} {c['flows']:5} flows ({c['failed']} failed), "
                              f"{c['seen']} seen by the front door, "
                              f"{time.monotonic() - t0:.0f} s")
            env.relay.stop_daemon()
        finally:
            env.stop()
            if devices is not None:
                devices.down()
    return out


class _Recorded:
    """A workload read back from a point's raw directory (records + household table)."""

    def __init__(self, raw: Path) -> None:
        self.records = load_jsonl(raw / "workload.jsonl")
        self._table = json.loads((raw / "households.json").read_text())

    def household_table(self) -> dict:
        return self._table


def analyse_point(raw: Path, seed: int = 1, resamples: int = 400) -> dict:
    """The comparison for one point from its raw records (no root, re-runnable)."""
    point = Point(**json.loads((raw / "point.json").read_text()))
    workload = _Recorded(raw)
    table = workload.household_table()
    order = [h["household"] for h in table["households"]]
    emulated, offsets, coverage = {}, {}, {}
    for pol in POLICIES:
        truth_p, front_p = raw / f"truth-{pol}.jsonl", raw / f"frontdoor-{pol}.jsonl"
        if not truth_p.is_file() or not front_p.is_file():
            continue
        truth = load_jsonl(truth_p)
        ft, cov = join_records(truth, load_jsonl(front_p), table["sensitive_sites"], order)
        emulated[pol] = ft.labelled()
        offsets[pol] = clock_offset(truth, workload.records)
        coverage[pol] = cov.as_dict()

    def model_for(relay: str, pol: str, block: int | None, key: int) -> FlowTable:
        # the model on the clock of the replay it is compared with; key 0 is the one shown
        return model_flows(workload, pol, point, offsets[relay], seed=seed + 7919 * key,
                           cgn_block=block)

    res = evaluate_point(point, emulated, model_for, len(order), resamples=resamples,
                         seed=seed)
    res["coverage"] = coverage
    res["clock_offset_s"] = offsets
    return res


def _complete(raw: Path, point: Point) -> bool:
    """A point directory replayed under every policy with the same parameters."""
    try:
        same = Point(**json.loads((raw / "point.json").read_text())) == point
    except (OSError, ValueError, TypeError):
        return False
    return same and all((raw / f"{k}-{pol}.jsonl").is_file()
                        for pol in POLICIES for k in ("truth", "frontdoor"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.linkability_points",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="run directory (default results/points-<time>)")
    ap.add_argument("--point", action="append", type=parse_point, default=None,
                    help="POOL:EPOCH_S:HOUSEHOLDS[:DURATION_S]; repeat; default "
                         + ", ".join(f"{p.pool}:{p.epoch_s:g}:{p.households}:{p.duration_s:g}"
                                     for p in DEFAULT_POINTS))
    ap.add_argument("--workload-duration", type=float, default=None,
                    help="override every point's workload length (seconds)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--resamples", type=int, default=400)
    ap.add_argument("--device-namespaces", action="store_true")
    ap.add_argument("--resume", action="store_true",
                    help="keep points of --out already replayed under every policy, run the rest")
    ap.add_argument("--reanalyse", type=Path, default=None,
                    help="recompute the table from a previous run directory (no root)")
    args = ap.parse_args(argv)
    console = Console()
    t0 = time.monotonic()
    if args.reanalyse is not None:
        run_dir = args.reanalyse
        raws = sorted((run_dir / "raw").glob("point-*"), key=lambda p: int(p.name[6:]))
    else:
        if os.geteuid() != 0:
            console.print("needs root (network namespaces); --reanalyse DIR runs without")
            return 2
        from benchmarks.results import new_run_id
        from testbed import paths

        run_dir = args.out or paths.RESULTS_DIR / f"points-{new_run_id()}"
        if (not args.resume and (run_dir / "raw").exists()
                and any((run_dir / "raw").iterdir())):
            console.print(f"{run_dir} already holds raw records; choose another --out "
                          "(or --resume)")
            return 2
        try:
            points = [p.validate() for p in
                      with_duration(args.point or DEFAULT_POINTS, args.workload_duration)]
        except ValueError as exc:
            console.print(f"bad point: {exc}")
            return 2
        raws = []
        with run_registry("points", info={"run_dir": str(run_dir)}) as registry:
            console.print(f"validate-points: {len(points)} points, run prefix "
                          f"{registry.prefix}, out {run_dir}")
            for i, pt in enumerate(points):
                done = run_dir / "raw" / f"point-{i}"
                if args.resume and _complete(done, pt):
                    console.print(f"  point {i} ({pt.label}): kept from {done}")
                    raws.append(done)
                    continue
                if done.exists():
                    import shutil

                    shutil.rmtree(done)  # a partial point of this run: replay it afresh
                raws.append(emulate_point(pt, i, Scenario(), run_dir, registry,
                                          console, args.seed, args.device_namespaces))
    emulated_s = time.monotonic() - t0
    results = [analyse_point(r, seed=args.seed, resamples=args.resamples) for r in raws]
    wall = time.monotonic() - t0
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    note = (f"Reanalysed offline from {run_dir / 'raw'} in {wall:.0f} s. " if args.reanalyse
            else f"Emulation {emulated_s:.0f} s, total {wall:.0f} s. ") + (
            "Load average "
            f"{' '.join(f'{x:.2f}' for x in load or ())} at the end (shared 2-core machine).")
    md = markdown(results, wall_s=wall, note=note)
    (run_dir / "validate_points.md").write_text(md)
    (run_dir / "validate_points.json").write_text(json.dumps(
        {"points": results, "ok": all(r["ok"] for r in results) and bool(results),
         "wall_s": wall, "emulation_s": emulated_s, "load_average": load},
        indent=1, default=float))
    print(md, flush=True)
    console.print(f"written: {run_dir / 'validate_points.md'} and .json")
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
