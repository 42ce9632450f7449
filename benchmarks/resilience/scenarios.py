"""The resilience scenarios, run in priority order on one network.

Every scenario returns a row {name, load_held, faults_injected, faults_survived,
flows_lost, leaks_found, passed, figures} so the report can show one table. Comparisons
(attack vs no attack) are interleaved within the scenario, never against another run,
because absolute times on the shared 2-core machines are noise (DESIGN.md, Results).
The scale (flows, rates) is chosen for 2 shared cores and recorded in each row's figures.

Over 400 lines on purpose: one function per resilience scenario of the table above, sharing
the network and relay set-up; each is read with the row it produces.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.environment import BenchEnv
from benchmarks.leakcheck import scanner_for
from benchmarks.resilience.frontdoor import judge
from testbed.addressing import AddressPlan
from testbed.errors import UsageError
from testbed.leaks import CONTROL_CATEGORIES, sources_seen
from testbed.lifecycle import RunRegistry
from testbed.netns import ManagedProcess
from testbed.network import Network
from testbed.paths import REPO_ROOT
from testbed.scenario import Scenario
from testbed.services import ech as ech_service
from testbed.waiting import WaitTimeout, wait_until
from topologies import load_topology

HERE = Path(__file__).resolve().parent
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
SINK_PORT = 7700


@dataclass(frozen=True)
class Scale:
    """How hard each scenario pushes; `quick()` is the integration test's reduced version."""

    sources: int = 20  # population subscribers that browse / hold flows
    flow_limit: int = 64  # limits.flows_per_subscriber
    rounds: int = 2  # (base, attack, attack, base) blocks
    victim_count: int = 120  # ECH connections per phase from the population
    victim_concurrency: int = 6
    # The attacker's rates are capped: every packet crosses the userspace delay lines (no
    # netem here) on the same 2 cores as the victims, so an uncapped flood measures the
    # emulator's CPU, not the relay. Its concurrency is what the flow limit caps.
    flood_pps: float = 400.0  # raw SYNs/s from the attacker
    attack_rate: float = 20.0  # completed-handshake attempts/s from the attacker (open loop)
    long_tcp: int = 500
    long_udp: int = 500
    rotations: int = 10
    rotation_gap_s: float = 3.0
    crash_tcp: int = 50
    crash_udp: int = 50
    downtime_s: float = 4.0
    fd_load_rate: float = 15.0
    fd_load_s: float = 14.0

    @classmethod
    def quick(cls) -> Scale:
        return cls(sources=8, rounds=1, victim_count=60, victim_concurrency=4, flood_pps=400,
                   attack_rate=20, long_tcp=40, long_udp=40, rotations=3, rotation_gap_s=2.0,
                   crash_tcp=20, crash_udp=20, downtime_s=3.0, fd_load_rate=10, fd_load_s=10)


@dataclass
class Ctx:
    net: Network
    env: BenchEnv
    out: Path
    scale: Scale
    log: Callable[[str], None]

    @property
    def plan(self) -> AddressPlan:
        return self.net.graph.plan

    # -- the nodes the scenarios use, by role (never by name) ------------------------------
    @property
    def attacker(self) -> str:
        """The second subscriber host (plan subscriber 1): the one that misbehaves."""
        return self.net.roles.subscribers[1]

    @property
    def population(self) -> str:
        """The population host: the well-behaved crowd the scenarios measure."""
        host = self.net.roles.population
        if host is None:
            raise UsageError(f"resilience needs a topology with a population host; "
                             f"{self.net.scenario.topology} has none")
        return host

    @property
    def front_door(self) -> str:
        return self.net.roles.front_door

    def sources(self, n: int | None = None) -> list[str]:
        """Population subscribers' IPv4 addresses (they live on the crowd host)."""
        sc = self.net.scenario
        subs = self.plan.subscribers(sc.population, start=sc.subscribers)
        return [str(s.v4) for s in subs[: n or self.scale.sources]]

    def crowd_loader(self, name: str) -> ech_service.LoadGenerator:
        """A load generator on the population host; `name` gives it its own directory
        (each generator numbers its runs from 1, so a shared one would overwrite records)."""
        assert self.env.dns is not None and self.env.ca_file is not None
        return ech_service.LoadGenerator(self.net[self.population], dns=self.env.dns.address,
                                         ca_file=self.env.ca_file,
                                         workdir=self.out / f"load-crowd-{name}")

    def drops(self) -> dict[str, int]:
        return dict(self.env.relay.status()["drops"])

    def on_relay(self, script: str) -> str:
        """A shell script on the relay node (its conntrack table); stdout."""
        return self.net[self.net.roles.relay].sh(script, check=False).stdout

    def forget_crowd_dns(self) -> int:
        """Delete the population host's DNS flows from conntrack; returns how many.

        Why: the crowd host resolves for all its subscribers from ONE subscriber address,
        and each query is a UDP flow that stays tracked 180 s once replied (RFC 4787
        REQ-5), so a low flows_per_subscriber (64) fills up with its DNS flows within a
        few load runs and its own lookups are refused. That is an artefact of packing a
        population into one host (a real subscriber's resolver traffic would count only
        against itself), so it is cleared between phases and counted in the figures."""
        crowd = self.net.primary_addresses(self.population)[0]
        out = self.net[self.net.roles.relay].run(["conntrack", "-D", "-s", str(crowd), "-p", "udp",
                                    "--dport", "53"], check=False)
        return sum(1 for line in out.stdout.splitlines() if line.strip())


