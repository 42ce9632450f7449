"""The relay's TOML configuration: parsing and validation.

Validation is strict and happens entirely before any kernel state is touched: every error
names the key (dotted path, with list indices) and what is allowed there, unknown keys are
rejected (a typo must not silently fall back to a default), and pools are checked against
what the chosen policy promises (`PoolTooSmall`).

About 470 lines on purpose: it is the one contract of what a relay config may say, read in
one pass with shared typed readers (`_Section`, `_int`, `_duration`, `_net`) and checked
across sections at the end (`_cross_checks`); split by section, the cross-checks would
reach into every part.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from relay.errors import MISSING, ConfigError, PoolTooSmall
from relay.policies import ALIASED_MODES, FAMILY_MODES, POLICIES  # noqa: F401 - re-exported

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network

MAX_V4_POOL = 4096
MAX_V6_POOL = 4096
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,15}$")
TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$|^\d+(?:\.\d+)?$")
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True)
class SubscriberGroup:
    """Prefixes that may only arrive on the listed access interfaces."""

    interfaces: tuple[str, ...]
    v4: tuple[IPv4Net, ...]
    v6: tuple[IPv6Net, ...]


@dataclass(frozen=True)
class NptMapping:
    subscriber: IPv6Net
    alias: IPv6Net


@dataclass(frozen=True)
class Config:
    """A validated relay configuration. Build with `load()` or `from_dict()`."""

    table: str
    state_dir: Path
    policy: str
    egress_interfaces: tuple[str, ...]
    subscribers: tuple[SubscriberGroup, ...]
    alias_v4: tuple[ipaddress.IPv4Address, ...]
    alias_v4_nets: tuple[IPv4Net, ...]
    alias_v6_prefixes: tuple[IPv6Net, ...]
    v6_pool_size: int
    port_min: int
    port_max: int
    epoch_length: float
    key_file: Path | None
    npt_v4: str
    npt_map: tuple[NptMapping, ...]
    flows_per_subscriber: int
    v6_subscriber_prefix_len: int
    max_subscribers: int
    min_pool: int
    tcp_established: int
    udp_unreplied: int
    udp_replied: int
    mapping_log: bool
    retention: float
    allow_inbound: bool
    forward_other: str
    leak_guard: bool
    source: str = "<dict>"
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    # -- derived views -------------------------------------------------------------------
    @property
    def access_interfaces(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for g in self.subscribers:
            for i in g.interfaces:
                seen[i] = None
        return tuple(seen)

    @property
    def subscriber_v4(self) -> tuple[IPv4Net, ...]:
        return tuple(dict.fromkeys(n for g in self.subscribers for n in g.v4))

    @property
    def subscriber_v6(self) -> tuple[IPv6Net, ...]:
        return tuple(dict.fromkeys(n for g in self.subscribers for n in g.v6))

    @property
    def modes(self) -> tuple[str, str]:
        """(v4 mode, v6 mode): route | cgn | nptv6 | flow | epoch."""
        v4, v6 = FAMILY_MODES[self.policy]
        if self.policy == "nptv6":
            v4 = self.npt_v4
        return v4, v6

    @property
    def key_path(self) -> Path:
        return self.key_file if self.key_file is not None else self.state_dir / "epoch.key"


# ---------------------------------------------------------------------------------------
# small typed readers: each raises ConfigError naming the key


class _Section:
    """A TOML table being read; remembers which keys were consumed to reject unknown ones."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "(top level)", data, "expected a table")
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, default: Any = MISSING) -> Any:
        self.used.add(name)
        if name in self.data:
            return self.data[name]
        if default is MISSING:
            raise ConfigError(self.key(name), MISSING, "this key is required")
        return default

    def section(self, name: str) -> _Section:
        self.used.add(name)
        return _Section(self.data.get(name, {}), self.key(name))

    def finish(self, allowed: tuple[str, ...] | None = None) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            names = ", ".join(sorted(allowed or self.used))
            raise ConfigError(self.key(unknown[0]), self.data[unknown[0]],
                              f"unknown key; allowed keys here: {names}")


