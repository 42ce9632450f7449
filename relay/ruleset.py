"""The relay's whole nftables ruleset, as one JSON transaction.

The relay owns exactly one table (`inet <relay.table>`). Its *structure* (chains, sets,
named counters) is the same for every policy; only rules and static set elements differ.
So applying is idempotent and never disruptive:

* `add` of table/chain/set/counter is a no-op when it already exists, so named counters keep
  their values and the dynamic flow-limit sets keep tracking live flows;
* every chain is flushed and refilled, every static set flushed and refilled, in the same
  transaction, so packets see either the old or the new ruleset, never a mix;
* conntrack is never flushed: established flows keep their NAT binding whatever the rules.

Packet path (hook, priority):

  prerouting -300  `prerouting_raw`  anti-spoofing *before* conntrack, so spoofed packets
                                      cannot even create state (fib reverse-path + the
                                      per-interface subscriber set)
  forward      0   `forward_filter`  new flows only from subscribers towards egress; per-
                                      subscriber concurrent-flow limit (ct count); scoped
                                      conntrack timeouts; no unsolicited inbound
  postrouting 100  `postrouting_nat` SNAT by policy (`alias_v4` / `alias_v6` chains)
  postrouting 110  `postrouting_guard` last line of defence: nothing leaves the egress with
                                      a subscriber address in the source or inside a
                                      quoted ICMP header (aliased families only; per
                                      family in `guard_v4` / `guard_v6`)
"""

from __future__ import annotations

import ipaddress
from typing import Any

from relay.config import ALIASED_MODES, Config
from relay.nftjson import (
    Expr,
    add,
    anon_set,
    counter,
    ct,
    flush,
    int_range,
    match,
    meta,
    net,
    payload,
    raw_payload,
    verdict,
)
from relay.policies import EpochPlan, alias_v4_rules, alias_v6_rules, v6_key_expr

FAMILY = "inet"

# Named counters: the reasons a packet is dropped, plus admitted new flows.
DROP_COUNTERS = {
    "drop_spoofed": "source fails the reverse-path check on its access interface, or a "
                    "subscriber source arrives from upstream",
    "drop_not_subscriber": "source routed via the access interface but not a subscriber "
                           "prefix configured for it",
    "drop_invalid": "conntrack state invalid (e.g. an ICMP error quoting no known flow)",
    "drop_flow_limit": "subscriber already has limits.flows_per_subscriber tracked flows",
    "drop_not_egress": "subscriber flow towards an interface that is not egress/routed",
    "drop_unsolicited": "new inbound flow towards a subscriber or an alias address",
    "drop_nptv6_unmapped": "policy nptv6 and the subscriber prefix has no [[nptv6.map]]",
    "drop_leak_guard": "packet would have left with a subscriber address (outer source or "
                       "ICMP-quoted header)",
    "drop_other": "forwarded traffic that is neither from nor to a subscriber",
}
INFO_COUNTERS = {
    "new_flows_v4": "new IPv4 flows admitted from subscribers",
    "new_flows_v6": "new IPv6 flows admitted from subscribers",
}
COUNTERS = {**DROP_COUNTERS, **INFO_COUNTERS}

BASE_CHAINS = {
    # name: (type, hook, priority)
    "prerouting_raw": ("filter", "prerouting", -300),
    "forward_filter": ("filter", "forward", 0),
    "postrouting_nat": ("nat", "postrouting", 100),
    "postrouting_guard": ("filter", "postrouting", 110),
}
REGULAR_CHAINS = ("from_access_raw", "from_access", "to_access", "alias_v4", "alias_v6",
                  "guard_v4", "guard_v6")
ALIAS_CHAINS = ("alias_v4", "alias_v6")

ICMP4_ERRORS = ["destination-unreachable", "source-quench", "redirect", "time-exceeded",
                "parameter-problem"]
ND_TYPES = ["nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert",
            "nd-redirect"]
ICMP6_ERRORS = ["destination-unreachable", "packet-too-big", "time-exceeded",
                "parameter-problem"]


