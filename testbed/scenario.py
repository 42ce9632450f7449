"""Scenario parameters: topology size, per-link emulation, services, relay policy.

A scenario comes from defaults, then an optional TOML file, then CLI overrides, in that
order; a benchmark definition may then override link parameters (`merge_link_overrides`,
which says which of the user's values it replaced). Every value is validated here, before
anything is created, so a bad parameter is reported as one line naming it and its allowed
range (exit 2) and leaves no trace.
Stdlib only (imported by the Mininet topology under the system Python); so is
`relay.policies`, where the list of policies comes from (re-exported here as `POLICIES`),
and `testbed.delayline`, which owns the link limits (those of its Go `spec.go`).

`detour` means one thing everywhere a user or a definition writes it (`[links.detour]
delay_ms`, `--detour-delay`, a definition's `link_delay_ms.detour` and its sweeps): the extra
one-way delay of a path through a relay provider over the direct path. The detour link is a
leaf crossed twice by every one-way trip (core -> provider -> core), so that extra delay is
split over the link's two crossings in `detour_link_delay_ms` and nowhere else; a scenario
stores (and `to_dict` records) the per-crossing value the link emulates, next to the path's
`detour_extra_ms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from relay.policies import POLICIES  # the relay owns the list (stdlib-only module)
from testbed.delayline import (  # the link limits, defined once (checked against spec.go)
    DEFAULT_QUEUE_PACKETS,
    MAX_DELAY_MS,
    MAX_JITTER_MS,
    MAX_QUEUE_PACKETS,
    MAX_RATE_MBIT,
    MIN_RATE_MBIT,
)
from testbed.errors import ParameterError, UsageError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 (Ubuntu 22.04)
    import tomli as tomllib  # type: ignore[no-redef]

MECHANISMS = ("auto", "netem", "delayline")
ECH_MODES = ("shared", "split")
LINK_CLASSES = ("access", "aggregation", "wan", "cdn", "detour")
MAX_SUBSCRIBER_HOSTS = 250  # one namespace each
MAX_POPULATION = 30000
#: How many times a one-way trip through a relay provider crosses the detour link.
DETOUR_CROSSINGS = 2
#: The default extra one-way delay of a path through a relay provider.
DEFAULT_DETOUR_EXTRA_MS = 15.0
#: Delay keys a path-level detour value cannot take: every one-way trip crosses the detour
#: link in both directions, so a per-direction split has no meaning for a path.
_DETOUR_DIRECTION_KEYS = ("delay_up_ms", "delay_down_ms")


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ParameterError(name, value, f"an integer from {lo} to {hi}")


def _float_range(name: str, value: Any, lo: float, hi: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        raise ParameterError(name, value, f"a number from {lo:g} to {hi:g}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ParameterError(name, value, "one of " + ", ".join(allowed))


def detour_link_delay_ms(extra_one_way_ms: float, parameter: str = "detour delay") -> float:
    """The detour link's one-way delay per crossing for a path's extra one-way delay.

    The one place the detour is halved: CLI, scenario files, defaults and benchmark
    definitions all give the path's extra delay and convert it here."""
    _float_range(parameter, extra_one_way_ms, 0.0, MAX_DELAY_MS)
    return extra_one_way_ms / DETOUR_CROSSINGS


