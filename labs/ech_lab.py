"""Loopback benchmark of the ECH endpoints, measured within one run, interleaved.

What it reports (see the issue "Real ECH front door ..."):
  * handshake rate of `echd serve` with ECH vs without ECH (ratio; target >= 0.8), both
    as the end-to-end rate on this machine and as the front door's own CPU time per
    handshake (read from /proc, so the load generator's CPU does not blur it);
  * median TLS handshake time with ECH minus without (target <= 0.3 ms), unloaded
    (one connection at a time);
  * whether one `echd load` process sustains >= 1,000 new ECH connections/s (open loop).

Blocks run in the order A B B A A B ... so drift on this shared machine hits both arms, and
the adjacent ECH / plain blocks are paired: the ratios and the TLS-time difference come with
the Hodges-Lehmann estimate and its exact 95% CI over the blocks (6 blocks are the fewest
that give one). Its temp dir and processes (BIND, echd) are recorded in the run registry,
so `cfrbench clean` removes what a killed lab leaves.
Run (root, for the run registry): .venv/bin/python -m labs.ech_lab [--json FILE]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.stats import hodges_lehmann
from testbed import paths
from testbed.lifecycle import RunRegistry, run_registry
from testbed.services import HostNode
from testbed.services.dns import DnsServer, ZoneData, site_names
from testbed.services.ech import FrontDoor, ech_config_list, generate_ech_keys, make_ca

CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


_LOAD_RUNS = itertools.count()


def run_load(argv: list[str], registry: RunRegistry, workdir: Path
             ) -> tuple[dict, list[dict], float]:
    """Run echd load (recorded in the run registry while it runs); returns summary, ground
    truth and the generator's CPU seconds."""
    path = workdir / f"load-{next(_LOAD_RUNS)}.jsonl"
    proc = subprocess.Popen([*argv, "--out", str(path), "--summary-json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    registry.record_process(proc.pid, "echd-load")
    _, status, usage = os.wait4(proc.pid, 0)
    registry.forget_process(proc.pid)
    stdout = proc.stdout.read() if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    path.unlink()
    summary = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
    return summary, records, usage.ru_utime + usage.ru_stime


def paired(values: list[float], log: bool = False) -> dict[str, Any]:
    """Hodges-Lehmann estimate and exact 95% CI of per-block values (on logs for ratios,
    whose spread is multiplicative), plus the blocks themselves."""
    est, ci = hodges_lehmann([math.log(v) for v in values] if log else values)
    back = math.exp if log else float
    return {"median": statistics.median(values), "estimate": back(est),
            "ci95": [None if ci.low is None else back(ci.low),
                     None if ci.high is None else back(ci.high)],
            "method": ci.method + (" on log ratios" if log else ""), "blocks": values}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labs.ech_lab", description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=6, help="blocks per arm (interleaved)")
    ap.add_argument("--count", type=int, default=1500, help="connections per rate block")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency-count", type=int, default=300,
                    help="connections per unloaded-latency block")
    ap.add_argument("--rate", type=float, default=1000, help="open-loop target for echd load")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)

    echd = str(paths.binary("echd"))
    with run_registry("lab-ech", info={"lab": "ech"}) as registry:
        print(f"lab prefix {registry.prefix}", file=sys.stderr, flush=True)
        node = HostNode("bench", registry)
        root = registry.make_tmpdir("ech")
        load = functools.partial(run_load, registry=registry, workdir=root)
        ca = make_ca(root / "ca")
        generate_ech_keys(root / "keys", "cdn.example", 1)
        port = free_port()
        zone = ZoneData(names=site_names(100) + ["cdn.example"],
                        ech_config_list=ech_config_list(root / "keys"), ipv4=["127.0.0.1"],
                        port=port, ttl=3600)
        dns = DnsServer(node, zone, listen_v4=["127.0.0.1"], port=free_port(),
                        control_port=free_port(), workdir=root / "dns").start()
        front = FrontDoor(node, mode="shared", ca_dir=root / "ca", key_dir=root / "keys",
                          listen=[f"127.0.0.1:{port}"], sites=100, resumption=False,
                          workdir=root / "front", log_path=root / "front.jsonl").start()
        base = [echd, "load", "--dns", dns.address, "--ca", str(ca), "--sites", "100",
                "--alpn", "http/1.1", "--path", "/", "--resumption", "off"]
        try:
            # Warm up: certificates for all 100 sites issued and cached, DNS cached.
            load([*base, "--count", "400", "--concurrency", "8"])
            rate = {"ech": [], "plain": []}
            srv_cpu = {"ech": [], "plain": []}
            lat = {"ech": [], "plain": []}
            lat_blocks: dict[str, list[float]] = {"ech": [], "plain": []}
            gen_cpu_closed = []
            order = []
            for i in range(args.blocks):
                order += ["ech", "plain"] if i % 2 == 0 else ["plain", "ech"]
            for arm in order:
                extra = ["--no-ech"] if arm == "plain" else []
                c0 = cpu_seconds(front.proc.pid)
                s, recs, gcpu = load([*base, *extra, "--count", str(args.count),
                                       "--concurrency", str(args.concurrency)])
                c1 = cpu_seconds(front.proc.pid)
                assert s["errors"] == 0, s
                assert s["ech_accepted"] == (s["count"] if arm == "ech" else 0), s
                rate[arm].append(s["rate"])
                srv_cpu[arm].append((c1 - c0) / s["count"] * 1e6)
                if arm == "ech":
                    gen_cpu_closed.append(gcpu / s["count"] * 1e6)
                s, recs, _ = load([*base, *extra, "--count", str(args.latency_count),
                                   "--concurrency", "1"])
                tls = [r["tls_ms"] for r in recs if r["tls_ms"] is not None]
                lat[arm] += tls
                lat_blocks[arm].append(statistics.median(tls))
            # Paired per-block ratios (A/B adjacent blocks) as well as the pooled medians.
            ratios = [e / p for e, p in zip(rate["ech"], rate["plain"], strict=True)]
            cpu_ratios = [p / e for e, p in zip(srv_cpu["ech"], srv_cpu["plain"], strict=True)]
            # Open loop: can one echd load process sustain args.rate new ECH connections/s?
            s, recs, gen_cpu = load([*base, "--rate", str(args.rate), "--duration",
                                         f"{args.duration}s", "--arrivals", "uniform"])
            result = {
                "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
                "handshake_rate_ech_per_s": statistics.median(rate["ech"]),
                "handshake_rate_plain_per_s": statistics.median(rate["plain"]),
                "rate_ratio_ech_over_plain": paired(ratios, log=True),
                "server_cpu_us_per_handshake": {k: statistics.median(v)
                                                for k, v in srv_cpu.items()},
                "server_capacity_ratio_ech_over_plain": paired(cpu_ratios, log=True),
                "generator_cpu_us_per_ech_conn": statistics.median(gen_cpu_closed),
                "generator_capacity_per_core_per_s": 1e6 / statistics.median(gen_cpu_closed),
                "median_tls_ms": {k: statistics.median(v) for k, v in lat.items()},
                "median_tls_overhead_ms": statistics.median(lat["ech"])
                - statistics.median(lat["plain"]),
                "tls_overhead_ms_paired": paired(
                    [e - p for e, p in zip(lat_blocks["ech"], lat_blocks["plain"], strict=True)]),
                "latency_samples": {k: len(v) for k, v in lat.items()},
                "open_loop": {
                    "target_rate": args.rate, "duration_s": args.duration,
                    "count": s["count"], "errors": s["errors"],
                    "ech_accepted": s["ech_accepted"],
                    "achieved_rate": s["count"] / max(s["duration_s"], 1e-9),
                    "max_late_ms": s["max_late_ms"], "median_tls_ms": s["median_ms"].get("tls"),
                    "generator_cpu_us_per_conn": gen_cpu / max(s["count"], 1) * 1e6,
                    "error_kinds": s["error_kinds"],
                },
                "params": vars(args) | {"json": str(args.json) if args.json else None},
            }
        finally:
            front.stop()
            dns.stop()
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
