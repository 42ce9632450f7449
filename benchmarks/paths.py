"""The one table of benchmark paths: every fact about a path lives in its row here.

A *path* is how the client reaches the front door (plain routing, through the relay under a
policy, through one or two off-path proxies) over one address family. A *policy* is what the
relay does (owned by `relay.policies`, imported, never redefined). Every module that needs a
fact about a path reads this table: the definition loader (names, which tools a path can
carry, families), the environment (policy to switch to, proxy hops to start, address family
to target), the tools (family, proxied or not), the leak check (paths of a policy), the
analysis and plots (order, baseline per family, label, colour), the records (valid names).

Why a table: a path used to be bare strings in a dozen files (`path in ("proxy",
"proxy-chain")` in four places of the environment alone), so adding one meant an hour of
search. Now adding a path means one row here (and its IPv6 twin); see benchmarks/README.md
"Adding a path".

IPv4/IPv6 parity (the draft's requirement): every IPv4 path has an IPv6 twin that differs only
in `family`; `base` names the IPv4 twin, so definitions list base names and say which
families to measure (`[scenario] family = "ipv4" | "ipv6" | "dual"`, or `cfrbench run
--family`), and comparisons pair paths of one family only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from relay.policies import FAMILY_MODES, POLICIES

Family = int  # 4 or 6


@dataclass(frozen=True)
class BenchPath:
    """One benchmark path.

    `proxy_hops`: off-path CONNECT proxies the client's connection crosses (0: on-path; the
    environment starts that many chained tinyproxy instances on the topology's relay
    providers). `cannot_carry`: tools of benchmarks.registry that cannot run over it (ICMP
    and UDP do not cross a CONNECT proxy; a proxied path does not cross the relay).
    `base`: the IPv4 twin's name (the path itself for an IPv4 path)."""

    name: str
    description: str
    policy: str
    proxy_hops: int
    family: Family
    label: str
    colour: str
    base: str
    cannot_carry: tuple[str, ...] = ()

    @property
    def proxied(self) -> bool:
        return self.proxy_hops > 0


#: Tools a CONNECT proxy cannot carry: ICMP and UDP are not TCP, and the relay node's own
#: forwarding cost needs a path that crosses the relay.
_NOT_THROUGH_PROXY = ("icmp_rtt", "iperf3_udp", "forwarding_cost")

#: Every path, IPv4 first then their IPv6 twins in the same order (the order of tables and
#: plots). The IPv6 twins are the proof that a path is data: adding them touched this table
#: and the definitions' family keys only.
PATH_TABLE: tuple[BenchPath, ...] = (
    BenchPath("direct", "plain routing on the access path (route policy), no relay",
              "route", 0, 4, "direct", "#4d4d4d", "direct"),
    BenchPath("cfr-flow", "Customer-Facing Relay, alias chosen per flow",
              "cfr-flow", 0, 4, "CFR per flow", "#1b9e77", "cfr-flow"),
    BenchPath("cfr-epoch", "Customer-Facing Relay, alias stable within a privacy epoch",
              "cfr-epoch", 0, 4, "CFR per epoch", "#66a61e", "cfr-epoch"),
    BenchPath("cgn", "carrier-grade NAT44 with paired pooling (RFC 4787/6888), the draft's "
              "baseline", "cgn", 0, 4, "CGN", "#7570b3", "cgn"),
    BenchPath("proxy", "single off-path HTTP CONNECT forward proxy reached via a detour",
              "route", 1, 4, "proxy", "#d95f02", "proxy", _NOT_THROUGH_PROXY),
    BenchPath("proxy-chain", "two chained off-path CONNECT proxies",
              "route", 2, 4, "proxy chain", "#e7298a", "proxy-chain", _NOT_THROUGH_PROXY),
    # IPv6 twins: same policy and hops, family 6, their own colour (a darker shade).
    BenchPath("direct6", "plain routing over IPv6 (route policy), no relay",
              "route", 0, 6, "direct v6", "#000000", "direct"),
    BenchPath("cfr-flow6", "Customer-Facing Relay over IPv6, alias chosen per flow",
              "cfr-flow", 0, 6, "CFR per flow v6", "#0e5e47", "cfr-flow"),
    BenchPath("cfr-epoch6", "Customer-Facing Relay over IPv6, alias stable within an epoch",
              "cfr-epoch", 0, 6, "CFR per epoch v6", "#3b6411", "cfr-epoch"),
    # What a CGN ISP does for IPv6: it routes it (relay.policies: cgn's IPv6 mode is
    # `route`), so cgn6 measures the CGN deployment's IPv6 path, subscriber address upstream.
    BenchPath("cgn6", "the CGN deployment's IPv6 path: routed, no translation (cgn's v6 mode)",
              "cgn", 0, 6, "CGN v6 (routed)", "#45417a", "cgn"),
    BenchPath("proxy6", "single off-path CONNECT proxy over IPv6, reached via a detour",
              "route", 1, 6, "proxy v6", "#8a3c01", "proxy", _NOT_THROUGH_PROXY),
    BenchPath("proxy-chain6", "two chained CONNECT proxies over IPv6 (proxy-to-proxy hop IPv4)",
              "route", 2, 6, "proxy chain v6", "#99165a", "proxy-chain", _NOT_THROUGH_PROXY),
)