def _static_sets(cfg: Config) -> dict[str, tuple[Any, list[str], list]]:
    """name -> (type, flags, elements)."""
    sub4: list = []
    sub6: list = []
    for ifname in cfg.access_interfaces:
        n4 = [n for g in cfg.subscribers if ifname in g.interfaces for n in g.v4]
        n6 = [n for g in cfg.subscribers if ifname in g.interfaces for n in g.v6]
        sub4 += [{"concat": [ifname, net(n)]} for n in ipaddress.collapse_addresses(n4)]
        sub6 += [{"concat": [ifname, net(n)]} for n in ipaddress.collapse_addresses(n6)]
    npt_alias = [m.alias for m in cfg.npt_map] if cfg.modes[1] == "nptv6" else []
    return {
        "access_ifs": ("ifname", [], list(cfg.access_interfaces)),
        "egress_ifs": ("ifname", [], list(cfg.egress_interfaces)),
        "subscribers_v4": (["ifname", "ipv4_addr"], ["interval"], sub4),
        "subscribers_v6": (["ifname", "ipv6_addr"], ["interval"], sub6),
        "subnets_v4": ("ipv4_addr", ["interval"],
                       [net(n) for n in ipaddress.collapse_addresses(cfg.subscriber_v4)]),
        "subnets_v6": ("ipv6_addr", ["interval"],
                       [net(n) for n in ipaddress.collapse_addresses(cfg.subscriber_v6)]),
        "alias_nets_v4": ("ipv4_addr", ["interval"],
                          [net(n) for n in ipaddress.collapse_addresses(cfg.alias_v4_nets)]),
        "alias_nets_v6": ("ipv6_addr", ["interval"],
                          [net(n) for n in ipaddress.collapse_addresses(
                              list(cfg.alias_v6_prefixes) + npt_alias)]),
        "npt_mapped": ("ipv6_addr", ["interval"],
                       [net(n) for n in ipaddress.collapse_addresses(
                           [m.subscriber for m in cfg.npt_map])]),
    }


DYNAMIC_SETS = {"flowlimit_v4": "ipv4_addr", "flowlimit_v6": "ipv6_addr"}


def timeout_objects(cfg: Config) -> dict[str, dict]:
    """Scoped conntrack timeouts, named after their values: kernel timeout objects cannot be
    changed in place, so a new value gets a new object and the old one is removed once no
    rule uses it."""
    objs = {}
    for l3, fam in (("ip", "v4"), ("ip6", "v6")):
        objs[f"tcp_{fam}_{cfg.tcp_established}"] = {
            "protocol": "tcp", "l3proto": l3, "policy": {"established": cfg.tcp_established}}
        objs[f"udp_{fam}_{cfg.udp_unreplied}_{cfg.udp_replied}"] = {
            "protocol": "udp", "l3proto": l3,
            "policy": {"unreplied": cfg.udp_unreplied, "replied": cfg.udp_replied}}
    return objs


def timeout_prelude(cfg: Config, existing: frozenset[str] = frozenset()) -> str:
    """nft *text* that creates the missing ct timeout objects.

    nftables 1.0.6's JSON parser drops the l3proto and policy of ct timeout objects (the
    kernel would get an empty policy), so these objects alone are created with the text
    syntax, before the JSON transaction that references them. Creating an unused object is
    harmless, and `add` leaves an existing one alone.
    """
    lines = []
    for name, obj in timeout_objects(cfg).items():
        if name in existing:
            continue
        pol = ", ".join(f"{k}: {v}" for k, v in obj["policy"].items())
        lines.append(f"add ct timeout {FAMILY} {cfg.table} {name} {{ protocol {obj['protocol']}; "
                     f"l3proto {obj['l3proto']}; policy = {{ {pol} }}; }}")
    if not lines:
        return ""
    return f"add table {FAMILY} {cfg.table}\n" + "\n".join(lines) + "\n"