def _str(sec: _Section, name: str, default: Any = MISSING, choices: tuple[str, ...] = ()) -> str:
    v = sec.get(name, default)
    if not isinstance(v, str):
        raise ConfigError(sec.key(name), v, "expected a string"
                          + (f", one of: {', '.join(choices)}" if choices else ""))
    if choices and v not in choices:
        raise ConfigError(sec.key(name), v, f"expected one of: {', '.join(choices)}")
    return v


def _bool(sec: _Section, name: str, default: bool) -> bool:
    v = sec.get(name, default)
    if not isinstance(v, bool):
        raise ConfigError(sec.key(name), v, "expected true or false")
    return v


def _int(sec: _Section, name: str, default: Any, lo: int, hi: int) -> int:
    v = sec.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(sec.key(name), v, f"expected an integer from {lo} to {hi}")
    return v


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like "2s", "500ms", "5m", "2h4m", "1d"; None if bad."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.replace(" ", "")
        if DURATION_RE.match(text):
            return sum(float(n) * DURATION_UNITS[u or None] for n, u in DURATION_PART.findall(text))
    return None


def _duration(sec: _Section, name: str, default: Any, lo: float, hi: float) -> float:
    v = sec.get(name, default)
    d = parse_duration(v)
    if d is None or not lo <= d <= hi:
        raise ConfigError(sec.key(name), v, f"expected a duration from {lo:g} s to {hi:g} s "
                          "(a number of seconds or a string such as \"2s\", \"5m\", \"1h\")")
    return d


def _list(sec: _Section, name: str, default: Any = MISSING) -> list:
    v = sec.get(name, default)
    if not isinstance(v, list):
        raise ConfigError(sec.key(name), v, "expected a list")
    return v


def _ifname(key: str, v: Any) -> str:
    if not isinstance(v, str) or not IFNAME_RE.match(v):
        raise ConfigError(key, v, "expected an interface name (1-15 characters, no spaces)")
    return v


def _net(key: str, v: Any, want: str) -> IPv4Net | IPv6Net:
    """An address or prefix; `want` is "v4", "v6" or "any". Host bits must be zero."""
    if not isinstance(v, str):
        raise ConfigError(key, v, f"expected an IP{_fam(want)} prefix string")
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError:
        raise ConfigError(key, v, f"expected an IP{_fam(want)} address or prefix with host "
                          "bits zero (e.g. \"198.19.253.0/28\" or \"2001:2:0:a000::/52\")"
                          ) from None
    if want == "v4" and net.version != 4 or want == "v6" and net.version != 6:
        raise ConfigError(key, v, f"expected an IP{_fam(want)} prefix")
    return net


def _fam(want: str) -> str:
    return {"v4": "v4", "v6": "v6"}.get(want, "v4/IPv6")


# ---------------------------------------------------------------------------------------