@dataclass(frozen=True)
class LinkClassParams:
    """Emulation applied to every link of one class, the same in both directions unless the
    *_up/*_down variants are given (up = towards the Internet)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_mbit: float | None = None
    queue_packets: int = DEFAULT_QUEUE_PACKETS
    delay_up_ms: float | None = None
    delay_down_ms: float | None = None
    rate_up_mbit: float | None = None
    rate_down_mbit: float | None = None

    def direction(self, up: bool) -> dict[str, Any]:
        """Parameters of one direction (keyword arguments of DirectionSpec)."""
        delay = self.delay_up_ms if up else self.delay_down_ms
        rate = self.rate_up_mbit if up else self.rate_down_mbit
        return {
            "delay_ms": self.delay_ms if delay is None else delay,
            "jitter_ms": self.jitter_ms,
            "loss_pct": self.loss_pct,
            "rate_mbit": self.rate_mbit if rate is None else rate,
            "queue_packets": self.queue_packets,
        }


DEFAULT_LINKS: dict[str, LinkClassParams] = {
    "access": LinkClassParams(delay_ms=2.0),
    "aggregation": LinkClassParams(),
    "wan": LinkClassParams(delay_ms=10.0),
    "cdn": LinkClassParams(),
    # The detour to an off-path relay provider, stored per crossing (see the module doc).
    "detour": LinkClassParams(delay_ms=detour_link_delay_ms(DEFAULT_DETOUR_EXTRA_MS)),
}


#: The built-in topologies (each a file topologies/<name>.py; a unit test checks they agree).
#: `topology` may also name a user's file, `path/to/file.py[:Class]`, loaded by the
#: application with `topologies.load_topology` (this layer only checks the spelling).
TOPOLOGIES = ("isp_cdn", "two_pops")


@dataclass(frozen=True)
class Scenario:
    topology: str = "isp_cdn"
    subscribers: int = 4
    population: int = 200
    origins: int = 1
    providers: int = 2
    links: dict[str, LinkClassParams] = field(default_factory=lambda: dict(DEFAULT_LINKS))
    mechanism: str = "auto"
    ech_mode: str = "shared"
    policy: str = "route"
    address_blocks: dict[str, str] = field(default_factory=dict)
    seed: int = 1

    @property
    def detour_extra_ms(self) -> float:
        """Extra one-way delay a path through a relay provider pays versus the direct path."""
        link = self.links["detour"]
        return link.direction(True)["delay_ms"] + link.direction(False)["delay_ms"]

    def validate(self) -> Scenario:
        _topology_spec(self.topology)
        _int_range("subscribers", self.subscribers, 1, MAX_SUBSCRIBER_HOSTS)
        _int_range("population", self.population, 0, MAX_POPULATION)
        _int_range("origins", self.origins, 1, 16)
        _int_range("providers", self.providers, 0, 4)
        _choice("link_emulation", self.mechanism, MECHANISMS)
        _choice("ech_mode", self.ech_mode, ECH_MODES)
        _choice("policy", self.policy, POLICIES)
        for name, params in self.links.items():
            _choice("link class", name, LINK_CLASSES)
            _validate_link(name, params)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, for result metadata."""
        return {
            "topology": self.topology,
            "subscribers": self.subscribers,
            "population": self.population,
            "origins": self.origins,
            "providers": self.providers,
            "links": {k: _link_dict(v) for k, v in self.links.items()},
            "detour_extra_ms": self.detour_extra_ms,
            "link_emulation": self.mechanism,
            "ech_mode": self.ech_mode,
            "policy": self.policy,
            "address_blocks": dict(self.address_blocks),
            "seed": self.seed,
        }


def _link_dict(p: LinkClassParams) -> dict[str, Any]:
    return {f.name: getattr(p, f.name) for f in fields(p)}


def _topology_spec(value: Any) -> None:
    """A built-in name, or a file spec `path.py[:Class]` (existence is checked on loading)."""
    if isinstance(value, str) and value.split(":", 1)[0].endswith(".py"):
        cls = value.partition(":")[2]
        if not cls or cls.isidentifier():
            return
    elif value in TOPOLOGIES:
        return
    raise ParameterError("topology", value,
                         "one of " + ", ".join(TOPOLOGIES) + " or path/to/file.py[:Class]")


def _validate_link(cls: str, p: LinkClassParams) -> None:
    for attr in ("delay_ms", "delay_up_ms", "delay_down_ms"):
        v = getattr(p, attr)
        if v is not None:
            _float_range(f"{cls}.{attr}", v, 0.0, MAX_DELAY_MS)
    _float_range(f"{cls}.jitter_ms", p.jitter_ms, 0.0, MAX_JITTER_MS)
    _float_range(f"{cls}.loss_pct", p.loss_pct, 0.0, 100.0)
    for attr in ("rate_mbit", "rate_up_mbit", "rate_down_mbit"):
        v = getattr(p, attr)
        if v is not None:
            _float_range(f"{cls}.{attr}", v, MIN_RATE_MBIT, MAX_RATE_MBIT)
    _int_range(f"{cls}.queue_packets", p.queue_packets, 1, MAX_QUEUE_PACKETS)


_TOP_KEYS = {"topology", "links", "emulation", "ech", "relay", "addressing", "seed"}
_TOPOLOGY_KEYS = {"name", "subscribers", "population", "origins", "providers"}
_LINK_KEYS = {f.name for f in fields(LinkClassParams)}


