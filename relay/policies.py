"""Source-aliasing policies: the SNAT rules of the `alias_v4` / `alias_v6` chains.

Per family, a policy reduces to a *mode*:

| mode    | alias choice (first packet of a flow)                | ports                      |
|---------|------------------------------------------------------|----------------------------|
| route   | none: the subscriber address goes upstream            | unchanged                  |
| cgn     | jhash(subscriber) with a fixed secret seed: paired    | preserved where possible   |
|         | pooling, one stable external address per subscriber   | (RFC 4787 as far as Linux) |
| nptv6   | subscriber prefix -> alias prefix, stable 1:1         | unchanged                  |
| flow    | numgen random: every new flow draws from the pool     | fully random               |
| epoch   | jhash(subscriber key) with a per-epoch seed: one      | fully random               |
|         | alias per subscriber per epoch                        |                            |

The subscriber key for IPv6 hashing is the address masked to
`limits.v6_subscriber_prefix_len` (default /56, the delegated prefix), so a subscriber's
temporary addresses (RFC 8981) share one alias within an epoch instead of each looking like
a new subscriber. Conntrack pins the alias of every established flow, so replacing these
rules (epoch rotation, reload) never moves a live flow.

This module owns the list of policies (`POLICY_TABLE`, and `POLICIES` / `FAMILY_MODES` derived
from it): the relay's config and the testbed's scenario and relay deployment import it from
here, and so should anything else that names policies. Adding a policy means one row in
`POLICY_TABLE`, plus its rules below if its mode is new.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay import epoch as ep
from relay.nftjson import Expr, match, meta, net, payload

if TYPE_CHECKING:  # relay.config imports the policy list from here: no import cycle at run time
    from relay.config import Config


@dataclass(frozen=True)
class Policy:
    """One source-aliasing policy: its name and the mode it runs per address family."""

    name: str
    v4_mode: str
    v6_mode: str
    summary: str


#: Every policy the relay implements, in the order tables and reports list them.
POLICY_TABLE: tuple[Policy, ...] = (
    Policy("route", "route", "route", "forwarded unchanged (the plain-routing baseline)"),
    Policy("cgn", "cgn", "route", "carrier-grade NAT for IPv4, IPv6 routed"),
    # nptv6's v4 part is configurable: nptv6.v4 = "cgn" | "route" (relay.config)
    Policy("nptv6", "cgn", "nptv6", "stable 1:1 IPv6 prefix translation, CGN for IPv4"),
    Policy("cfr-flow", "flow", "flow", "CFR: a fresh random alias for every new flow"),
    Policy("cfr-epoch", "epoch", "epoch", "CFR: one alias per subscriber per epoch"),
)
POLICIES: tuple[str, ...] = tuple(p.name for p in POLICY_TABLE)
#: What each policy does per address family. "route" = forwarded unchanged.
FAMILY_MODES: dict[str, tuple[str, str]] = {p.name: (p.v4_mode, p.v6_mode)
                                            for p in POLICY_TABLE}
#: The modes that put an alias (not the subscriber's own address) upstream.
ALIASED_MODES: tuple[str, ...] = ("cgn", "nptv6", "flow", "epoch")
#: The CFR's own policies (per-flow or per-epoch aliasing from a shared pool).
CFR_POLICIES: tuple[str, ...] = tuple(p.name for p in POLICY_TABLE
                                      if p.v4_mode in ("flow", "epoch"))

V4_POLICY_FAMILY = "ip"
V6_POLICY_FAMILY = "ip6"


@dataclass(frozen=True)
class EpochPlan:
    """Everything that changes at an epoch boundary."""

    epoch: int
    seed: int
    cgn_seed: int
    v4_pool: tuple[ipaddress.IPv4Address, ...]
    v6_pool: tuple[ipaddress.IPv6Address, ...]


def plan(cfg: Config, key: bytes, epoch: int) -> EpochPlan:
    v6: tuple[ipaddress.IPv6Address, ...] = ()
    if cfg.modes[1] in ("flow", "epoch") and cfg.alias_v6_prefixes:
        v6 = tuple(ep.v6_aliases(key, epoch, cfg.alias_v6_prefixes, cfg.v6_pool_size))
    return EpochPlan(epoch=epoch, seed=ep.epoch_seed(key, epoch), cgn_seed=ep.cgn_seed(key),
                     v4_pool=cfg.alias_v4, v6_pool=v6)


def v6_key_expr(cfg: Config) -> Expr:
    """ip6 saddr masked to the subscriber prefix length (flow limit and epoch hashing key)."""
    sa = payload("ip6", "saddr")
    if cfg.v6_subscriber_prefix_len >= 128:
        return sa
    mask = ipaddress.IPv6Network(("::", cfg.v6_subscriber_prefix_len)).netmask
    return {"&": [sa, str(mask)]}


def _map(selector: Expr, pool: tuple) -> Expr:
    return {"map": {"key": selector, "data": {"set": [[i, str(a)] for i, a in enumerate(pool)]}}}


def _snat(family: str, addr: Expr, ports: tuple[int, int] | None, flags: list[str]) -> Expr:
    body: dict = {"family": family, "addr": addr}
    if ports is not None:
        body["port"] = {"range": list(ports)}
    if flags:
        body["flags"] = flags[0] if len(flags) == 1 else flags
    return {"snat": body}


def _pool_rules(family: str, selector: Expr, pool: tuple, ports: tuple[int, int],
                flags: list[str]) -> list[list[Expr]]:
    """Two rules: TCP/UDP with the port range, everything else (ICMP ids) without."""
    addr = _map(selector, pool)
    return [
        [match(meta("l4proto"), {"set": ["tcp", "udp"]}), _snat(family, addr, ports, flags)],
        [_snat(family, addr, None, [f for f in flags if f != "fully-random"])],
    ]


def alias_v4_rules(cfg: Config, p: EpochPlan) -> list[list[Expr]]:
    mode = cfg.modes[0]
    if mode == "route" or not cfg.subscriber_v4:
        return []
    ports = (cfg.port_min, cfg.port_max)
    n = len(p.v4_pool)
    sa = payload("ip", "saddr")
    if mode == "cgn":
        sel = {"jhash": {"expr": sa, "mod": n, "seed": p.cgn_seed}}
        return _pool_rules(V4_POLICY_FAMILY, sel, p.v4_pool, ports, [])
    if mode == "flow":
        sel = {"numgen": {"mode": "random", "mod": n, "offset": 0}}
        return _pool_rules(V4_POLICY_FAMILY, sel, p.v4_pool, ports, ["fully-random"])
    if mode == "epoch":
        sel = {"jhash": {"expr": sa, "mod": n, "seed": p.seed}}
        return _pool_rules(V4_POLICY_FAMILY, sel, p.v4_pool, ports, ["fully-random"])
    raise AssertionError(mode)


def alias_v6_rules(cfg: Config, p: EpochPlan) -> list[list[Expr]]:
    mode = cfg.modes[1]
    if mode == "route" or not cfg.subscriber_v6:
        return []
    ports = (cfg.port_min, cfg.port_max)
    if mode == "nptv6":
        return [[match(payload("ip6", "saddr"), net(m.subscriber)),
                 {"snat": {"family": V6_POLICY_FAMILY, "addr": net(m.alias),
                           "flags": "netmap", "type_flags": "prefix"}}]
                for m in cfg.npt_map]
    n = len(p.v6_pool)
    if mode == "flow":
        sel = {"numgen": {"mode": "random", "mod": n, "offset": 0}}
        return _pool_rules(V6_POLICY_FAMILY, sel, p.v6_pool, ports, ["fully-random"])
    if mode == "epoch":
        sel = {"jhash": {"expr": v6_key_expr(cfg), "mod": n, "seed": p.seed}}
        return _pool_rules(V6_POLICY_FAMILY, sel, p.v6_pool, ports, ["fully-random"])
    raise AssertionError(mode)