def _row(name: str, **kw: Any) -> dict[str, Any]:
    """One table row; defaults describe a scenario that produced nothing (a failure)."""
    row = {"name": name, "load_held": None, "faults_injected": 0, "faults_survived": 0,
           "flows_lost": 0, "leaks_found": 0, "passed": False, "figures": {}}
    row.update(kw)
    return row


def _hs_ms(rec: dict) -> float | None:
    if rec.get("error") or rec.get("tls_ms") is None:
        return None
    return float(rec.get("connect_ms") or 0) + float(rec["tls_ms"])


def _live_ct(ctx: Ctx, src: str) -> int:
    """Conntrack entries of `src` that `ct count` counts (closing states excluded)."""
    out = ctx.on_relay(f"conntrack -L -s {src} 2>/dev/null")
    return sum(1 for line in out.splitlines()
               if line.strip() and "TIME_WAIT" not in line and " CLOSE " not in line)


def _spawn_py(ctx: Ctx, node: str, script: str, args: list[str], label: str) -> ManagedProcess:
    return ctx.net[node].spawn([PYTHON, str(HERE / script), *args], label=label,
                               log=ctx.out / f"{label}.log")


def _wait_file(path: Path, timeout: float) -> bool:
    try:
        wait_until(path.exists, timeout, 0.1, f"{path.name} to appear")
    except WaitTimeout:
        return False
    return True


def _wait_proc(proc: ManagedProcess, timeout: float) -> None:
    """Let `proc` finish on its own for up to `timeout`, then stop it either way."""
    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: not proc.alive(), timeout, 0.2, f"{proc.label} to finish")
    proc.stop()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


