"""Seeded browsing workload for the linkability experiment (input of the ECH load generator).

Why it looks like this: the question is what the ECH front door can join, so the workload
must contain exactly the structure real subscribers leak:

* **Households, devices, dual stack.** A household (= one subscriber access line) has one
  IPv4 address and one IPv6 /56 delegated prefix; its devices (``devices_min``..``max``) use
  addresses in the household's *first /64*. IPv4 is shared by the household (home NAT).
* **RFC 8981 temporary addresses.** A device either uses a stable interface ID (RFC 7217
  style, opaque but constant) or temporary addresses whose IID is regenerated every
  ``temp_addr_lifetime_s`` (each device with its own random phase, like RFC 8981's
  DESYNC_FACTOR). Rotation changes **only the interface ID**: the /64 never changes, which is
  why the draft says temporary addresses leave the prefix linkable. A session keeps the
  address it started with (existing connections keep their address across a rotation).
* **Zipf site popularity** over ``sites`` names ``site-NNNN.example`` (rank 1 most popular),
  sessions as a Poisson process per device, each session one page (plus sub-resources) on one
  site, family per session (IPv6 with probability ``v6_fraction``, else IPv4).
* **Profiling scenario.** A fraction ``trait_fraction`` of households carry a sensitive trait;
  each of their sessions goes, with probability ``sensitive_prob``, to one of a few
  "pineapple-pizza" sites instead. Households without the trait never visit those sites, so
  the ground truth of the trait is exact.
* **Activity and thinning.** Households differ in how much they browse (log-normal
  multiplier, ``activity_sigma``); trait-site sessions come on top of ordinary ones, so a
  trait household makes as many ordinary visits as anyone (otherwise the mere count of
  ordinary visits would reveal the trait, even under per-flow aliasing).
* **A weak trait.** A fraction ``weak_trait_fraction`` of households (drawn independently)
  shift their site mix: with probability ``weak_prob`` a session goes to one of
  ``weak_sites`` ordinary sites (popularity ranks ``weak_first_rank`` ..), which everybody
  else also visits at their Zipf rate. No site proves the trait; only the *rate* differs (by
  a factor of about 3 with the defaults), which is what real interest profiles look like. It
  draws from its own random stream, so the strong trait's records do not move with it.

* **Per-line access delays** (``delay_classes`` K > 0). Lines differ in round-trip delay
  (fibre to DSL, 2-30 ms by default, ``access_rtt_ms``); the emulation has K delay classes
  (``testbed.devices``: one delay line each, RTTs ``delay_class_rtts``, geometric from lo to
  hi, the same grid as ``testbed.devices.delay_class_rtts``) and each household
  draws one uniformly from its own random stream, recorded in the household table
  (``delay_class``, ``access_rtt_ms``) and on every record (``delay_class``). K = 0 leaves
  records and table as before.
* **Connection coalescing** (``coalesce``): whether the load generator may send a visit over
  a device's open HTTP/2 connection to another site of the same front door (``echd load
  --coalesce``, with keep-alive). It changes no record; it is here so one switch names it
  for a run and its ground truth.

Addresses come from the caller (the testbed's address plan) as ``subscriber(i) -> (ipv4,
ipv6_prefix56)`` or as a list of such pairs; ``example_address_plan`` exists only for tests and
standalone use and draws from the documentation/benchmarking ranges.

Output: ``Workload.records`` (JSON-lines records sorted by ``t``) and ``Workload.households``
(ground-truth table with trait flags), written by ``Workload.write``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

AddressPlan = Callable[[int], tuple[str, str]] | Sequence[tuple[str, str]]

DEFAULT_SENSITIVE_SITES: tuple[str, ...] = (
    "pineapple-pizza.example",
    "pizza-hawaii.example",
    "ananas-pizza.example",
    "hawaiian-slice.example",
)


def example_address_plan(i: int) -> tuple[str, str]:
    """Household i's (IPv4, IPv6 /56) from 198.18.0.0/16 and 2001:db8:100::/40 (tests only)."""
    if not 0 <= i < 250 * 250:
        raise ValueError(f"household index {i} outside the example plan")
    v4 = f"198.18.{1 + i // 250}.{1 + i % 250}"
    base = int(ipaddress.IPv6Address("2001:db8:100::"))
    v6 = ipaddress.IPv6Network((base + (i << 72), 56))
    return v4, str(v6)


