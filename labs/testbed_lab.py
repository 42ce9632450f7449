"""Benchmarks of the testbed itself: time to bring networks up and down, and the accuracy
and throughput of link emulation. Figures are reported, never asserted (shared machines).
Every network it builds is recorded in one run registry (kind `lab-testbed`), so
`cfrbench clean` removes what a killed lab leaves.

    .venv/bin/python -m labs.testbed_lab [--repeat 3] [--scale 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from rich.console import Console
from rich.table import Table

from benchmarks.stats import describe
from testbed.calibration import calibrate
from testbed.lifecycle import RunRegistry, run_registry
from testbed.network import Network
from testbed.scenario import Scenario, with_link_override
from testbed.smoke import iperf_mbit
from topologies import load_topology


def _network(scenario: Scenario, registry: RunRegistry) -> Network:
    """A started network of the scenario's topology (resolved here, above the testbed)."""
    return Network(scenario, registry, topology=load_topology(scenario.topology)).start()


def time_up_down(scenario: Scenario, registry: RunRegistry) -> tuple[float, float]:
    t0 = time.monotonic()
    net = _network(scenario, registry)
    up = time.monotonic() - t0
    t1 = time.monotonic()
    net.stop()
    return up, time.monotonic() - t1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="labs.testbed_lab",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=100, help="subscriber namespaces")
    args = parser.parse_args(argv)
    with run_registry("lab-testbed", info={"lab": "testbed"}) as registry:
        print(f"lab prefix {registry.prefix}", file=sys.stderr, flush=True)
        rows = measure(registry, args.repeat, args.scale)
    table = Table(title="testbed self-benchmark")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def measure(registry: RunRegistry, repeat: int, scale: int) -> list[tuple[str, str]]:
    """Every figure as (name, formatted value); the networks come and go in `registry`."""
    rows: list[tuple[str, str]] = []
    ups, downs = zip(*(time_up_down(Scenario(), registry) for _ in range(repeat)), strict=True)
    rows.append(("default topology up (s, median)", f"{describe(ups).median:.2f}"))
    rows.append(("default topology down (s, median)", f"{describe(downs).median:.2f}"))
    up, down = time_up_down(replace(Scenario(), subscribers=scale, population=0), registry)
    rows.append((f"{scale} subscriber namespaces up (s)", f"{up:.2f}"))
    rows.append((f"{scale} subscriber namespaces down (s)", f"{down:.2f}"))

    # 10 ms one-way on the WAN link only: the delay line's error and its throughput.
    scenario = replace(Scenario(), population=0, subscribers=1)
    scenario = with_link_override(scenario, "access", delay_ms=0.0)
    net = _network(scenario, registry)
    try:
        cal = {c.link_class: c for c in calibrate(net, count=1000, interval_s=0.005)}
        wan = cal["wan"]
        rows.append(("delay line 10 ms one-way: RTT median error (ms)",
                     f"{wan.error_median_ms:.3f}"))
        rows.append(("delay line 10 ms one-way: RTT p99 error (ms)", f"{wan.error_p99_ms:.3f}"))
        rows.append(("TCP through the 10 ms delay line (Mbit/s)",
                     f"{iperf_mbit(net, net.roles.front_door, net.roles.client):.0f}"))
    finally:
        net.stop()
    scenario = with_link_override(scenario, "wan", delay_ms=0.0)
    net = _network(scenario, registry)
    try:
        rows.append(("delay lines in path with no delay configured",
                     str(len(net.delay_nodes()) - len([lk for lk in net.graph.links
                                                       if lk.spec.needs_delay()]))))
        rows.append(("TCP with no delay configured (plain veth, Mbit/s)",
                     f"{iperf_mbit(net, net.roles.front_door, net.roles.client):.0f}"))
    finally:
        net.stop()

    return rows


if __name__ == "__main__":
    main()