# -- 1. exhaustion from one subscriber -----------------------------------------------------
def exhaustion(ctx: Ctx) -> dict[str, Any]:
    """One subscriber floods (raw SYNs + real handshakes); the others must not notice."""
    sc, env = ctx.scale, ctx.env
    env.relay.flows_per_subscriber = sc.flow_limit
    env.relay.start_daemon("cfr-flow")
    attacker = str(ctx.plan.subscriber(1).v4)  # ctx.attacker carries subscriber index 1
    fd4 = env.front_door(4)
    sources = [(f"pop{i}", a) for i, a in enumerate(ctx.sources())]
    loader = ctx.crowd_loader("exhaustion")
    att_loader = ech_service.LoadGenerator(ctx.net[ctx.attacker], dns=env.dns.address,
                                           ca_file=env.ca_file, workdir=ctx.out / "load-att")
    # The attacker suppresses its own kernel's RSTs to the SYN-ACKs its flood provokes, so
    # each SYN leaves a half-open entry at the relay (the state-exhausting variant); without
    # this its entries close within a round trip and it barely reaches the cap.
    ctx.net[ctx.attacker].run(["nft", "add table inet resil_attacker; add chain inet "
                           "resil_attacker out { type filter hook output priority 0; }; add "
                           "rule inet resil_attacker out tcp flags & rst == rst drop"])
    before = ctx.drops()
    phases = ["base", "attack", "attack", "base"] * sc.rounds
    hs: dict[str, list[float]] = {"base": [], "attack": []}
    ok: dict[str, list[int]] = {"base": [0, 0], "attack": [0, 0]}
    ct_max = 0
    flood_sent = 0
    busy: dict[str, list[float]] = {"base": [], "attack": []}
    attack_rates: list[float] = []
    dns_cleared = 0
    for i, phase in enumerate(phases):
        dns_cleared += ctx.forget_crowd_dns()
        procs: list[ManagedProcess] = []
        if phase == "attack":
            procs.append(_spawn_py(ctx, ctx.attacker, "flood.py",
                                   ["--src", attacker, "--dst", fd4, "--port", "443",
                                    "--rate", str(sc.flood_pps), "--duration", "120"],
                                   f"flood-{i}"))
            argv, _ = att_loader.argv(sites=env.sites[:4], rate=sc.attack_rate, duration=120,
                                      source=attacker, family=4)
            procs.append(ctx.net[ctx.attacker].spawn(argv, label=f"attack-load-{i}",
                                                 log=ctx.out / f"attack-load-{i}.log"))
            time.sleep(1.5)  # let the attacker reach its cap before measuring
        cpu0, wall0 = env.cpu_seconds(), time.monotonic()
        res = loader.run(sites=env.sites[:10], count=sc.victim_count,
                         concurrency=sc.victim_concurrency, sources=sources, family=4,
                         check=False, timeout=300)
        busy[phase].append((env.cpu_seconds() - cpu0) / (time.monotonic() - wall0))
        if phase == "attack":
            ct_max = max(ct_max, _live_ct(ctx, attacker))
        for p in procs:
            p.stop()
        if phase == "attack" and procs[0].log_path and procs[0].log_path.exists():
            txt = procs[0].log_path.read_text().split()
            flood_sent += int(txt[-1]) if txt and txt[-1].isdigit() else 0
        if not res.records:
            ctx.log(f"        load generator exit {res.returncode}: {res.stderr.strip()[-300:]}")
        vals = [v for v in map(_hs_ms, res.records) if v is not None]
        if phase == "attack":
            attack_rates.append(len(vals) / len(res.records) if res.records else 0.0)
        hs[phase] += vals
        ok[phase][0] += len(vals)
        ok[phase][1] += len(res.records)
        ctx.log(f"        exhaustion phase {i} {phase:6}: {len(vals)}/{len(res.records)} ok, "
                f"median {statistics.median(vals) if vals else float('nan'):.1f} ms")
        time.sleep(0.5)
    ctx.net[ctx.attacker].run(["nft", "delete table inet resil_attacker"], check=False)
    after = ctx.drops()
    limited = after["drop_flow_limit"] - before["drop_flow_limit"]
    phases_held = sum(1 for r in attack_rates if r >= 0.99)
    med = {k: statistics.median(v) if v else None for k, v in hs.items()}
    success = ok["attack"][0] / ok["attack"][1] if ok["attack"][1] else 0.0
    ratio = med["attack"] / med["base"] if med["attack"] and med["base"] else None
    passed = (success >= 0.99 and ratio is not None and ratio <= 1.2 and limited > 0
              and ct_max <= sc.flow_limit)
    return _row("exhaustion from one subscriber", load_held=success >= 0.99,
                faults_injected=len(attack_rates), faults_survived=phases_held,
                flows_lost=ok["attack"][1] - ok["attack"][0], passed=passed,
                figures={"others_success_rate_under_attack": round(success, 4),
                         "median_handshake_ms_base": med["base"],
                         "median_handshake_ms_attack": med["attack"],
                         "median_ratio_attack_over_base": ratio,
                         "others_base_ok": ok["base"], "others_attack_ok": ok["attack"],
                         "drop_flow_limit_delta": limited,
                         "attacker_max_live_conntrack": ct_max, "flow_limit": sc.flow_limit,
                         "flood_syns_sent": flood_sent, "others": len(sources),
                         "crowd_dns_flows_cleared": dns_cleared,
                         "machine_busy_cores": {k: round(statistics.mean(v), 2)
                                                for k, v in busy.items() if v},
                         "attack_handshake_rate_per_s": sc.attack_rate,
                         "flood_pps": sc.flood_pps, "attacker_drops_own_rsts": True,
                         "others_success_per_attack_phase": attack_rates})