@dataclass
class WorkloadParams:
    """All knobs of the workload; the defaults fit the emulated experiment (200 households)."""

    seed: int = 1
    households: int = 200
    devices_min: int = 1
    devices_max: int = 4
    sites: int = 1000
    zipf_s: float = 1.0
    duration_s: float = 900.0
    sessions_per_device_per_hour: float = 20.0
    temp_addr_fraction: float = 0.75
    temp_addr_lifetime_s: float = 300.0
    v6_fraction: float = 0.7
    trait_fraction: float = 0.1
    sensitive_sites: tuple[str, ...] = DEFAULT_SENSITIVE_SITES
    sensitive_prob: float = 0.25
    pages_per_site: int = 20
    subresource_prob: float = 0.9
    weak_trait_fraction: float = 0.1
    weak_sites: int = 10
    weak_first_rank: int = 30
    weak_prob: float = 0.05
    activity_sigma: float = 0.5
    delay_classes: int = 0
    access_rtt_ms: tuple[float, float] = (2.0, 30.0)
    coalesce: bool = False

    def __post_init__(self) -> None:
        if self.delay_classes < 0:
            raise ValueError("delay_classes must be >= 0")
        lo, hi = self.access_rtt_ms
        if not 0 <= lo <= hi:
            raise ValueError("access_rtt_ms must be (lo, hi) with 0 <= lo <= hi")
        if not 1 <= self.devices_min <= self.devices_max:
            raise ValueError("need 1 <= devices_min <= devices_max")
        if self.households < 1 or self.sites < 1 or self.duration_s <= 0:
            raise ValueError("households, sites and duration_s must be positive")
        if self.temp_addr_lifetime_s <= 0:
            raise ValueError("temp_addr_lifetime_s must be positive")
        if (
            not 1
            <= self.weak_first_rank
            <= self.weak_first_rank + self.weak_sites - 1
            <= self.sites
        ):
            raise ValueError("weak sites must be ranks within 1..sites")
        for name in (
            "temp_addr_fraction",
            "v6_fraction",
            "trait_fraction",
            "sensitive_prob",
            "weak_trait_fraction",
            "weak_prob",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v} is not a probability")


@dataclass
class Device:
    """One device of a household; ``iid_mode`` is 'stable' or 'temporary'."""

    device: str
    household: str
    iid_mode: str
    stable_iid: int
    temp_phase_s: float


@dataclass
class Household:
    """Ground truth for one household (= subscriber)."""

    household: str
    subscriber: str
    ipv4: str
    ipv6_prefix56: str
    ipv6_prefix64: str
    trait: bool
    devices: list[Device] = field(default_factory=list)
    weak_trait: bool = False
    delay_class: int = -1  # -1: no per-line delay classes
    access_rtt_ms: float = 0.0


def delay_class_rtts(classes: int, lo_ms: float, hi_ms: float) -> list[float]:
    """Round trips of the delay classes, geometric from lo_ms to hi_ms (equal ratios: access
    delay spreads over an order of magnitude). Kept equal to testbed.devices'
    ``delay_class_rtts`` (a unit test checks), without importing the testbed here."""
    if classes == 1:
        return [float(lo_ms)]
    if lo_ms == 0:
        return [hi_ms * i / (classes - 1) for i in range(classes)]
    ratio = (hi_ms / lo_ms) ** (1 / (classes - 1))
    return [round(lo_ms * ratio**i, 3) for i in range(classes)]


def site_name(rank: int, n_sites: int) -> str:
    """``site-NNNN.example`` for a 1-based popularity rank (zero-padded to at least 4)."""
    return f"site-{rank:0{max(4, len(str(n_sites)))}d}.example"