PATHS: dict[str, BenchPath] = {p.name: p for p in PATH_TABLE}
NAMES: tuple[str, ...] = tuple(PATHS)
#: The path every other path of its family is compared with (its IPv4 name).
BASELINE = "direct"
FAMILIES: tuple[Family, ...] = (4, 6)
#: The definitions' `[scenario] family` values and the families each measures.
FAMILY_SETS: dict[str, tuple[Family, ...]] = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}
#: `cfrbench run --family` values and the `[scenario] family` each stands for.
FAMILY_OPTIONS: dict[str, str] = {"4": "ipv4", "6": "ipv6", "both": "dual"}


class UnknownPathError(KeyError):
    """A name that is not a row of the path table (the message lists the rows)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown benchmark path {name!r}; allowed: {', '.join(NAMES)}")


def get(name: str) -> BenchPath:
    """The row of `name` (UnknownPathError naming the allowed paths otherwise)."""
    try:
        return PATHS[name]
    except KeyError:
        raise UnknownPathError(name) from None


def family_of(name: str) -> Family:
    return get(name).family


def policy_of(name: str) -> str:
    """The relay policy (relay.policies) the relay runs while `name` is measured."""
    return get(name).policy


def relay_mode(name: str) -> str:
    """What the relay does to this path's packets: its policy's mode for its family
    (relay.policies.FAMILY_MODES; e.g. cgn6 -> "route")."""
    p = get(name)
    return FAMILY_MODES[p.policy][0 if p.family == 4 else 1]


def is_proxied(name: str) -> bool:
    return get(name).proxied


def carries(name: str, tool: str) -> bool:
    """Whether `tool` can run over path `name`."""
    return tool not in get(name).cannot_carry


def base_of(name: str) -> str:
    """The IPv4 twin's name."""
    return get(name).base


def twin(name: str, family: Family) -> str:
    """The path like `name` in `family` (itself if already of that family)."""
    base = base_of(name)
    for p in PATH_TABLE:
        if p.base == base and p.family == family:
            return p.name
    raise UnknownPathError(f"{base} over IPv{family}")


def of_families(families: Iterable[Family]) -> tuple[str, ...]:
    """Every path of these families, in table order."""
    wanted = set(families)
    return tuple(p.name for p in PATH_TABLE if p.family in wanted)


def paths_of_policy(policy: str, family: Family | None = None) -> tuple[str, ...]:
    """The paths that run under relay policy `policy` (of one family if given), table order."""
    return tuple(p.name for p in PATH_TABLE
                 if p.policy == policy and (family is None or p.family == family))


def not_carrying(tool: str) -> tuple[str, ...]:
    """The paths `tool` cannot run over, table order."""
    return tuple(p.name for p in PATH_TABLE if tool in p.cannot_carry)


def expand(names: Sequence[str], families: Sequence[Family]) -> tuple[str, ...]:
    """`names` (any family) as the paths of `families`: all of the first family, in the
    order given, then all of the next; no duplicates."""
    out: dict[str, None] = {}
    for family in families:
        for name in names:
            out.setdefault(twin(name, family), None)
    return tuple(out)


def expand_pairs(pairs: Sequence[tuple[str, str]],
                 families: Sequence[Family]) -> tuple[tuple[str, str], ...]:
    """Each (A, B) pair once per family, both paths of that family: comparisons never cross
    families (an IPv6 path is compared with the IPv6 baseline)."""
    out: dict[tuple[str, str], None] = {}
    for family in families:
        for a, b in pairs:
            out.setdefault((twin(a, family), twin(b, family)), None)
    return tuple(out)


def baseline_for(name: str, baseline: str = BASELINE) -> str:
    """The baseline path of `name`'s family (`baseline` given by any twin's name)."""
    return twin(baseline, family_of(name))


def parse_family_option(value: str) -> str:
    """`--family 4|6|both` as a `[scenario] family` value (ValueError naming the allowed)."""
    if value not in FAMILY_OPTIONS:
        raise ValueError(f"--family: unknown value {value!r}; allowed: "
                         f"{', '.join(FAMILY_OPTIONS)}")
    return FAMILY_OPTIONS[value]


def _check_table() -> None:
    """Import-time sanity: a row naming an unknown policy or twin fails at once, not at the
    first switch of a run (the unit tests check the rest)."""
    for p in PATH_TABLE:
        if p.policy not in POLICIES or p.family not in FAMILIES or p.base not in PATHS:
            raise ValueError(f"benchmarks/paths.py: bad row {p}")
        if PATHS[p.base].family != 4:
            raise ValueError(f"benchmarks/paths.py: {p.name}'s base {p.base} is not IPv4")


_check_table()