def load(path: str | Path, state_dir: str | Path | None = None) -> Config:
    """Read and validate a TOML file. `state_dir` overrides relay.state_dir."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError("(file)", str(p), f"cannot read the config file: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("(file)", str(p), f"not valid TOML: {e}") from None
    return from_dict(data, source=str(p), state_dir=state_dir)


def from_dict(data: dict, source: str = "<dict>", state_dir: str | Path | None = None) -> Config:
    """Validate an already-parsed TOML document."""
    top = _Section(data, "")
    relay = top.section("relay")
    table = _str(relay, "table", "cfr")
    if not TABLE_RE.match(table):
        raise ConfigError("relay.table", table, "expected a name of letters, digits and _ "
                          "starting with a letter, at most 32 characters")
    if state_dir is not None:
        sd = Path(state_dir)
    else:
        sd = Path(_str(relay, "state_dir", "/var/lib/cfr"))
    if state_dir is not None:
        relay.get("state_dir", None)
    policy = _str(relay, "policy", MISSING, POLICIES)
    egress_raw = _list(relay, "egress_interfaces")
    if not egress_raw:
        raise ConfigError("relay.egress_interfaces", egress_raw, "expected at least one interface")
    egress = tuple(_ifname(f"relay.egress_interfaces[{i}]", v) for i, v in enumerate(egress_raw))
    relay.finish()

    groups = _subscribers(top, egress)
    pool_v4, pool_v4_nets, v6_prefixes, v6_pool, port_min, port_max = _alias(top)

    ep = top.section("epoch")
    epoch_length = _duration(ep, "length", 300, 0.5, 7 * 86400)
    kf = ep.get("key_file", None)
    if kf is not None and (not isinstance(kf, str) or not kf):
        raise ConfigError("epoch.key_file", kf, "expected a file path string")
    ep.finish()

    npt = top.section("nptv6")
    npt_v4 = _str(npt, "v4", "cgn", ("cgn", "route"))
    npt_map = _npt_map(npt)
    npt.finish()

    lim = top.section("limits")
    flows = _int(lim, "flows_per_subscriber", 1000, 1, 10_000_000)
    v6len = _int(lim, "v6_subscriber_prefix_len", 56, 32, 128)
    max_subs = _int(lim, "max_subscribers", 65535, 1, 16_777_216)
    min_pool = _int(lim, "min_pool", 2, 1, MAX_V4_POOL)
    lim.finish()

    to = top.section("timeouts")
    tcp_est = int(_duration(to, "tcp_established", 7440, 10, 5 * 86400))
    udp_unr = int(_duration(to, "udp_unreplied", 30, 1, 86400))
    udp_rep = int(_duration(to, "udp_replied", 180, 1, 86400))
    to.finish()

    ml = top.section("mapping_log")
    ml_on = _bool(ml, "enabled", True)
    retention = _duration(ml, "retention", 86400, 0.1, 400 * 86400)
    ml.finish()

    sf = top.section("safety")
    allow_inbound = _bool(sf, "allow_inbound", False)
    forward_other = _str(sf, "forward_other", "drop", ("drop", "accept"))
    leak_guard = _bool(sf, "leak_guard", True)
    sf.finish()

    top.finish(("relay", "subscribers", "alias", "epoch", "nptv6", "limits", "timeouts",
                "mapping_log", "safety"))

    cfg = Config(
        table=table, state_dir=sd, policy=policy, egress_interfaces=egress,
        subscribers=groups, alias_v4=pool_v4, alias_v4_nets=pool_v4_nets,
        alias_v6_prefixes=v6_prefixes, v6_pool_size=v6_pool, port_min=port_min,
        port_max=port_max, epoch_length=epoch_length,
        key_file=Path(kf) if kf else None, npt_v4=npt_v4, npt_map=npt_map,
        flows_per_subscriber=flows, v6_subscriber_prefix_len=v6len, max_subscribers=max_subs,
        min_pool=min_pool, tcp_established=tcp_est, udp_unreplied=udp_unr,
        udp_replied=udp_rep, mapping_log=ml_on, retention=retention,
        allow_inbound=allow_inbound, forward_other=forward_other, leak_guard=leak_guard,
        source=source, raw=data,
    )
    _cross_checks(cfg)
    return cfg


def _subscribers(top: _Section, egress: tuple[str, ...]) -> tuple[SubscriberGroup, ...]:
    raw = _list(top, "subscribers")
    if not raw:
        raise ConfigError("subscribers", raw, "expected at least one [[subscribers]] entry")
    groups = []
    for gi, g in enumerate(raw):
        sec = _Section(g, f"subscribers[{gi}]")
        ifs_raw = _list(sec, "interfaces")
        if not ifs_raw:
            raise ConfigError(sec.key("interfaces"), ifs_raw, "expected at least one interface")
        ifs = tuple(_ifname(f"{sec.key('interfaces')}[{i}]", v) for i, v in enumerate(ifs_raw))
        for i, name in enumerate(ifs):
            if name in egress:
                raise ConfigError(f"{sec.key('interfaces')}[{i}]", name,
                                  "an access interface cannot also be an egress interface")
        pfx_raw = _list(sec, "prefixes")
        if not pfx_raw:
            raise ConfigError(sec.key("prefixes"), pfx_raw, "expected at least one prefix")
        v4: list[IPv4Net] = []
        v6: list[IPv6Net] = []
        for i, v in enumerate(pfx_raw):
            n = _net(f"{sec.key('prefixes')}[{i}]", v, "any")
            (v4 if n.version == 4 else v6).append(n)  # type: ignore[arg-type]
        sec.finish()
        groups.append(SubscriberGroup(ifs, tuple(v4), tuple(v6)))
    return tuple(groups)


def _alias(top: _Section) -> tuple:
    sec = top.section("alias")
    addrs: list[ipaddress.IPv4Address] = []
    nets: list[IPv4Net] = []
    for i, v in enumerate(_list(sec, "v4", [])):
        n = _net(f"alias.v4[{i}]", v, "v4")
        nets.append(n)  # type: ignore[arg-type]
        addrs.extend(n)  # routed pool: every address, network and broadcast included
        if len(addrs) > MAX_V4_POOL:
            raise ConfigError(f"alias.v4[{i}]", v, f"the IPv4 pool may hold at most {MAX_V4_POOL} "
                              "addresses")
    if len(set(addrs)) != len(addrs):
        raise ConfigError("alias.v4", sec.data.get("v4"), "the pool entries overlap")
    v6p: list[IPv6Net] = []
    for i, v in enumerate(_list(sec, "v6_prefixes", [])):
        n = _net(f"alias.v6_prefixes[{i}]", v, "v6")
        if n.prefixlen > 120:
            raise ConfigError(f"alias.v6_prefixes[{i}]", v, "expected a prefix of length /120 "
                              "or shorter (aliases are drawn from its host bits)")
        v6p.append(n)  # type: ignore[arg-type]
    v6_pool = _int(sec, "v6_pool_size", 16, 1, MAX_V6_POOL)
    port_min = _int(sec, "port_min", 1024, 1, 65535)
    port_max = _int(sec, "port_max", 65535, 1, 65535)
    if port_max < port_min:
        raise ConfigError("alias.port_max", port_max, f"expected >= alias.port_min ({port_min})")
    sec.finish()
    return tuple(addrs), tuple(nets), tuple(v6p), v6_pool, port_min, port_max


def _npt_map(npt: _Section) -> tuple[NptMapping, ...]:
    out = []
    for i, m in enumerate(_list(npt, "map", [])):
        sec = _Section(m, f"nptv6.map[{i}]")
        s = _net(sec.key("subscriber"), sec.get("subscriber"), "v6")
        a = _net(sec.key("alias"), sec.get("alias"), "v6")
        if s.prefixlen != a.prefixlen:
            raise ConfigError(sec.key("alias"), str(a), f"expected the same length as the "
                              f"subscriber prefix (/{s.prefixlen}): NPTv6 maps prefixes 1:1")
        sec.finish()
        out.append(NptMapping(s, a))  # type: ignore[arg-type]
    return tuple(out)


def _overlaps(a: IPv4Net | IPv6Net, others: tuple) -> bool:
    return any(a.version == o.version and a.overlaps(o) for o in others)


def _check_ports(cfg: Config, key: str) -> None:
    """One subscriber alone must never be able to exhaust an alias's ports towards a
    destination: its flow limit has to stay below the port range of one alias."""
    ports = cfg.port_max - cfg.port_min + 1
    if cfg.flows_per_subscriber >= ports:
        raise PoolTooSmall(key, cfg.port_max,
                           f"the alias port range {cfg.port_min}-{cfg.port_max} holds {ports} "
                           f"ports, not more than limits.flows_per_subscriber = "
                           f"{cfg.flows_per_subscriber}: one subscriber could exhaust an alias "
                           f"towards a destination")


def _cross_checks(cfg: Config) -> None:
    """Checks spanning sections: overlaps and what the policy needs from the pools."""
    subs4, subs6 = cfg.subscriber_v4, cfg.subscriber_v6
    for i, n in enumerate(cfg.alias_v4_nets):
        if _overlaps(n, subs4):
            raise ConfigError(f"alias.v4[{i}]", str(n),
                              "the alias pool overlaps a subscriber prefix")
    for i, n in enumerate(cfg.alias_v6_prefixes):
        if _overlaps(n, subs6):
            raise ConfigError(f"alias.v6_prefixes[{i}]", str(n),
                              "the alias prefix overlaps a subscriber prefix")
    v4mode, v6mode = cfg.modes
    if v4mode != "route" and subs4:
        need = 1 if v4mode == "cgn" else cfg.min_pool
        if len(cfg.alias_v4) < need:
            raise PoolTooSmall("alias.v4", [str(n) for n in cfg.alias_v4_nets],
                               f"policy {cfg.policy} needs at least {need} IPv4 alias "
                               f"address(es) (limits.min_pool = {cfg.min_pool}), "
                               f"the pool has {len(cfg.alias_v4)}")
        _check_ports(cfg, "alias.port_max")
    if v6mode in ("flow", "epoch") and subs6:
        if not cfg.alias_v6_prefixes:
            raise PoolTooSmall("alias.v6_prefixes", [], f"policy {cfg.policy} needs at least one "
                               "IPv6 alias prefix")
        if cfg.v6_pool_size < cfg.min_pool:
            raise PoolTooSmall("alias.v6_pool_size", cfg.v6_pool_size,
                               f"policy {cfg.policy} needs at least limits.min_pool = "
                               f"{cfg.min_pool} IPv6 aliases")
        space = sum(2 ** (128 - p.prefixlen) - 1 for p in cfg.alias_v6_prefixes)
        if space < cfg.v6_pool_size:
            raise PoolTooSmall("alias.v6_pool_size", cfg.v6_pool_size,
                               f"the alias prefixes hold only {space} addresses")
        _check_ports(cfg, "alias.port_max")
    if v6mode == "nptv6" and subs6 and not cfg.npt_map:
        raise PoolTooSmall("nptv6.map", [], "policy nptv6 needs at least one "
                           "[[nptv6.map]] entry (subscriber prefix -> alias prefix)")
    # The mapping is checked whatever the policy, so switching to nptv6 later cannot
    # surface a latent error.
    for i, m in enumerate(cfg.npt_map):
        if not any(m.subscriber.subnet_of(s) for s in subs6
                   if s.prefixlen <= m.subscriber.prefixlen):
            raise ConfigError(f"nptv6.map[{i}].subscriber", str(m.subscriber),
                              "expected a prefix inside one of the subscriber prefixes")
        if _overlaps(m.alias, subs6):
            raise ConfigError(f"nptv6.map[{i}].alias", str(m.alias),
                              "the alias prefix overlaps a subscriber prefix")
        for j, o in enumerate(cfg.npt_map[:i]):
            if m.subscriber.overlaps(o.subscriber):
                raise ConfigError(f"nptv6.map[{i}].subscriber", str(m.subscriber),
                                  f"overlaps nptv6.map[{j}].subscriber")
            if m.alias.overlaps(o.alias):
                raise ConfigError(f"nptv6.map[{i}].alias", str(m.alias),
                                  f"overlaps nptv6.map[{j}].alias: the mapping must be 1:1")
