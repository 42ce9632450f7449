"""`cfrbench run linkability`: the emulated linkability experiment.

One seeded workload (households with several devices, dual stack, RFC 8981 temporary
addresses, Zipf sites, Poisson sessions, the pineapple-pizza trait) is replayed by the real
ECH load generator on the population host, once per policy, through the real relay on the
ISP edge (`cfr run`, so `cfr-epoch` rotates on its own clock) to the real front door with
resumption on. The ground truth and the front-door log of each replay are then joined and
attacked by every linker (`benchmarks.linkability`), and the ISP-scale model is run.

Devices (``device_namespaces``): each device of the workload runs in a namespace of its own
behind the population host (``testbed.devices``), with the stack settings and TLS client of
its device class (assigned by a seeded hash of the device name), so that the front door's
fingerprint linkers (``benchmarks.linkability.fingerprints``) face a population that differs
the way real devices do. Every device keeps one TLS session cache for all its addresses.
Not emulated: per-line access delays (every device shares the population host's access
link, so the handshake-RTT signal sees one path) and per-device TCP timestamp clocks (one
kernel: a class with ``tcp_timestamps=2`` shares the machine's clock).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from benchmarks.environment import BenchEnv
from benchmarks.linkability import linkers as lk
from benchmarks.linkability.analysis import analyse_emulation
from benchmarks.linkability.fingerprints import fingerprint_linkers
from benchmarks.linkability.model import ModelParams, run_model
from benchmarks.linkability.simulator import SimParams
from benchmarks.linkability.workload import WorkloadParams, delay_class_rtts, generate_workload
from testbed.devices import DEVICE_CLASSES, BringUp, DeviceNamespaces, DeviceSpec
from testbed.errors import ParameterError
from testbed.lifecycle import RunRegistry
from testbed.network import Network
from testbed.scenario import Scenario
from testbed.services import ech as ech_service
from topologies import load_topology

# (policy as the analysis names it, relay policy, everyone on temporary IPv6 addresses?)
POLICY_RUNS = (
    ("route", "route", False),
    ("cgn", "cgn", False),
    ("nptv6", "nptv6", False),
    ("ipv6-temp", "route", True),
    ("cfr-flow", "cfr-flow", False),
    ("cfr-epoch", "cfr-epoch", False),
)


#: Names per shared front-door certificate when coalescing (a CDN's multi-name certificates).
COALESCE_CERT_GROUP = 10


@dataclass(frozen=True)
class LinkabilityParams:
    """Defaults are the full profile: 600 s of workload and 500 households of which a fifth
    (100) carry the trait, long enough for the oracle ceiling to approach 1 (issue 15: at
    60 s about half the trait households never visit a trait site). ``quick()`` is short
    and says its ceiling when it runs."""

    households: int = 500
    duration_s: float = 600.0
    epoch_s: float = 15.0
    pool_size: int = 8
    sessions_per_device_per_hour: float = 60.0
    window_s: float = 15.0
    seed: int = 1
    model: str = "quick"  # quick | full | none
    trait_fraction: float = 0.2
    device_namespaces: bool = True
    device_classes: tuple[str, ...] = tuple(DEVICE_CLASSES)
    # > 0: devices reuse an open connection to a site for visits within this many seconds
    # (echd load --keep-alive; keep it below the front door's 30 s idle timeout). Off by
    # default: with it, ground truth has one line per visit and several share a connection.
    keep_alive_s: float = 0.0
    # with keep_alive_s: coalesce visits to other sites onto an open HTTP/2 connection
    # (echd load --coalesce; the front door logs the hosts of each connection)
    coalesce: bool = False
    # per-line access delays: households drawn into K delay classes, 2..30 ms round trip
    # (testbed.devices; one delay line per class); 0: no added access delay
    delay_classes: int = 4

    @classmethod
    def quick(cls) -> LinkabilityParams:
        return cls(households=200, duration_s=60.0, trait_fraction=0.1)

    @classmethod
    def for_profile(cls, profile: str) -> LinkabilityParams:
        return cls.quick() if profile in ("quick", "tiny") else cls()

    def validate(self, population: int) -> LinkabilityParams:
        if not 2 <= self.households <= population:
            raise ParameterError("households", self.households,
                                 f"2..{population} (the population host's subscribers)")
        if not 5 <= self.duration_s <= 3600:
            raise ParameterError("duration", self.duration_s, "5..3600 seconds")
        if not 0 <= self.keep_alive_s < 30:
            raise ParameterError("keep-alive", self.keep_alive_s,
                                 "0 (off) .. below the front door's 30 s idle timeout")
        if self.coalesce and self.keep_alive_s <= 0:
            raise ParameterError("coalesce", "on", "only with keep-alive > 0 (a connection "
                                 "must stay open to be coalesced onto)")
        if not 0 <= self.delay_classes <= 16:
            raise ParameterError("delay classes", self.delay_classes,
                                 "0 (no access delay) .. 16 (one delay line each)")
        if self.model not in ("quick", "full", "none"):
            raise ParameterError("model", self.model, "quick, full or none")
        unknown = [c for c in self.device_classes if c not in DEVICE_CLASSES]
        if unknown or not self.device_classes:
            raise ParameterError("device classes", ",".join(unknown) or "none",
                                 ", ".join(DEVICE_CLASSES))
        return self


def _workloads(p: LinkabilityParams, net: Network, first_subscriber: int):
    plan = net.graph.plan

    def address_plan(i: int) -> tuple[str, str]:
        sub = plan.subscriber(first_subscriber + i)
        return str(sub.v4), str(sub.v6_prefix)

    base = WorkloadParams(seed=p.seed, households=p.households, duration_s=p.duration_s,
                          sessions_per_device_per_hour=p.sessions_per_device_per_hour,
                          temp_addr_lifetime_s=max(p.duration_s / 3, 1.0),
                          trait_fraction=p.trait_fraction,
                          delay_classes=p.delay_classes if p.device_namespaces else 0,
                          coalesce=p.coalesce)
    return (generate_workload(base, address_plan),
            generate_workload(replace(base, temp_addr_fraction=1.0), address_plan))


def population_host(net: Network) -> str:
    """The topology's population host (the households' devices live behind it)."""
    host = net.roles.population
    if host is None:
        raise ParameterError("topology", net.scenario.topology,
                             "a topology with a population host (roles.population)")
    return host


def _add_device_addresses(net: Network, workloads) -> int:
    """Devices' IPv6 addresses (stable and temporary) onto the population host's interface."""
    host = population_host(net)
    present = {a.split("/")[0] for addrs in net.info[host].addresses.values() for a in addrs}
    wanted = sorted({r["source"] for w in workloads for r in w.records
                     if ":" in r["source"] and r["source"] not in present})
    lines = [f"addr add {a}/64 dev {net.roles.interface(host)} nodad" for a in wanted]
    net.mn[host].ip_batch(lines)
    return len(wanted)


def device_class_of(device: str, seed: int, classes: Sequence[str]) -> str:
    """A device's class: a seeded hash of its name, so both workloads (and every policy's
    replay) give one device the same class."""
    h = hashlib.sha256(f"{seed}:{device}".encode()).digest()
    return classes[int.from_bytes(h[:4], "big") % len(classes)]


def device_specs(workloads, seed: int, classes: Sequence[str]) -> list[DeviceSpec]:
    """One namespace per workload device, holding every source address the device uses in
    any of the workloads; devices of one household get disjoint port ranges."""
    addrs: dict[str, set[str]] = {}
    household: dict[str, str] = {}
    delay: dict[str, int] = {}
    for w in workloads:
        for r in w.records:
            addrs.setdefault(r["device"], set()).add(r["source"])
            delay[r["device"]] = int(r.get("delay_class", -1))
            household[r["device"]] = r["household"]
    members: dict[str, list[str]] = {}
    for dev in sorted(addrs):
        members.setdefault(household[dev], []).append(dev)
    specs = []
    for dev in sorted(addrs):
        cls = DEVICE_CLASSES[device_class_of(dev, seed, classes)]
        group = members[household[dev]]
        specs.append(DeviceSpec(dev, cls.stack, tuple(sorted(addrs[dev])),
                                port_slot=group.index(dev), port_slots=len(group),
                                device_class=cls.name, delay_class=delay.get(dev, -1)))
    return specs


def setup_devices(net: Network, workloads, p: LinkabilityParams, out: Path
                  ) -> tuple[DeviceNamespaces | None, Path, BringUp | None]:
    """Device classes onto the workload records (``profile`` = the device, ``device_class``)
    and, with ``device_namespaces``, one namespace per device. Returns the namespaces (to
    take down), the ``echd load --profiles`` file and the bring-up times."""
    specs = device_specs(workloads, p.seed, p.device_classes)
    dn: DeviceNamespaces | None = None
    rep: BringUp | None = None
    if p.device_namespaces:
        wp = workloads[0].params
        rtts = delay_class_rtts(wp.delay_classes, *wp.access_rtt_ms) if wp.delay_classes else ()
        dn = DeviceNamespaces(net[population_host(net)], net.registry,
                              str(net.graph.plan.access_gateway_v4), delay_rtts_ms=rtts,
                              delay_seed=p.seed)
        rep = dn.up(specs)
    profiles = {s.name: DEVICE_CLASSES[s.device_class].echd_profile(
        dn.netns_path(k) if dn else None) for k, s in enumerate(specs)}
    cls = {s.name: s.device_class for s in specs}
    for w in workloads:
        for r in w.records:
            r["profile"] = r["device"]
            r["device_class"] = cls[r["device"]]
    path = out / "device-profiles.json"
    path.write_text(json.dumps(profiles, indent=1, sort_keys=True))
    return dn, path, rep


def replay(env: BenchEnv, loader: ech_service.LoadGenerator, policy: str, records: list[dict],
           out: Path, name: str, duration_s: float,
           profiles: Path | None = None, keep_alive_s: float = 0.0,
           coalesce: bool = False) -> tuple[Path, Path, dict]:
    """Replay a workload under one relay policy (`cfr run`); write ground truth and the
    front door's log of the same connections. Returns both paths and counts."""
    env.relay.start_daemon(policy)
    before = len(env.cdn.front.records())
    extra = ["--profiles", str(profiles)] if profiles else []
    if keep_alive_s > 0:
        extra += ["--keep-alive", f"{keep_alive_s}s"] + (["--coalesce"] if coalesce else [])
    result = loader.run(workload=records, resumption=env.resumption, check=False,
                        timeout=duration_s * 4 + 120, extra=extra)
    time.sleep(2.0)  # the front door logs a connection when it closes
    seen = env.cdn.front.records()[before:]
    truth, front = out / f"truth-{name}.jsonl", out / f"frontdoor-{name}.jsonl"
    truth.write_text("".join(json.dumps(r) + "\n" for r in result.records))
    front.write_text("".join(json.dumps(r) + "\n" for r in seen))
    failed = sum(1 for r in result.records if r.get("error"))
    reused = sum(1 for r in result.records if r.get("reused"))
    return truth, front, {"flows": len(result.records), "failed": failed, "seen": len(seen),
                          "reused": reused}


