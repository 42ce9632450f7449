"""What does the relay cost? Run as root:  .venv/bin/python -m labs.relay_lab [--quick]

Builds its own namespaces (labs.labnet, zero-delay veth links) through the run registry
(`cfrbench clean` removes what a killed lab leaves), and measures, with the policies
compared *within one run* in interleaved, randomised order (A B B A ...):

  latency     request/response round trips (64 B, TCP_NODELAY) over an established TCP
              flow: none (no relay table) vs route vs cfr-flow, in blocks; median and p99,
              differences paired within half-rounds (Hodges-Lehmann, exact CI)
  latency_paired  the precise comparison: one flow opened under route, one under cfr-flow,
              round trips alternating between them in one process (same load for both),
              a fresh pair per block, client and server on one core; Hodges-Lehmann
              estimate of the per-block differences with an exact CI, v4 and v6
  throughput  iperf3, 1 and 4 streams, route vs cfr-flow in ABC-CBA rounds with route again
              as an A/A control (the noise floor); cubic, pinned cores; verdict from the
              exact CI of the Hodges-Lehmann estimate of the per-round ratios
  connrate    new TCP connections per second: cgn vs cfr-flow (full connections to a
              server, and SYN->RST attempts that isolate conntrack + NAT setup), plus
              cfr-flow with `cfr run` following conntrack events into the mapping log
  rotation    epoch rotation: nft transaction time and whole `cfr rotate`, default and
              4096-alias pools; established TCP/UDP flows probed every 5 ms meanwhile
  memory      kernel slab per tracked, NATed flow, up to the largest table tried

Absolute numbers from a shared 2-core machine are indicative; compare ratios. Prints a
summary and writes JSON (--out); the analysis of that JSON is labs/relay_analysis.py.

About 500 lines on purpose: six measurements of one lab network, each a method of `Bench`
sharing its policy switching; splitting them would scatter one experiment's set-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.stats import describe, hodges_lehmann
from labs.labnet import LabNet, wait_for
from labs.relay_analysis import (
    TPUT_TARGET,
    ci_text,
    half_round_difference,
    pool_route,
    round_ratios,
    summary,
    throughput_cost_model,
)
from testbed.lifecycle import run_registry


def _order(variants: list[str], rounds: int, seed: int = 7) -> list[str]:
    """Randomised, interleaved: each round a shuffled order, followed by its reverse."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(rounds):
        v = variants[:]
        rng.shuffle(v)
        out += v + v[::-1]
    return out