# -- 2. epoch rotation under load -----------------------------------------------------------
def _flows(ctx: Ctx, tag: str, tcp: int, udp: int, duration: float,
           n_sources: int | None = None) -> tuple[ManagedProcess, Path]:
    out = ctx.out / f"flows-{tag}.json"
    proc = _spawn_py(ctx, ctx.population, "flows.py",
                     ["client", "--dst", ctx.env.front_door(4), "--port", str(SINK_PORT),
                      "--sources", ",".join(ctx.sources(n_sources)), "--tcp", str(tcp),
                      "--udp", str(udp), "--duration", str(duration), "--tick", "1.0",
                      "--tag", tag, "--out", str(out)], f"flows-{tag}")
    if not _wait_file(Path(str(out) + ".started"), 60):
        raise RuntimeError(f"flow client {tag} did not start: {proc.log_tail()}")
    return proc, out


def _sink(ctx: Ctx, tag: str) -> tuple[ManagedProcess, Path]:
    out = ctx.out / f"sink-{tag}.json"
    proc = _spawn_py(ctx, ctx.front_door, "flows.py",
                     ["sink", "--bind4", ctx.env.front_door(4), "--port", str(SINK_PORT),
                      "--out", str(out)], f"sink-{tag}")
    ctx.env._wait_port(ctx.front_door, SINK_PORT)
    return proc, out


def _remapped(peers: dict[str, list[str]], flows: dict[str, str]) -> list[str]:
    return sorted(f for f in flows if len(peers.get(f, [])) > 1)


_CT_FIELDS = re.compile(r"(src|dst|sport|dport)=(\S+)")


def _ct_mappings(ctx: Ctx, local: dict[str, str]) -> dict[str, str]:
    """The relay's NAT binding of each of our flows, read from the kernel's conntrack table:
    {flow id: "alias:port"}. `local` maps flow id -> "proto/src:sport" (the client's side)."""
    wanted = {v: k for k, v in local.items()}
    found: dict[str, str] = {}
    for proto in ("tcp", "udp"):
        out = ctx.on_relay(f"conntrack -L -p {proto} --dport {SINK_PORT} 2>/dev/null")
        for line in out.splitlines():
            f = _CT_FIELDS.findall(line)
            if len(f) < 8:
                continue
            orig, reply = dict(f[:4]), dict(f[4:8])
            fid = wanted.get(f"{proto}/{orig['src']}:{orig['sport']}")
            if fid is not None:
                found[fid] = f"{reply['dst']}:{reply['dport']}"
    return found