def _check_keys(where: str, table: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise UsageError(f"scenario: [{where}] must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UsageError(
            f"scenario: unknown key(s) {', '.join(unknown)} in [{where}]; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return table


def scenario_from_mapping(data: dict[str, Any], base: Scenario | None = None) -> Scenario:
    """Apply a parsed TOML document on top of `base` (defaults when None) and validate."""
    scenario = base or Scenario()
    _check_keys("top level", data, _TOP_KEYS)
    topo = dict(_check_keys("topology", data.get("topology", {}), _TOPOLOGY_KEYS))
    if "name" in topo:
        topo["topology"] = topo.pop("name")
    scenario = replace(scenario, **topo)
    links = dict(scenario.links)
    for name, table in _check_keys("links", data.get("links", {}), set(LINK_CLASSES)).items():
        table = dict(_check_keys(f"links.{name}", table, _LINK_KEYS))
        if name == "detour":
            table = _detour_table(table)
        links[name] = replace(links.get(name, LinkClassParams()), **table)
    scenario = replace(scenario, links=links)
    emulation = _check_keys("emulation", data.get("emulation", {}), {"mechanism"})
    if "mechanism" in emulation:
        scenario = replace(scenario, mechanism=emulation["mechanism"])
    ech = _check_keys("ech", data.get("ech", {}), {"mode"})
    if "mode" in ech:
        scenario = replace(scenario, ech_mode=ech["mode"])
    relay = _check_keys("relay", data.get("relay", {}), {"policy"})
    if "policy" in relay:
        scenario = replace(scenario, policy=relay["policy"])
    blocks = data.get("addressing", {})
    if not isinstance(blocks, dict) or not all(isinstance(v, str) for v in blocks.values()):
        raise UsageError("scenario: [addressing] must map block names to prefixes (strings)")
    if blocks:
        scenario = replace(scenario, address_blocks={**scenario.address_blocks, **blocks})
    if "seed" in data:
        scenario = replace(scenario, seed=data["seed"])
        _int_range("seed", scenario.seed, 0, 2**32 - 1)
    return scenario.validate()


def _detour_table(table: dict[str, Any]) -> dict[str, Any]:
    """[links.detour] from a file: `delay_ms` is the path's extra one-way delay."""
    split = [k for k in _DETOUR_DIRECTION_KEYS if k in table]
    if split:
        raise UsageError(f"scenario: [links.detour] takes no {', '.join(split)}: its delay_ms is "
                         "the extra one-way delay of a path through a relay provider, and every "
                         "one-way trip crosses the detour link in both directions")
    if "delay_ms" in table:
        table["delay_ms"] = detour_link_delay_ms(table["delay_ms"], "detour.delay_ms")
    return table


def load_scenario(path: str | Path, base: Scenario | None = None) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"scenario file {path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"scenario file {path}: malformed TOML: {exc}") from None
    try:
        return scenario_from_mapping(data, base)
    except TypeError as exc:  # a wrong type reached a dataclass constructor
        raise UsageError(f"scenario file {path}: {exc}") from None


def with_link_override(scenario: Scenario, link_class: str, **changes: Any) -> Scenario:
    """A copy with one link class changed, values as the link emulates them (per crossing;
    for a path's detour delay use `with_detour_delay`)."""
    _choice("link class", link_class, LINK_CLASSES)
    links = dict(scenario.links)
    links[link_class] = replace(links[link_class], **changes)
    return replace(scenario, links=links).validate()


def with_detour_delay(scenario: Scenario, extra_one_way_ms: float,
                      parameter: str = "detour delay") -> Scenario:
    """A copy whose paths through a relay provider pay `extra_one_way_ms` more one way."""
    per_crossing = detour_link_delay_ms(extra_one_way_ms, parameter)
    return with_link_override(scenario, "detour", delay_ms=per_crossing)


def merge_link_overrides(
    user: Scenario,
    delays_ms: Mapping[str, float] | None = None,
    rates_mbit: Mapping[str, float] | None = None,
    queue_packets: Mapping[str, int] | None = None,
    *,
    defaults: Scenario | None = None,
) -> tuple[Scenario, list[str]]:
    """Apply a benchmark definition's link delays, rates and queues on top of the user's.

    `delays_ms` are one-way per link class, `detour` as a path's extra one-way delay (the
    same meaning as everywhere else). Returns the scenario to run and one line per value the
    user set (differs from `defaults`, the built-in scenario unless given) that the
    definition replaced with a different one, e.g. `wan delay 20 ms -> 10 ms (definition)`,
    for the console and the run's provenance. A value the user left at its default is not
    reported: the definition chose it, nobody's setting was lost.
    """
    base = defaults if defaults is not None else Scenario()
    merged = user
    overridden: list[str] = []

    def note(label: str, was: Any, default: Any, now: Any, show: Callable[[Any], str]) -> None:
        if was != default and was != now:
            overridden.append(f"{label} {show(was)} -> {show(now)} (definition)")

    for link_class, delay in (delays_ms or {}).items():
        _choice("link class", link_class, LINK_CLASSES)
        if link_class == "detour":
            merged = with_detour_delay(merged, float(delay))
            note("detour (extra one-way) delay", user.detour_extra_ms, base.detour_extra_ms,
                 merged.detour_extra_ms, lambda v: f"{v:g} ms")
        else:
            merged = with_link_override(merged, link_class, delay_ms=float(delay))
            note(f"{link_class} delay", user.links[link_class].delay_ms,
                 base.links[link_class].delay_ms, merged.links[link_class].delay_ms,
                 lambda v: f"{v:g} ms")
    for attr, table, label, show in (
        ("rate_mbit", rates_mbit, "rate",
         lambda v: "unlimited" if v is None else f"{v:g} Mbit/s"),
        ("queue_packets", queue_packets, "queue", lambda v: f"{v} packets"),
    ):
        for link_class, value in (table or {}).items():
            _choice("link class", link_class, LINK_CLASSES)
            cast = int(value) if attr == "queue_packets" else float(value)
            merged = with_link_override(merged, link_class, **{attr: cast})
            note(f"{link_class} {label}", getattr(user.links[link_class], attr),
                 getattr(base.links[link_class], attr), cast, show)
    return merged.validate(), overridden