class Bench:
    def __init__(self, net: LabNet, quick: bool, rounds: int | None = None,
                 streams: tuple[int, ...] = (1, 4), server_pid: int | None = None,
                 seed: int = 0) -> None:
        self.net = net
        self.seed = seed  # throughput: which randomised order of the rounds
        self.server_pid = server_pid  # the echo server, pinned for latency_paired
        self.quick = quick
        self.rounds = rounds
        self.streams = streams
        self.state = net.tmp / "state"

    def apply(self, policy: str, **over: Any) -> Path:
        if policy == "none":
            self.net.cmd("edge", "nft", "delete", "table", "inet", "cfr", check=False)
            return Path()
        over.setdefault("limits__flows_per_subscriber", 60000)
        cfg = self.net.write_config(policy, name=f"{policy}.toml", **over)
        r = self.net.cfr("apply", str(cfg))
        if r.returncode:
            raise RuntimeError(r.stderr)
        return cfg

    def flush(self) -> None:
        self.net.cmd("edge", "conntrack", "-F", check=False)

    # -- latency ---------------------------------------------------------------------
    def latency(self) -> dict[str, Any]:
        """none vs route vs cfr-flow, one block of round trips per variant per half-round.

        Why paired within half-rounds: each half of a round (see `_order`) measures every
        variant once, back to back, so a difference taken inside a half cancels drift that is
        slow next to it (`half_round_difference`); 3 rounds (6 halves) are the fewest that
        give a 95% CI."""
        variants = ["none", "route", "cfr-flow"]
        count = 1000 if self.quick else 4000
        rounds = 3 if self.quick else 4
        samples: dict[str, list[float]] = {v: [] for v in variants}
        blocks: dict[str, list[float]] = {v: [] for v in variants}  # one per half-round
        for v in _order(variants, rounds):
            self.apply(v)
            out = json.loads(self.net.py("sub1", "rr", "--dst", self.net.plan.fd_v4,
                                         "--count", str(count)))
            us = [x / 1000 for x in out["rtt_ns"][50:]]  # drop warm-up
            samples[v] += us
            blocks[v].append(statistics.median(us))
        res: dict[str, Any] = {"unit": "us", "samples_per_block": count, "rounds": rounds}
        for v in variants:
            d = describe(samples[v])
            res[v] = {"median": d.median, "p99": d.p99, "n": d.n, "block_medians": blocks[v]}
        for a, b in (("route", "cfr-flow"), ("none", "cfr-flow"), ("none", "route")):
            res[f"{b}_minus_{a}"] = {**half_round_difference(blocks[a], blocks[b]),
                                     "p99_diff": res[b]["p99"] - res[a]["p99"]}
        return res

    def latency_paired(self) -> dict[str, Any]:
        """Flow A opened under `route` (never translated), flow B under `cfr-flow` (every
        packet translated); round trips alternate A/B in one process, so machine load hits
        both equally. Difference = the per-packet cost of the relay's translation.

        Why blocks of fresh pairs, on one pinned core: a TCP flow keeps some state for its
        lifetime that is not the relay's doing (which core its echo-server thread wakes on,
        above all), and one pair per family gave differences from -66 to +76 us in runs
        whose own CIs were a few us wide. So each block opens a new pair, the estimate and
        its exact CI are taken over the per-block median differences (Hodges-Lehmann,
        signed-rank), and the client and the echo server run on core 0 throughout, so both
        flows of a pair wake the same way."""
        blocks = 6 if self.quick else 10
        per_block = 1000 if self.quick else 3000
        res: dict[str, Any] = {"unit": "us", "blocks": blocks, "pairs_per_block": per_block,
                               "pinned_core": 0}
        fams = {"v4": self.net.plan.fd_v4, "v6": self.net.plan.fd_v6}
        got: dict[str, dict[str, list[Any]]] = {
            f: {"diff": [], "a": [], "b": [], "peers": []} for f in fams}
        with self._server_pinned():
            for blk in range(blocks):
                for fam in (list(fams) if blk % 2 == 0 else list(fams)[::-1]):
                    a, b, peers = self._rr_pair(fams[fam], per_block)
                    g = got[fam]
                    g["diff"].append(statistics.median(y - x for x, y in zip(a, b, strict=True)))
                    g["a"] += a
                    g["b"] += b
                    g["peers"].append(peers)
        for fam, g in got.items():
            est, ci = hodges_lehmann(g["diff"])
            da, db = describe(g["a"]), describe(g["b"])
            res[fam] = {"route_median": da.median, "route_p99": da.p99,
                        "cfr_flow_median": db.median, "cfr_flow_p99": db.p99, "paired_diff": est,
                        "ci95": [ci.low, ci.high], "method": ci.method + " over block medians",
                        "block_diffs": g["diff"], "peers": g["peers"]}
        return res

    @contextlib.contextmanager
    def _server_pinned(self) -> Iterator[None]:
        """Echo server (all its threads, and those it starts) on core 0 while inside."""
        if self.server_pid is None:
            yield
            return
        every = f"0-{(os.cpu_count() or 1) - 1}"
        self.net.cmd(None, "taskset", "-a", "-p", "-c", "0", str(self.server_pid))
        try:
            yield
        finally:
            self.net.cmd(None, "taskset", "-a", "-p", "-c", every, str(self.server_pid),
                         check=False)

    def _rr_pair(self, dst: str, count: int) -> tuple[list[float], list[float], list[str]]:
        """One pair: A opened under route, B under cfr-flow; alternating round trips (us)."""
        self.apply("route", safety__leak_guard=False)
        p = self.net.py_popen("sub1", "rrpair", "--dst", dst, "--count", str(count + 50),
                              cpus="0", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
        json.loads(p.stdout.readline())
        self.apply("cfr-flow", safety__leak_guard=False)
        p.stdin.write("go\n")
        p.stdin.flush()
        out = json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1])
        if out["peer_a"] == out["peer_b"]:
            raise RuntimeError(f"the cfr-flow flow was not translated: {out}")
        a = [x / 1000 for x in out["a_ns"][50:]]  # the first round trips warm the path up
        b = [x / 1000 for x in out["b_ns"][50:]]
        return a, b, [out["peer_a"], out["peer_b"]]

    # -- throughput ------------------------------------------------------------------
    # (streams, iperf3 -A client,server). Four streams run sender and receiver on one
    # core: throughput is then the inverse of the whole path's CPU cost per byte, so the
    # relay's share shows in full, and the split of work between two cores (which made
    # route-against-route runs differ by up to 30%) is gone. One stream keeps the two
    # ends on separate cores: on one core a single flow settles into one of two speeds
    # per run (sender and receiver taking turns), which is a property of the hosts.
    TPUT_SHAPES = ((1, "0,1"), (4, "0,0"))

    def throughput(self) -> dict[str, Any]:
        """iperf3 route vs cfr-flow, with route again as a control, in ABC-CBA rounds.

        Why this shape: on a small VM the throughput of one run depends on things that are
        not the relay (the scheduler's split of softirq work between cores, the host's
        memory bandwidth), so each cfr-flow figure is compared with the route runs of the
        same round, and a second route variant measured the same way shows how far two
        identical set-ups drift apart (the noise floor, an A/A test). TCP congestion control
        is pinned to cubic: the kernel default may be BBR, which without the fq qdisc
        paces with per-socket timers and settles at a different rate in every run. One
        warm-up run first: the first flows after the namespaces appear are slower. No
        `--omit`: slow start on a zero-delay path lasts microseconds, so there is nothing to
        leave out. Runs are nearly independent (lag-1 autocorrelation 0.2 over 180 runs),
        so precision comes from the number of rounds, not from longer runs."""
        secs = "2" if self.quick else "3"
        rounds = self.rounds or (3 if self.quick else DEFAULT_ROUNDS)
        two_cores = (os.cpu_count() or 1) >= 2
        variants = ["route", "cfr-flow", "route-control"]
        res: dict[str, Any] = {"unit": "Gbit/s", "seconds": float(secs), "rounds": rounds,
                               "order_seed": self.seed, "congestion_control": "cubic",
                               "target_ratio": TPUT_TARGET,
                               "reference": "route and route-control runs of the round"}
        for streams, affinity in self.TPUT_SHAPES:
            if streams not in self.streams:
                continue
            if not two_cores:
                affinity = "0,0"
            iperf = ["iperf3", "-c", self.net.plan.fd_v4, "-t", secs,
                     "-P", str(streams), "-A", affinity, "-C", "cubic", "-J"]
            self.apply("route")
            self.net.cmd("sub1", *iperf, timeout=60)  # warm-up, not counted
            runs: list[tuple[int, str, float]] = []
            pps: list[float] = []
            for i, v in enumerate(_order(variants, rounds, seed=10 * self.seed + streams)):
                self.apply("route" if v == "route-control" else v)
                before, t0 = self._edge_packets(), time.monotonic()
                out = self.net.cmd("sub1", *iperf, timeout=60).stdout
                pps.append((self._edge_packets() - before) / (time.monotonic() - t0))
                gbit = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
                runs.append((i // (2 * len(variants)), v, gbit))
                if (i + 1) % (2 * len(variants)) == 0:
                    self._progress(streams, rounds, runs)
            by_variant = {v: [g for _, w, g in runs if w == v] for v in variants}
            res[f"{streams}_streams"] = {
                "affinity": affinity,
                "packets_per_second": statistics.median(pps),
                **{v: {"median": statistics.median(g), "runs": g} for v, g in by_variant.items()},
                "cfr_flow_over_route": round_ratios(pool_route(runs), "route", "cfr-flow"),
                "cfr_flow_by_reference": {
                    ref: round_ratios(runs, ref, "cfr-flow") for ref in ("route", "route-control")},
                "control_over_route": round_ratios(runs, "route", "route-control"),
            }
        return res

    @staticmethod
    def _progress(streams: int, rounds: int, runs: list[tuple[int, str, float]]) -> None:
        """One line per finished round: a long run (80 rounds took 26 minutes here) shows
        where it is and where the estimate is heading."""
        done = runs[-1][0] + 1
        c = round_ratios(pool_route(runs), "route", "cfr-flow")
        a = round_ratios(runs, "route", "route-control")
        print(f"[throughput {streams} streams] round {done}/{rounds}: cfr-flow/route this "
              f"round {c['round_ratios'][-1]:.3f}, so far {c['estimate']:.3f} "
              f"({ci_text(c['ci95'])}); control {a['estimate']:.3f}",
              file=sys.stderr, flush=True)

    def _edge_packets(self) -> int:
        """Packets the relay forwarded upstream plus those it received back (data + ACKs)."""
        link = json.loads(self.net.cmd("edge", "ip", "-j", "-s", "link", "show", "upl")
                          .stdout)[0]["stats64"]
        return int(link["tx"]["packets"]) + int(link["rx"]["packets"])

    # -- connection rate -------------------------------------------------------------
    def connrate(self) -> dict[str, Any]:
        secs = "2" if self.quick else "3"
        rounds = 1 if self.quick else 2
        res: dict[str, Any] = {"unit": "connections/s", "seconds": float(secs)}
        for mode in ("refused", "full"):
            vals: dict[str, list[float]] = {"cgn": [], "cfr-flow": [], "cfr-flow+log": []}
            for v in _order(list(vals), rounds, seed=3):
                self.flush()
                daemon = None
                if v == "cfr-flow+log":
                    cfg = self.apply("cfr-flow")
                    daemon = self.net.popen("edge", sys.executable, "-m", "relay.cli", "run",
                                            str(cfg), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    wait_for(lambda: (self.state / "cfr.pid").exists(), timeout=10)
                    time.sleep(0.5)
                else:
                    self.apply(v)
                args = ["connrate", "--dst", self.net.plan.fd_v4, "--seconds", secs]
                if mode == "refused":
                    args.append("--refused")
                out = json.loads(self.net.py("sub1", *args))
                vals[v].append(out["rate"])
                if daemon is not None:
                    self.net.stop(daemon)
            res[mode] = {v: {"median": statistics.median(x), "runs": x} for v, x in vals.items()}
            res[mode]["ratio_cfr_flow_over_cgn"] = (
                statistics.median(vals["cfr-flow"]) / statistics.median(vals["cgn"]))
        return res

    # -- rotation --------------------------------------------------------------------
    def rotation(self) -> dict[str, Any]:
        n = 20 if self.quick else 50
        res: dict[str, Any] = {"unit": "ms", "rotations": n}
        stop = self.net.tmp / "stop-rot"
        self.net.cmd("tr", "ip", "route", "replace", "198.19.0.0/20", "via", "198.19.252.2")
        for label, over in (("pool16", {}),
                            ("pool4096", {"alias__v4": ["198.19.0.0/20"],
                                          "alias__v6_pool_size": 4096})):
            cfg = self.apply("cfr-epoch", **over)
            stop.unlink(missing_ok=True)
            holds = [self.net.py_popen("sub1", "hold", "--dst", d, "--interval", "0.005",
                                       "--duration", "300", "--stop-file", str(stop),
                                       stdout=subprocess.PIPE, text=True)
                     for d in (self.net.plan.fd_v4, self.net.plan.fd_v6)]
            for h in holds:
                h.stdout.readline()
            timing = json.loads(self.net.cmd(
                "edge", sys.executable, "-m", "labs.relay_lab", "_rotate", str(cfg), str(n),
                timeout=300).stdout)
            cli = []
            for _ in range(5):
                t0 = time.perf_counter()
                self.net.cfr("rotate", str(cfg), check=True)
                cli.append((time.perf_counter() - t0) * 1000)
            stop.touch()
            flows = [json.loads(h.communicate(timeout=30)[0].strip().splitlines()[-1])
                     for h in holds]
            res[label] = {
                "nft_transaction_ms": {"median": statistics.median(timing["nft"]),
                                       "max": max(timing["nft"])},
                "engine_rotate_ms": {"median": statistics.median(timing["engine"]),
                                     "max": max(timing["engine"])},
                "cli_cfr_rotate_ms": {"median": statistics.median(cli), "max": max(cli)},
                "established_flows": [
                    {p: {"sent": f[p]["sent"], "ok": f[p]["ok"], "errors": len(f[p]["errors"]),
                         "max_gap_ms": round(f[p]["max_gap"] * 1000, 1),
                         "peers_seen": len(f[p]["peers"])} for p in ("tcp", "udp")}
                    for f in flows],
            }
        return res

    # -- memory ----------------------------------------------------------------------
    def memory(self) -> dict[str, Any]:
        self.flush()
        self.apply("cfr-flow", timeouts__udp_unreplied="10m")
        p = self.net.plan
        steps = [("sub1", p.fd_v4), ("sub1", p.fd_v6), ("sub2", p.fd_v4), ("sub2", p.fd_v6)]
        if self.quick:
            steps = steps[:2]
        base = _kernel_mem(self.net)
        points = []
        for role, dst in steps:
            self.net.py(role, "udpflood", "--dst", dst, "--lo", "10000", "--hi", "59999")
            time.sleep(0.5)
            m = _kernel_mem(self.net)
            flows = m["conntrack"] - base["conntrack"]
            points.append({
                "tracked_flows": m["conntrack"],
                "slab_bytes_per_flow": (m["slab"] - base["slab"]) / max(1, flows),
                "nf_conntrack_objects_delta": m["ct_objs"] - base["ct_objs"],
            })
        last = points[-1]
        st = json.loads(self.net.cfr("status", str(self.net.tmp / "cfr-flow.toml"), "--json",
                                     check=True, timeout=300).stdout)
        self.flush()
        return {"unit": "bytes", "points": points,
                "largest_table_tried": last["tracked_flows"],
                "nf_conntrack_objsize": base["ct_objsize"],
                "bytes_per_flow_estimate": last["slab_bytes_per_flow"],
                "status_aliased_flows": st["flows"]["aliased_flows"],
                "note": "slab delta is system-wide (other processes add noise); "
                        "nf_conntrack objects are exact"}


def _kernel_mem(net: LabNet) -> dict[str, float]:
    count = int(net.cmd("edge", "cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout)
    slab = 0
    objs = 0
    objsize = 0
    for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
        f = line.split()
        slab += int(f[2]) * int(f[3])
        if f[0] == "nf_conntrack":
            objs, objsize = int(f[1]), int(f[3])
    meminfo = Path("/proc/meminfo").read_text()
    m = re.search(r"^Slab:\s+(\d+) kB", meminfo, re.M)
    return {"conntrack": count, "slab": slab, "ct_objs": objs, "ct_objsize": objsize,
            "meminfo_slab": int(m.group(1)) * 1024 if m else 0}


def _rotate_inside(cfg_path: str, n: int) -> None:
    """Runs inside the edge namespace: time the rotation transaction itself."""
    from relay import config, engine, nft
    from relay.ruleset import rotation

    cfg = config.load(cfg_path)
    nft_ms, eng_ms = [], []
    sd = engine.state_for(cfg)
    for _ in range(n):
        sd.bump_rotations()
        tx = rotation(cfg, engine.current_plan(cfg, sd))
        t0 = time.perf_counter()
        nft.apply(tx)
        nft_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        engine.rotate_to_current(cfg, force=True)
        eng_ms.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    print(json.dumps({"nft": nft_ms, "engine": eng_ms}))


#: Throughput rounds by default: at the noise of a 2-vCPU VM (per-round SD of the ratio
#: 10-13%), 80 rounds narrow the 95% CI to about +-2%, enough to decide a 0.95 floor when the
#: relay's true cost is near 2% (4 streams here); a cost of 3-4% (1 stream here) took 300
#: rounds for +-1%. Fewer rounds mostly end `inconclusive`.
DEFAULT_ROUNDS = 80
MAX_ROUNDS = 1000


def _rounds_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= n <= MAX_ROUNDS:
        raise argparse.ArgumentTypeError(f"{n} is outside 1..{MAX_ROUNDS}")
    return n


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_rotate":
        _rotate_inside(argv[1], int(argv[2]))
        return 0
    ap = argparse.ArgumentParser(prog="labs.relay_lab", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    ap.add_argument("--only", nargs="*", choices=["latency", "latency_paired", "throughput",
                                                 "connrate", "rotation", "memory"])
    ap.add_argument("--out", type=Path, help="write JSON results here")
    ap.add_argument("--rounds", type=_rounds_arg, default=None,
                    help=f"throughput: ABC-CBA rounds, 1-{MAX_ROUNDS} (default {DEFAULT_ROUNDS}, "
                         "about 55 minutes for both stream counts; --quick 3). A verdict needs "
                         "at least 6; at this machine's noise it took about 80")
    ap.add_argument("--streams", type=int, nargs="+", choices=[1, 4], default=[1, 4],
                    help="throughput: which stream counts to measure (default both)")
    ap.add_argument("--seed", type=int, default=0,
                    help="throughput: seed of the rounds' random order (a confirmation run "
                         "uses a new one)")
    a = ap.parse_args(argv)
    results: dict[str, Any] = {"schema": 1, "quick": a.quick, "started": time.time()}
    with run_registry("lab-relay", info={"lab": "relay"}) as registry, LabNet(registry) as net:
        print(f"lab prefix {registry.prefix}", file=sys.stderr, flush=True)
        net.cmd("sub1", "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
        srv = net.py_popen("fd", "serve", net.plan.fd_v4, net.plan.fd_v6,
                           stdout=subprocess.PIPE, text=True)
        srv.stdout.readline()
        net.popen("fd", "iperf3", "-s", "-B", net.plan.fd_v4, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        b = Bench(net, a.quick, a.rounds, tuple(a.streams), server_pid=srv.pid, seed=a.seed)
        for name in a.only or ["latency", "latency_paired", "throughput", "connrate",
                               "rotation", "memory"]:
            t0 = time.time()
            try:
                results[name] = getattr(b, name)()
            except Exception as e:  # keep the other measurements
                results.setdefault("errors", {})[name] = repr(e)
                print(f"[{name} FAILED: {e!r}]", file=sys.stderr)
                continue
            results[name]["wall_seconds"] = round(time.time() - t0, 1)
            print(f"[{name} done in {results[name]['wall_seconds']} s]", file=sys.stderr)
            print(summary({name: results[name]}), file=sys.stderr)
            if a.out:
                a.out.write_text(json.dumps(results, indent=1) + "\n")
    model = throughput_cost_model(results)
    if model:
        results["throughput_cost_model"] = model
    results["finished"] = time.time()
    print(summary(results))
    if a.out:
        a.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