def rotation(ctx: Ctx) -> dict[str, Any]:
    """Long-lived TCP and UDP flows across forced rotations: none reset, none remapped, as
    seen by the front-door side (every message's peer) and by the kernel (conntrack's NAT
    binding before the first and after the last rotation)."""
    sc, relay = ctx.scale, ctx.env.relay
    relay.start_daemon("cfr-epoch")
    ctx.forget_crowd_dns()
    sink, sink_out = _sink(ctx, "rotation")
    duration = 4 + sc.rotations * sc.rotation_gap_s + 4
    # Each source holds at most half its flow limit, so the limit never refuses a flow.
    n_sources = max(sc.sources, -(-(sc.long_tcp + sc.long_udp) // max(1, sc.flow_limit // 2)))
    client, client_out = _flows(ctx, "rot", sc.long_tcp, sc.long_udp, duration, n_sources)
    local = _read_json(Path(str(client_out) + ".started"))
    # UDP flows exist in conntrack from their first message on (within the first tick).
    seen = [_ct_mappings(ctx, local)]

    def all_in_conntrack() -> bool:
        seen[0] = _ct_mappings(ctx, local)
        return len(seen[0]) >= len(local)

    if len(seen[0]) < len(local):
        with contextlib.suppress(WaitTimeout):  # judged below, flow by flow
            wait_until(all_in_conntrack, 10, 0.5, "every flow's conntrack entry")
    ct_before = seen[0]
    epochs = [relay.status()["applied_epoch"]]
    rot_ok = 0
    for _ in range(sc.rotations):
        time.sleep(sc.rotation_gap_s)
        rot_ok += relay.cfr("rotate", str(relay.config_path("cfr-epoch")),
                            check=False).returncode == 0
        epochs.append(relay.status()["applied_epoch"])
    # A conntrack dump is resumable, not atomic: under churn from other entries it can skip
    # one (seen once in 1000 on the full scale). A flow whose entry is really gone is still
    # missing after two more reads; one that was skipped shows up.
    ct_after = _ct_mappings(ctx, local)
    ct_reads = 1
    while len(ct_after) < len(local) and ct_reads < 3:
        time.sleep(0.5)
        ct_after = {**_ct_mappings(ctx, local), **ct_after}
        ct_reads += 1
    _wait_proc(client, duration + 60)
    sink.stop()
    res, peers = _read_json(client_out), _read_json(sink_out).get("peers", {})
    errs = res.get("errors", {})
    remapped = _remapped(peers, res.get("local", {}))
    ct_remapped = sorted(f for f in ct_before if f in ct_after and ct_after[f] != ct_before[f])
    ct_missing = sorted(set(local) - set(ct_after))
    resets = errs.get("tcp_reset", 0) + errs.get("tcp_timeout", 0) + errs.get(
        "tcp_connect_failed", 0)
    lost = len(res.get("dead", [])) + len(set(remapped) | set(ct_remapped))
    expected = sc.long_tcp + sc.long_udp
    passed = (bool(res) and resets == 0 and not remapped and not ct_remapped
              and not ct_missing and len(ct_before) == expected
              and errs.get("udp_lost", 0) == 0 and res.get("tcp", 0) + res.get("udp", 0)
              == expected and rot_ok == sc.rotations and len(set(epochs)) == sc.rotations + 1)
    return _row("epoch rotation under load", load_held=bool(res) and lost == 0,
                faults_injected=sc.rotations, faults_survived=rot_ok if lost == 0 else 0,
                flows_lost=lost, passed=passed,
                figures={"tcp_flows": res.get("tcp"), "udp_flows": res.get("udp"),
                         "sources": n_sources, "ticks": res.get("ticks"),
                         "messages_sent": res.get("messages_sent"),
                         "replies": res.get("replies"),
                         "max_send_lag_s": res.get("max_send_lag_s"), "errors": errs,
                         "remapped_flows": len(remapped),
                         "conntrack_flows_before": len(ct_before),
                         "conntrack_flows_after": len(ct_after),
                         "conntrack_remapped": len(ct_remapped),
                         "conntrack_missing": len(ct_missing), "conntrack_reads": ct_reads,
                         "epochs_seen": epochs, "rotations_ok": rot_ok})


# -- 3. control-plane crash ------------------------------------------------------------------
def _ct_sink_entries(ctx: Ctx) -> int:
    out = ctx.on_relay(f"conntrack -L -p tcp --dport {SINK_PORT} 2>/dev/null; "
                   f"conntrack -L -p udp --dport {SINK_PORT} 2>/dev/null")
    return sum(1 for line in out.splitlines() if line.strip())


def crash(ctx: Ctx) -> dict[str, Any]:
    """kill -9 of `cfr run` under load: data plane keeps going, restart adopts, log has no gap."""
    sc, relay = ctx.scale, ctx.env.relay
    policy = "cfr-epoch"
    relay.start_daemon(policy)
    sink, sink_out = _sink(ctx, "crash")
    dur_a = 6 + sc.downtime_s + 6
    client_a, out_a = _flows(ctx, "cra", sc.crash_tcp, sc.crash_udp, dur_a)
    time.sleep(2)
    ct_before = _ct_sink_entries(ctx)
    t_kill = time.time()
    assert relay.daemon is not None
    relay.daemon.stop(sig=9)
    relay.daemon = None
    # new flows while the control plane is dead: long-lived ones and ECH handshakes
    client_b, out_b = _flows(ctx, "crb", sc.crash_tcp // 2, sc.crash_udp // 2, dur_a - 2)
    ctx.forget_crowd_dns()
    res = ctx.crowd_loader("crash").run(sites=ctx.env.sites[:5], count=30, concurrency=3,
                                 sources=[(f"pop{i}", a) for i, a in enumerate(ctx.sources())],
                                 family=4, check=False, timeout=120)
    new_ok = sum(1 for r in res.records if not r.get("error"))
    time.sleep(max(0.0, sc.downtime_s - (time.time() - t_kill)))
    ct_down = _ct_sink_entries(ctx)
    relay.start_daemon(policy)
    t_up = time.time()
    ct_after = _ct_sink_entries(ctx)
    _wait_proc(client_a, dur_a + 60)
    _wait_proc(client_b, dur_a + 60)
    sink.stop()
    ra, rb = _read_json(out_a), _read_json(out_b)
    peers = _read_json(sink_out).get("peers", {})
    log_path = relay.state_dir / "mappings.jsonl"
    opened = set()
    for line in log_path.read_text().splitlines() if log_path.exists() else []:
        rec = json.loads(line)
        if rec.get("ev") == "open":
            opened.add(f"{rec['proto']}/{rec['subscriber']}:{rec['subscriber_port']}")
    local = {**ra.get("local", {}), **rb.get("local", {})}
    missing = sorted(fid for fid, key in local.items() if key not in opened)
    lost = len(ra.get("dead", [])) + len(rb.get("dead", [])) + len(
        _remapped(peers, local))
    errors = {k: ra.get("errors", {}).get(k, 0) + rb.get("errors", {}).get(k, 0)
              for k in set(ra.get("errors", {})) | set(rb.get("errors", {}))}
    passed = (bool(ra) and bool(rb) and lost == 0 and errors.get("udp_lost", 0) == 0
              and new_ok == len(res.records) and ct_after >= ct_before and not missing)
    return _row("control-plane crash (kill -9 cfr run)", load_held=lost == 0,
                faults_injected=1, faults_survived=int(passed), flows_lost=lost, passed=passed,
                figures={"downtime_s": round(t_up - t_kill, 2),
                         "conntrack_sink_entries": {"before_kill": ct_before,
                                                    "while_down": ct_down,
                                                    "after_restart": ct_after},
                         "new_ech_while_down_ok": [new_ok, len(res.records)],
                         "flow_errors": errors,
                         "flows_missing_from_mapping_log": len(missing),
                         "flows_checked_in_mapping_log": len(local)})


# -- 4. front-door restart and ECH key rotation ---------------------------------------------
def front_door(ctx: Ctx) -> dict[str, Any]:
    """Open-loop ECH load while the operator rotates keys, then restarts the front door."""
    sc, env = ctx.scale, ctx.env
    ctx.forget_crowd_dns()
    loader = ctx.crowd_loader("front-door")
    argv, truth = loader.argv(sites=env.sites[:10], rate=sc.fd_load_rate,
                              duration=sc.fd_load_s, family=4,
                              sources=[(f"pop{i}", a) for i, a in enumerate(ctx.sources())])
    proc = ctx.net[ctx.population].spawn(argv, label="fd-load", log=ctx.out / "fd-load.log")
    t0 = time.time()
    time.sleep(sc.fd_load_s * 0.25)
    t_rot = time.time()
    ech_service.rotate_and_publish(env.workdir / "ech-keys", [env.cdn.front], env.dns)
    time.sleep(sc.fd_load_s * 0.25)
    t_restart = time.time()
    env.cdn.front.stop()
    env.cdn.front.start()
    t_back = time.time()
    _wait_proc(proc, sc.fd_load_s + 60)
    recs = ech_service.read_jsonl(truth)
    outcome = judge(recs, t_rot, t_restart, t_back)
    retries = sum(1 for r in recs if str(r.get("flow_id", "")).endswith(".retry"))
    return _row("front-door restart + ECH key rotation", load_held=outcome.passed,
                faults_injected=2, faults_survived=2 if outcome.passed else 0,
                flows_lost=outcome.failed, passed=outcome.passed,
                figures={**outcome.as_dict(), "ech_retries": retries,
                         "restart_took_s": round(t_back - t_restart, 3),
                         "rotation_at_s": round(t_rot - t0, 2),
                         "restart_at_s": round(t_restart - t0, 2),
                         "rate_per_s": sc.fd_load_rate})


# -- 5. hostile packets -------------------------------------------------------------------
#: Unused hosts of the providers block (an Internet-side address behind the relay's egress)
#: that the attackers put in their spoofed sources, and the one the transit router uses for
#: the spoof check's control. From the address plan, never guessed at random.
SPOOF_HOSTS = range(100, 110)
SPOOF_CONTROL_HOST = 99
#: What the hostile packets put on the front-door link under `route` (the hostile scan's
#: positive control): their outer headers, and the front door's own ICMP errors quoting
#: them (port unreachable for reassembled fragments and the extension-header chain,
#: protocol unreachable / parameter problem for the unknown protocol). The forged ICMP
#: errors themselves quote flows nobody made and are dropped as invalid under every policy.
HOSTILE_CONTROL_CATEGORIES = CONTROL_CATEGORIES


def _hostile_send(ctx: Ctx, node: str, tag: str, args: list[str]) -> dict:
    out = ctx.out / f"hostile-{tag}-{node}.json"
    res = ctx.net[node].run([PYTHON, str(HERE / "hostile.py"), *args, "--out", str(out)],
                            check=False, timeout=120)
    if res.returncode != 0:
        ctx.log(f"        hostile.py in {node} failed: {res.stderr.strip()[-300:]}")
    return _read_json(out).get("sent", {})


def _hostile_round(ctx: Ctx, tag: str, spoof4: list[str], spoof6: list[str]
                   ) -> tuple[Path, ManagedProcess, dict[str, int]]:
    """Start a capture at the front door and send every hostile kind from the attacker and
    from the population host; the capture is left running for the caller to stop."""
    env, plan = ctx.env, ctx.plan
    pcap = ctx.out / f"hostile-fd-{tag}.pcap"
    capture_if = ctx.net.roles.pops[0].front_door_interface
    cap = ctx.net[ctx.front_door].spawn(["tcpdump", "-n", "-i", capture_if, "-s", "256", "-U",
                                         "-w", str(pcap)], label=f"tcpdump-hostile-{tag}",
                              log=ctx.out / f"hostile-{tag}-tcpdump.log")
    time.sleep(0.8)
    sent: dict[str, int] = {}
    for node, sub in [(ctx.attacker, plan.subscriber(1)),
                      (ctx.population, plan.subscriber(ctx.net.scenario.subscribers))]:
        args = ["--src4", str(sub.v4), "--src6", str(sub.v6), "--dst4", env.front_door(4),
                "--dst6", env.front_door(6), "--victim4", str(plan.subscriber(0).v4),
                "--spoof4", ",".join(spoof4), "--spoof6", ",".join(spoof6)]
        for k, v in _hostile_send(ctx, node, tag, args).items():
            sent[k] = sent.get(k, 0) + v
    return pcap, cap, sent


def hostile(ctx: Ctx) -> dict[str, Any]:
    """Malformed / spoofed / forged packets from the attacker (the second subscriber host)
    and the population host, captured at the front door.

    Under cfr-flow nothing may carry a subscriber address there, and no spoofed source may
    arrive there (checked in the capture itself, not from drop counters that other packet
    kinds also move). Two positive controls: in the same capture, the transit router sends
    SYNs from a spoofed source of its own, which must be found (the capture and the search
    work); and the same hostile packets under `route` must produce subscriber-address hits
    in HOSTILE_CONTROL_CATEGORIES (the scan would see a relay that let them through)."""
    env, relay, plan = ctx.env, ctx.env.relay, ctx.plan
    spoof = [plan.service("providers", h) for h in SPOOF_HOSTS]
    spoof4, spoof6 = [str(a) for a, _ in spoof], [str(b) for _, b in spoof[:5]]
    ctl4, ctl6 = (str(a) for a in plan.service("providers", SPOOF_CONTROL_HOST))
    scanner = scanner_for(env)
    relay.start_daemon("cfr-flow")
    before = ctx.drops()
    pcap, cap, sent = _hostile_round(ctx, "cfr-flow", spoof4, spoof6)
    ctl_sent = _hostile_send(ctx, ctx.net.roles.transit, "spoof-control",
                             ["--src4", ctl4, "--src6", ctl6, "--dst4", env.front_door(4),
                              "--dst6", env.front_door(6), "--victim4", ctl4,
                              "--spoof4", ctl4, "--spoof6", ctl6,
                              "--kinds", "spoofed_source,spoofed_source_v6"])
    time.sleep(1.0)
    status_ok = relay.cfr("status", "--json", "--no-flows", check=False).returncode == 0
    after = ctx.drops() if status_ok else before
    ctx.forget_crowd_dns()
    res = ctx.crowd_loader("hostile").run(sites=env.sites[:5], count=20, concurrency=2,
                                 sources=[(f"pop{i}", a) for i, a in enumerate(ctx.sources(4))],
                                 family=4, check=False, timeout=120)
    normal_ok = sum(1 for r in res.records if not r.get("error"))
    time.sleep(0.5)
    cap.stop()
    daemon_alive = relay.daemon is not None and relay.daemon.alive()
    # the positive control of the leak scan: the same packets under `route`
    relay.stop_daemon()
    relay.apply("route")
    ctl_pcap, ctl_cap, route_sent = _hostile_round(ctx, "route", spoof4, spoof6)
    time.sleep(1.0)
    ctl_cap.stop()
    relay.apply("cfr-flow")
    report, control = scanner.scan_pcap(pcap), scanner.scan_pcap(ctl_pcap)
    leaks = len(report.hits)
    frames = report.packets  # a leak scan of an empty capture proves nothing
    control_hits = control.categories()
    control_ok = all(control_hits[c] > 0 for c in HOSTILE_CONTROL_CATEGORIES)
    spoofed_seen = sources_seen(pcap, spoof4 + spoof6) + sources_seen(ctl_pcap, spoof4 + spoof6)
    spoof_control_seen = len(sources_seen(pcap, [ctl4, ctl6]))
    delta = {k: after[k] - before[k] for k in after}
    spoofed = sent.get("spoofed_source", 0) + sent.get("spoofed_source_v6", 0)
    passed = (status_ok and daemon_alive and normal_ok == len(res.records) and leaks == 0
              and sum(sent.values()) > 0 and frames > 0 and control_ok and spoofed > 0
              and not spoofed_seen and spoof_control_seen > 0)
    return _row("hostile packets", load_held=normal_ok == len(res.records),
                faults_injected=sum(sent.values()),
                faults_survived=sum(sent.values()) if status_ok and daemon_alive else 0,
                flows_lost=len(res.records) - normal_ok, leaks_found=leaks, passed=passed,
                figures={"sent": sent, "drop_counter_deltas": delta,
                         "leak_hits_by_category": report.categories(),
                         "leak_examples": [h.__dict__ for h in report.hits[:5]],
                         "control_policy": "route", "control_sent": route_sent,
                         "control_hits_by_category": control_hits,
                         "control_required": list(HOSTILE_CONTROL_CATEGORIES),
                         "control_ok": control_ok,
                         "spoofed_sent": spoofed, "spoofed_sources": spoof4 + spoof6,
                         "spoofed_seen_at_front_door": len(spoofed_seen),
                         "spoof_control_sent": sum(ctl_sent.values()),
                         "spoof_control_seen_at_front_door": spoof_control_seen,
                         "status_answers": status_ok, "daemon_alive": daemon_alive,
                         "normal_traffic_ok": [normal_ok, len(res.records)],
                         "frames_captured_at_front_door": frames, "pcap": pcap.name,
                         "control_pcap": ctl_pcap.name})


SCENARIOS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "exhaustion": exhaustion,
    "rotation": rotation,
    "crash": crash,
    "front_door": front_door,
    "hostile": hostile,
}


def run_resilience(scenario: Scenario, run_dir: Path, registry: RunRegistry, console: Console,
                   scale: Scale | None = None, only: list[str] | None = None) -> dict:
    """Run the scenarios (all, or `only`) on ONE network; returns {"rows", "passed"}.

    A scenario that raises becomes a failed row with the error, so one broken scenario
    never hides the others' results."""
    from dataclasses import replace

    scale = scale or Scale()
    sc = replace(scenario, population=max(scenario.population, scale.sources),
                 subscribers=max(scenario.subscribers, 2))
    out = run_dir / "raw" / "resilience"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    def log(msg: str) -> None:
        console.print(msg)

    with Network(sc, registry, topology=load_topology(sc.topology)) as net:
        env = BenchEnv(net, registry.make_tmpdir("resilience"), ech_mode=sc.ech_mode,
                       pool_size=8, epoch_s=3600)
        env.start(["cfr-flow", "cfr-epoch"])
        try:
            ctx = Ctx(net, env, out, scale, log)
            for name, fn in SCENARIOS.items():
                if only and name not in only:
                    continue
                t0 = time.monotonic()
                try:
                    row = fn(ctx)
                except Exception as exc:  # report, continue with the next scenario
                    row = _row(name, figures={"error": f"{type(exc).__name__}: {exc}"[:500]})
                row["figures"]["seconds"] = round(time.monotonic() - t0, 1)
                rows.append(row)
                log(f"      {row['name']}: {'PASS' if row['passed'] else 'FAIL'} "
                    f"({row['figures']['seconds']} s)")
        finally:
            env.stop()
    result = {"rows": rows, "passed": bool(rows) and all(r["passed"] for r in rows),
              "scale": asdict(scale)}
    (out / "resilience.json").write_text(json.dumps(result, indent=2, default=str))
    return result