def zipf_probabilities(n: int, s: float) -> np.ndarray:
    """P(rank r) proportional to r^-s for r = 1..n."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


def _iid(seed: int, *parts: object) -> int:
    """A 64-bit interface ID derived from the seed and labels (deterministic, opaque)."""
    h = hashlib.sha256(("|".join(str(p) for p in (seed, *parts))).encode()).digest()
    iid = int.from_bytes(h[:8], "big")
    # Avoid the reserved all-zero and subnet-anycast-like values (RFC 5453); keep it simple.
    return iid or 1


def temp_index(device: Device, t: float, lifetime: float) -> int:
    """Which temporary address generation a device uses at time t (phase = desync)."""
    return int(np.floor((t + device.temp_phase_s) / lifetime))


def device_address(
    hh: Household, device: Device, t: float, params: WorkloadParams, family: int
) -> str:
    """Source address a device uses for a connection starting at t."""
    if family == 4:
        return hh.ipv4
    net64 = ipaddress.IPv6Network(hh.ipv6_prefix64)
    if device.iid_mode == "temporary":
        iid = _iid(
            params.seed, "temp", device.device, temp_index(device, t, params.temp_addr_lifetime_s)
        )
    else:
        iid = device.stable_iid
    return str(ipaddress.IPv6Address(int(net64.network_address) | iid))


def _plan_lookup(plan: AddressPlan, i: int) -> tuple[str, str]:
    v4, v6 = plan(i) if callable(plan) else plan[i]
    net56 = ipaddress.IPv6Network(v6, strict=False)
    if net56.prefixlen != 56:
        raise ValueError(f"household {i}: IPv6 prefix {v6} is not a /56")
    ipaddress.IPv4Address(v4)
    return v4, str(net56)


@dataclass
class Workload:
    """Workload records plus the ground-truth household table."""

    params: WorkloadParams
    households: list[Household]
    records: list[dict]

    def weak_site_names(self) -> list[str]:
        """The ordinary sites whose visit rate the weak trait raises."""
        p = self.params
        return [
            site_name(r, p.sites)
            for r in range(p.weak_first_rank, p.weak_first_rank + p.weak_sites)
        ]

    def household_table(self) -> dict:
        """JSON-able ground truth: households with trait flags, devices, sensitive sites."""
        return {
            "params": asdict(self.params),
            "sensitive_sites": list(self.params.sensitive_sites),
            "weak_sites": self.weak_site_names(),
            "households": [
                {
                    "household": h.household,
                    "subscriber": h.subscriber,
                    "ipv4": h.ipv4,
                    "ipv6_prefix56": h.ipv6_prefix56,
                    "ipv6_prefix64": h.ipv6_prefix64,
                    "trait": h.trait,
                    "weak_trait": h.weak_trait,
                    "devices": [{"device": d.device, "iid_mode": d.iid_mode} for d in h.devices],
                    **(
                        {"delay_class": h.delay_class, "access_rtt_ms": h.access_rtt_ms}
                        if h.delay_class >= 0
                        else {}
                    ),
                }
                for h in self.households
            ],
        }

    def write(self, records_path: str | Path, households_path: str | Path) -> None:
        """Write records as JSON lines and the household table as JSON."""
        with open(records_path, "w") as f:
            for r in self.records:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        with open(households_path, "w") as f:
            json.dump(self.household_table(), f, indent=1)


def generate_workload(
    params: WorkloadParams | None = None, address_plan: AddressPlan = example_address_plan
) -> Workload:
    """Build the seeded workload (same params and plan -> identical records)."""
    p = params or WorkloadParams()
    rng = np.random.default_rng(p.seed)
    n_trait = int(round(p.trait_fraction * p.households))
    trait_idx = set(rng.choice(p.households, size=n_trait, replace=False).tolist())
    # The weak trait has its own stream: records of the strong-trait scenario stay as they were.
    rng_w = np.random.default_rng([p.seed, 0x3EA4])
    n_weak = int(round(p.weak_trait_fraction * p.households))
    weak_idx = set(rng_w.choice(p.households, size=n_weak, replace=False).tolist())
    households: list[Household] = []
    for i in range(p.households):
        v4, v6_56 = _plan_lookup(address_plan, i)
        net64 = next(ipaddress.IPv6Network(v6_56).subnets(new_prefix=64))
        name = f"hh-{i:05d}"
        hh = Household(name, name, v4, v6_56, str(net64), i in trait_idx, weak_trait=i in weak_idx)
        for d in range(int(rng.integers(p.devices_min, p.devices_max + 1))):
            dev = f"{name}-d{d}"
            mode = "temporary" if rng.random() < p.temp_addr_fraction else "stable"
            phase = float(rng.uniform(0.0, p.temp_addr_lifetime_s))
            hh.devices.append(Device(dev, name, mode, _iid(p.seed, "stable", dev), phase))
        households.append(hh)
    if p.delay_classes:
        # own stream: the rest of the workload does not move with the delay draw
        rtts = delay_class_rtts(p.delay_classes, *p.access_rtt_ms)
        rng_d = np.random.default_rng([p.seed, 0xDE1A])
        for hh, c in zip(households, rng_d.integers(0, p.delay_classes, p.households),
                         strict=True):
            hh.delay_class, hh.access_rtt_ms = int(c), float(rtts[int(c)])

    sig = p.activity_sigma
    act = rng_w.lognormal(-0.5 * sig * sig, sig, p.households) if sig > 0 else np.ones(p.households)
    activity = {h.household: float(a) for h, a in zip(households, act, strict=True)}
    probs = zipf_probabilities(p.sites, p.zipf_s)
    rate = p.sessions_per_device_per_hour / 3600.0
    records: list[dict] = []
    for hh in households:
        for dev in hh.devices:
            # Trait-site sessions come on top of ordinary ones (thinning): a trait household
            # makes as many ordinary visits as anyone, so their count says nothing.
            mult = activity[hh.household] / ((1.0 - p.sensitive_prob) if hh.trait else 1.0)
            mult /= (1.0 - p.weak_prob) if hh.weak_trait else 1.0
            n = int(rng.poisson(rate * p.duration_s * mult))
            times = np.sort(rng.uniform(0.0, p.duration_s, n))
            fam6 = rng.random(n) < p.v6_fraction
            ranks = rng.choice(p.sites, size=n, p=probs) + 1
            go_sensitive = hh.trait & (rng.random(n) < p.sensitive_prob)
            sens_pick = rng.integers(0, len(p.sensitive_sites), n)
            pages = rng.integers(0, p.pages_per_site, n)
            subres = rng.random(n) < p.subresource_prob
            go_weak = hh.weak_trait & (rng_w.random(n) < p.weak_prob)
            weak_rank = p.weak_first_rank + rng_w.integers(0, p.weak_sites, n)
            ranks = np.where(go_weak, weak_rank, ranks)
            for k in range(n):
                family = 6 if fam6[k] else 4
                t = round(float(times[k]), 6)
                site = (
                    p.sensitive_sites[int(sens_pick[k])]
                    if go_sensitive[k]
                    else site_name(int(ranks[k]), p.sites)
                )
                records.append(
                    {
                        "t": t,
                        "subscriber": hh.subscriber,
                        "household": hh.household,
                        "device": dev.device,
                        "source": device_address(hh, dev, t, p, family),
                        "family": family,
                        "site": site,
                        "path": f"/page/{int(pages[k])}",
                        "subresources": bool(subres[k]),
                        "session_id": f"{dev.device}-s{k:05d}",
                        **({"delay_class": hh.delay_class} if hh.delay_class >= 0 else {}),
                    }
                )
    records.sort(key=lambda r: (r["t"], r["session_id"]))
    return Workload(p, households, records)


def load_household_table(source: str | Path | dict | Workload) -> dict:
    """Accept a Workload, a household-table dict, or a path to its JSON."""
    if isinstance(source, Workload):
        return source.household_table()
    if isinstance(source, dict):
        return source
    with open(source) as f:
        return json.load(f)