class Builder:
    """Accumulates one transaction for table `cfg.table`."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.cmds: list[dict] = []

    def ref(self, **kw: Any) -> dict:
        return {"family": FAMILY, "table": self.cfg.table, **kw}

    def rule(self, chain: str, *expr: Expr, comment: str | None = None) -> None:
        body = self.ref(chain=chain, expr=list(expr))
        if comment:
            body["comment"] = comment
        self.cmds.append(add("rule", body))


def full_ruleset(cfg: Config, p: EpochPlan, existing_sets: frozenset[str] = frozenset()) -> dict:
    """The complete apply transaction.

    `existing_sets` names sets already in the kernel table: the dynamic flow-limit sets are
    then not re-added (nft 1.0.6 would report EEXIST because the kernel marked them
    dynamic), and above all they are never flushed, so live flows stay counted.
    """
    b = Builder(cfg)
    b.cmds.append(add("table", {"family": FAMILY, "name": cfg.table}))
    for name in COUNTERS:
        b.cmds.append(add("counter", b.ref(name=name)))
    static = _static_sets(cfg)
    for name, (typ, flags, _elems) in static.items():
        body = b.ref(name=name, type=typ)
        if flags:
            body["flags"] = flags
        b.cmds.append(add("set", body))
    for name, typ in DYNAMIC_SETS.items():
        if name in existing_sets:
            continue
        # nft 1.0.6's JSON parser does not know the "dynamic" flag; it marks the set dynamic
        # itself because a rule updates it from the packet path.
        b.cmds.append(add("set", b.ref(name=name, type=typ, size=cfg.max_subscribers)))
    for name, (typ, hook, prio) in BASE_CHAINS.items():
        b.cmds.append(add("chain", b.ref(name=name, type=typ, hook=hook, prio=prio,
                                         policy="accept")))
    for name in REGULAR_CHAINS:
        b.cmds.append(add("chain", b.ref(name=name)))
    for name in list(BASE_CHAINS) + list(REGULAR_CHAINS):
        b.cmds.append(flush("chain", b.ref(name=name)))
    for name, (_t, _f, elems) in static.items():
        b.cmds.append(flush("set", b.ref(name=name)))
        if elems:
            b.cmds.append(add("element", b.ref(name=name, elem=elems)))
    _prerouting(b)
    _forward(b)
    _nat(b, p)
    _guard(b)
    return {"nftables": b.cmds}


def rotation(cfg: Config, p: EpochPlan) -> dict:
    """The epoch-rotation transaction: only the two alias chains are replaced."""
    b = Builder(cfg)
    for name in ALIAS_CHAINS:
        b.cmds.append(flush("chain", b.ref(name=name)))
    _alias_chains(b, p)
    return {"nftables": b.cmds}


# ---------------------------------------------------------------------------------------


def _prerouting(b: Builder) -> None:
    cfg = b.cfg
    b.rule("prerouting_raw", match(meta("iifname"), "@access_ifs"),
           verdict("jump", "from_access_raw"))
    if cfg.subscriber_v4:
        b.rule("prerouting_raw", match(meta("iifname"), "@egress_ifs"),
               match(payload("ip", "saddr"), "@subnets_v4"), counter("drop_spoofed"),
               verdict("drop"))
    if cfg.subscriber_v6:
        b.rule("prerouting_raw", match(meta("iifname"), "@egress_ifs"),
               match(payload("ip6", "saddr"), "@subnets_v6"), counter("drop_spoofed"),
               verdict("drop"))
    c = "from_access_raw"
    # Link-local traffic (ND, RS, MLD) and DAD/DHCP from unconfigured hosts is for this
    # router only; the kernel never forwards it, and the rpf check would wrongly drop it.
    b.rule(c, match(payload("ip6", "saddr"), {"prefix": {"addr": "fe80::", "len": 10}}),
           verdict("accept"))
    b.rule(c, match(payload("ip6", "saddr"), "::"),
           match(payload("ip6", "daddr"), {"prefix": {"addr": "ff02::", "len": 16}}),
           verdict("accept"))
    b.rule(c, match(payload("ip", "saddr"), "0.0.0.0"), match(payload("udp", "dport"), 67),
           verdict("accept"))
    # Neighbour discovery may use the host's global link address as source (a CPE's WAN
    # address is usually not a subscriber prefix); hop limit 255 proves it is on-link.
    b.rule(c, match(payload("icmpv6", "type"), anon_set(ND_TYPES)),
           match(payload("ip6", "hoplimit"), 255), verdict("accept"))
    b.rule(c, match({"fib": {"result": "oif", "flags": ["saddr", "iif"]}}, False),
           counter("drop_spoofed"), verdict("drop"))
    if cfg.subscriber_v4:
        b.rule(c, match({"concat": [meta("iifname"), payload("ip", "saddr")]},
                        "@subscribers_v4"), verdict("accept"))
    if cfg.subscriber_v6:
        b.rule(c, match({"concat": [meta("iifname"), payload("ip6", "saddr")]},
                        "@subscribers_v6"), verdict("accept"))
    # Traffic for the router itself from a correctly routed link address is not the relay's
    # business (its input firewall's); only forwarding is restricted to subscribers.
    b.rule(c, match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
           verdict("accept"))
    b.rule(c, counter("drop_not_subscriber"), verdict("drop"))


def _forward(b: Builder) -> None:
    cfg = b.cfg
    f = "forward_filter"
    b.rule(f, match(meta("iifname"), "@access_ifs"), verdict("jump", "from_access"))
    b.rule(f, match(meta("oifname"), "@access_ifs"), verdict("jump", "to_access"))
    if cfg.alias_v4_nets:
        b.rule(f, match(payload("ip", "daddr"), "@alias_nets_v4"),
               counter("drop_unsolicited"), verdict("drop"))
    if cfg.alias_v6_prefixes or (cfg.modes[1] == "nptv6" and cfg.npt_map):
        b.rule(f, match(payload("ip6", "daddr"), "@alias_nets_v6"),
               counter("drop_unsolicited"), verdict("drop"))
    if cfg.forward_other == "drop":
        b.rule(f, counter("drop_other"), verdict("drop"))

    a = "from_access"
    b.rule(a, match(ct("state"), ["established", "related"], "in"), verdict("accept"))
    b.rule(a, match(ct("state"), "invalid", "in"), counter("drop_invalid"), verdict("drop"))
    b.rule(a, match(meta("oifname"), "@egress_ifs", "!="), counter("drop_not_egress"),
           verdict("drop"))
    limit = cfg.flows_per_subscriber
    b.rule(a, match(meta("nfproto"), "ipv4"),
           {"set": {"op": "add", "elem": payload("ip", "saddr"), "set": "@flowlimit_v4",
                    "stmt": [{"ct count": {"val": limit, "inv": True}}]}},
           counter("drop_flow_limit"), verdict("drop"))
    b.rule(a, match(meta("nfproto"), "ipv6"),
           {"set": {"op": "add", "elem": v6_key_expr(cfg), "set": "@flowlimit_v6",
                    "stmt": [{"ct count": {"val": limit, "inv": True}}]}},
           counter("drop_flow_limit"), verdict("drop"))
    if cfg.modes[1] == "nptv6" and cfg.subscriber_v6:
        b.rule(a, match(payload("ip6", "saddr"), "@npt_mapped", "!="),
               counter("drop_nptv6_unmapped"), verdict("drop"))
    # ct timeout only works on a not-yet-confirmed conntrack entry: this chain is after
    # conntrack (-200) and before confirmation, exactly where it takes effect.
    for name, obj in timeout_objects(cfg).items():
        nfproto = "ipv4" if obj["l3proto"] == "ip" else "ipv6"
        b.rule(a, match(meta("nfproto"), nfproto), match(meta("l4proto"), obj["protocol"]),
               {"ct timeout": name})
    b.rule(a, match(meta("nfproto"), "ipv4"), counter("new_flows_v4"), verdict("accept"))
    b.rule(a, match(meta("nfproto"), "ipv6"), counter("new_flows_v6"), verdict("accept"))

    t = "to_access"
    b.rule(t, match(ct("state"), ["established", "related"], "in"), verdict("accept"))
    b.rule(t, match(ct("state"), "invalid", "in"), counter("drop_invalid"), verdict("drop"))
    if cfg.allow_inbound:
        b.rule(t, verdict("accept"))
    else:
        b.rule(t, counter("drop_unsolicited"), verdict("drop"))


def _nat(b: Builder, p: EpochPlan) -> None:
    cfg = b.cfg
    n = "postrouting_nat"
    b.rule(n, match(meta("oifname"), "@egress_ifs", "!="), verdict("return"))
    v4, v6 = cfg.modes
    if v4 in ALIASED_MODES and cfg.subscriber_v4:
        b.rule(n, match(payload("ip", "saddr"), "@subnets_v4"), verdict("jump", "alias_v4"))
    if v6 in ALIASED_MODES and cfg.subscriber_v6:
        b.rule(n, match(payload("ip6", "saddr"), "@subnets_v6"), verdict("jump", "alias_v6"))
    _alias_chains(b, p)


def _alias_chains(b: Builder, p: EpochPlan) -> None:
    for exprs in alias_v4_rules(b.cfg, p):
        b.rule("alias_v4", *exprs)
    for exprs in alias_v6_rules(b.cfg, p):
        b.rule("alias_v6", *exprs)


def _guard(b: Builder) -> None:
    cfg = b.cfg
    if not cfg.leak_guard:
        return
    g = "postrouting_guard"
    v4, v6 = cfg.modes
    guard4 = v4 in ALIASED_MODES and bool(cfg.subscriber_v4)
    guard6 = v6 in ALIASED_MODES and bool(cfg.subscriber_v6)
    if not (guard4 or guard6):
        return
    # Every forwarded packet crosses this chain, so it is laid out for the common case.
    # A TCP/UDP packet whose conntrack entry carries a source-NAT binding has just been
    # rewritten by the NAT hook (priority 100, before this one): its source is an alias,
    # and TCP/UDP quote no headers. Two compares let it go; without them every packet
    # paid two set lookups, measurable at 10 Gbit/s. ICMP (the quoted-header case) and
    # anything untranslated still get the full checks below.
    for proto in ("tcp", "udp"):
        b.rule(g, match(ct("status"), "snat", "in"), match(meta("l4proto"), proto),
               verdict("accept"))
    b.rule(g, match(meta("oifname"), "@egress_ifs", "!="), verdict("return"))
    vmap = []
    if guard4:
        vmap.append(["ipv4", verdict("jump", "guard_v4")])
    if guard6:
        vmap.append(["ipv6", verdict("jump", "guard_v6")])
    b.rule(g, {"vmap": {"key": meta("nfproto"), "data": {"set": vmap}}})
    if guard4:
        c = "guard_v4"
        b.rule(c, match(payload("ip", "saddr"), "@subnets_v4"), counter("drop_leak_guard"),
               verdict("drop"))
        b.rule(c, match(meta("l4proto"), "icmp", "!="), verdict("return"))
        b.rule(c, match(payload("icmp", "type"), anon_set(ICMP4_ERRORS), "!="),
               verdict("return"))
        ranges = anon_set([int_range(n) for n in ipaddress.collapse_addresses(cfg.subscriber_v4)])
        # ICMP error: 8-byte ICMP header, then the quoted IPv4 header (src at +12, dst at +16).
        for offset in (160, 192):
            b.rule(c, match(raw_payload("th", offset, 32), ranges),
                   counter("drop_leak_guard"), verdict("drop"))
    if guard6:
        c = "guard_v6"
        b.rule(c, match(payload("ip6", "saddr"), "@subnets_v6"), counter("drop_leak_guard"),
               verdict("drop"))
        b.rule(c, match(meta("l4proto"), "ipv6-icmp", "!="), verdict("return"))
        b.rule(c, match(payload("icmpv6", "type"), anon_set(ICMP6_ERRORS), "!="),
               verdict("return"))
        ranges = anon_set([int_range(n) for n in ipaddress.collapse_addresses(cfg.subscriber_v6)])
        # ICMPv6 error: 8-byte header, then the quoted IPv6 header (src at +8, dst at +24).
        for offset in (128, 256):
            b.rule(c, match(raw_payload("th", offset, 128), ranges),
                   counter("drop_leak_guard"), verdict("drop"))