def run_linkability(base: Scenario, params: LinkabilityParams, run_dir: Path,
                    registry: RunRegistry, console: Console) -> dict:
    scenario = replace(base, ech_mode="shared", population=max(base.population,
                                                                   params.households))
    params.validate(scenario.population)
    out = run_dir / "raw" / "linkability"
    out.mkdir(parents=True, exist_ok=True)
    with Network(scenario, registry, topology=load_topology(scenario.topology)) as net:
        workload, temp_workload = _workloads(params, net, scenario.subscribers)
        workload.write(out / "workload.jsonl", out / "households.json")
        temp_workload.write(out / "workload-ipv6-temp.jsonl", out / "households-ipv6-temp.json")
        added = _add_device_addresses(net, (workload, temp_workload))
        console.print(f"      workload: {params.households} households, "
                      f"{len(workload.records)} sessions over {params.duration_s:.0f} s, "
                      f"{added} device IPv6 addresses added to {population_host(net)}")
        devices, profiles, bring_up = setup_devices(net, (workload, temp_workload), params, out)
        if devices is not None:
            registry.defer(devices.down)
        if bring_up is not None:
            console.print(f"      {bring_up.devices} device namespaces up in "
                          f"{bring_up.total_s:.1f} s (create {bring_up.create_s:.1f}, "
                          f"configure {bring_up.configure_s:.1f}, population host "
                          f"{bring_up.parent_s:.1f}, delay lines {bring_up.delay_s:.1f}; "
                          "shared machine, noisy)")
            for c in devices.delay_classes():
                console.print(f"      delay class {c['class']}: {c['rtt_ms']:g} ms RTT, "
                              f"{c['devices']} devices")
        env = BenchEnv(net, registry.make_tmpdir("linkability"), ech_mode="shared",
                       pool_size=params.pool_size, epoch_s=params.epoch_s, resumption=True,
                       named_sites=tuple(workload.params.sensitive_sites),
                       cert_group=COALESCE_CERT_GROUP if params.coalesce else 0)
        env.start(["direct"])
        truth: dict[str, Path] = {}
        front: dict[str, Path] = {}
        try:
            loader = ech_service.LoadGenerator(net[population_host(net)],
                                               dns=env.dns.address,
                                               ca_file=env.ca_file, workdir=out / "load")
            for name, policy, temporary in POLICY_RUNS:
                t0 = time.monotonic()
                records = (temp_workload if temporary else workload).records
                truth[name], front[name], errors = replay(env, loader, policy, records, out,
                                                          name, params.duration_s, profiles,
                                                          params.keep_alive_s,
                                                          params.coalesce)
                console.print(f"      {name:10} {errors['flows']:5} flows "
                              f"({errors['failed']} failed, {errors['reused']} over a reused "
                              f"connection), {errors['seen']} seen by the front door, "
                              f"{time.monotonic() - t0:.0f} s")
            env.relay.stop_daemon()
        finally:
            env.stop()
            if devices is not None:
                devices.down()
    model_params = SimParams(subscribers=params.households, duration_s=params.duration_s,
                             pool=params.pool_size, epoch_s=params.epoch_s,
                             window_s=params.window_s, seed=params.seed)
    section = analyse_emulation(truth, front, workload, run_dir, window_s=params.window_s,
                                linkers={**lk.default_linkers(), **fingerprint_linkers()},
                                model_params=model_params)
    section["parameters"] = {k: getattr(params, k) for k in params.__dataclass_fields__}
    if bring_up is not None:
        section["device_namespaces"] = {"devices": bring_up.devices,
                                        "bring_up_s": round(bring_up.total_s, 3)}
    for pol, by_trait in oracle_ceilings(section).items():
        shown = ", ".join(f"{t} {'undefined' if a is None else f'{a:.3f}'}"
                          for t, a in by_trait.items())
        low = any(a is not None and a < 0.95 for a in by_trait.values())
        console.print(f"      {pol:10} oracle trait-AUC ceiling: {shown}"
                      + ("  (below 1: no adversary can do better on this trace)" if low
                         else ""))
    if params.model != "none":
        mp = ModelParams.quick() if params.model == "quick" else ModelParams()
        section["model"] = run_model(mp, run_dir)
    return section


def oracle_ceilings(section: dict) -> dict[str, dict[str, float | None]]:
    """The oracle's trait AUC per policy and trait (every flow joined to its true household:
    what a perfect linker reaches with this trace; None when undefined, e.g. no trait
    household seen). The Bayes-optimal oracle of the trait adversaries
    (``section["adversary"][policy]["trait_attack"][trait]["oracle"]``) when present, else
    the evaluation's ``trait_ceiling``. A short run says here why it cannot profile."""
    out: dict[str, dict[str, float | None]] = {}

    def num(x: object) -> float | None:
        return float(x) if isinstance(x, (int, float)) else None

    for pol, a in (section.get("adversary") or {}).items():
        attack = a.get("trait_attack") if isinstance(a, dict) else None
        for trait, res in (attack or {}).items():
            if isinstance(res, dict) and isinstance(res.get("oracle"), dict):
                out.setdefault(pol, {})[trait] = num(res["oracle"].get("auc"))
    for pol, r in (section.get("policies") or {}).items():
        if pol not in out and isinstance(r, dict) and "trait_ceiling" in r:
            out[pol] = {"trait": num((r.get("trait_ceiling") or {}).get("auc"))}
    return out
