"""The address plan: the one module that knows which address goes where.

Everything is allocated deterministically from the ranges DESIGN.md allows:
IPv4 only from 198.18.0.0/15 (RFC 2544 benchmarking), IPv6 from 2001:db8::/32
(documentation) and 2001:2::/48 (RFC 5180 benchmarking). Nothing else in the project
hard-codes an address; it asks the plan. Stdlib only: Mininet topology files import this
under the system Python too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from testbed.errors import ParameterError, UsageError

ALLOWED_V4 = (IPv4Network("198.18.0.0/15"),)
ALLOWED_V6 = (IPv6Network("2001:db8::/32"), IPv6Network("2001:2::/48"))

# Addresses skipped at the start of the subscriber block: the gateway and a few spares.
SUBSCRIBER_V4_OFFSET = 16
SUBSCRIBER_V6_PREFIXLEN = 56


def default_blocks() -> dict[str, str]:
    """The default plan: what each block is for, by name. Overridable from a scenario file."""
    return {
        # access side (198.18.0.0/16)
        "subscribers_v4": "198.18.0.0/17",  # one on-link access segment, gateway .1
        "access_links_v4": "198.18.128.0/18",  # /30 per infrastructure link on the access side
        "subscribers_v6": "2001:db8:1000::/40",  # one /56 delegated prefix per subscriber
        "access_segment_v6": "2001:db8:ff00::/64",  # next-hop addresses on the access segment
        # "Internet" side (198.19.0.0/16)
        "cdn_v4": "198.19.0.0/24",  # service addresses of the CDN PoP (front door, origins, DNS)
        "cdn_v6": "2001:db8:cd00::/48",
        "providers_v4": "198.19.1.0/24",  # service addresses of off-path relay providers
        "providers_v6": "2001:db8:cd01::/48",
        "cdn2_v4": "198.19.2.0/24",  # service addresses of a second CDN PoP (two_pops)
        "cdn2_v6": "2001:db8:cd02::/48",
        "alias_pool_v4": "198.19.64.0/24",  # CFR shared alias pool
        "alias_pool_v6": "2001:2:0:a000::/52",  # CFR alias prefixes
        "cgn_pool_v4": "198.19.65.0/24",  # CGN (NAT44) external pool
        "offpath_pool_v4": "198.19.66.0/24",  # alias pool of a CFR hosted off the access path
        "offpath_pool_v6": "2001:2:0:b000::/52",
        "nptv6_v6": "2001:db8:2000::/40",  # NPTv6 external prefix (same length as subscribers)
        "internet_links_v4": "198.19.128.0/18",  # /30 per infrastructure link, Internet side
        "links_v6": "2001:db8:fe00::/40",  # /64 per infrastructure link
    }


Network = IPv4Network | IPv6Network


def _parse_block(name: str, text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise UsageError(f"address block {name}={text!r} is not a valid network: {exc}") from None


def _within_allowed(net: Network) -> bool:
    allowed = ALLOWED_V4 if net.version == 4 else ALLOWED_V6
    return any(net.subnet_of(a) for a in allowed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Subscriber:
    """One subscriber: an IPv4 address on the access segment and a delegated IPv6 /56."""

    index: int
    v4: IPv4Address
    v6_prefix: IPv6Network
    v6_segment: IPv6Address  # the subscriber's next-hop address on the access segment

    @property
    def v6(self) -> IPv6Address:
        """The address the subscriber uses: ::1 in the first /64 of its delegated prefix."""
        return self.v6_prefix.network_address + 1

    def v6_in_first_64(self, interface_id: int) -> IPv6Address:
        """An address of the first /64 with the given interface ID (for temporary addresses)."""
        return self.v6_prefix.network_address + (interface_id & ((1 << 64) - 1))


@dataclass(frozen=True)
class LinkAddresses:
    """Addresses of both ends of one infrastructure point-to-point link."""

    index: int
    v4_net: IPv4Network
    v6_net: IPv6Network

    @property
    def a4(self) -> IPv4Address:
        return self.v4_net.network_address + 1

    @property
    def b4(self) -> IPv4Address:
        return self.v4_net.network_address + 2

    @property
    def a6(self) -> IPv6Address:
        return self.v6_net.network_address + 1

    @property
    def b6(self) -> IPv6Address:
        return self.v6_net.network_address + 2


@dataclass
class AddressPlan:
    """Deterministic allocation from named blocks; validated on construction.

    Raises UsageError for blocks outside the allowed ranges or overlapping each other, and
    ParameterError when a request exceeds a block (e.g. more subscribers than it holds).
    """

    blocks: dict[str, str] = field(default_factory=default_blocks)

    def __post_init__(self) -> None:
        known = default_blocks()
        unknown = sorted(set(self.blocks) - set(known))
        if unknown:
            raise UsageError(
                f"unknown address block(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        merged = {**known, **self.blocks}
        self.nets: dict[str, Network] = {n: _parse_block(n, t) for n, t in merged.items()}
        for name, net in self.nets.items():
            expected = 6 if name.endswith("_v6") else 4
            if net.version != expected:
                raise UsageError(f"address block {name}={net} must be IPv{expected}")
            if not _within_allowed(net):
                allowed = ALLOWED_V4 if net.version == 4 else ALLOWED_V6
                raise UsageError(
                    f"address block {name}={net} is outside the allowed ranges "
                    f"({', '.join(map(str, allowed))})"
                )
        items = sorted(self.nets.items())
        for i, (n1, a) in enumerate(items):
            for n2, b in items[i + 1 :]:
                if a.version == b.version and a.overlaps(b):  # type: ignore[arg-type]
                    raise UsageError(f"address blocks {n1}={a} and {n2}={b} overlap")
        sub6 = self.nets["subscribers_v6"]
        npt = self.nets["nptv6_v6"]
        if sub6.prefixlen != npt.prefixlen:
            raise UsageError(
                f"nptv6_v6={npt} must have the same length as subscribers_v6={sub6} "
                "(NPTv6 maps prefixes 1:1)"
            )
        if sub6.prefixlen > SUBSCRIBER_V6_PREFIXLEN:
            raise UsageError(f"subscribers_v6={sub6} must be shorter than /56")

    # -- capacity ---------------------------------------------------------------------------
    @property
    def max_subscribers(self) -> int:
        v4 = self.nets["subscribers_v4"].num_addresses - SUBSCRIBER_V4_OFFSET - 1
        v6 = 2 ** (SUBSCRIBER_V6_PREFIXLEN - self.nets["subscribers_v6"].prefixlen)
        return min(v4, v6)

    # -- subscribers ------------------------------------------------------------------------
    @property
    def access_gateway_v4(self) -> IPv4Address:
        return self.nets["subscribers_v4"].network_address + 1  # type: ignore[return-value]

    @property
    def access_gateway_v6(self) -> IPv6Address:
        return self.nets["access_segment_v6"].network_address + 1  # type: ignore[return-value]

    @property
    def access_prefixlen_v4(self) -> int:
        return self.nets["subscribers_v4"].prefixlen

    def subscriber(self, index: int) -> Subscriber:
        if not 0 <= index < self.max_subscribers:
            raise ParameterError("subscriber index", index, f"0..{self.max_subscribers - 1}")
        v4net = self.nets["subscribers_v4"]
        v6net = self.nets["subscribers_v6"]
        seg = self.nets["access_segment_v6"]
        step = 1 << (128 - SUBSCRIBER_V6_PREFIXLEN)
        prefix = IPv6Network((int(v6net.network_address) + index * step, SUBSCRIBER_V6_PREFIXLEN))
        return Subscriber(
            index=index,
            v4=v4net.network_address + SUBSCRIBER_V4_OFFSET + index,  # type: ignore[arg-type]
            v6_prefix=prefix,
            v6_segment=seg.network_address + 0x100 + index,  # type: ignore[arg-type]
        )

    def subscribers(self, count: int, start: int = 0) -> list[Subscriber]:
        if count < 0 or start + count > self.max_subscribers:
            raise ParameterError("subscribers", count, f"0..{self.max_subscribers - start}")
        return [self.subscriber(start + i) for i in range(count)]

    # -- infrastructure links ---------------------------------------------------------------
    def link(self, index: int, side: str, v6_index: int | None = None) -> LinkAddresses:
        """The /30 and /64 of an infrastructure link.

        IPv4 /30s come from the side's block ('access' or 'internet') at `index`; the /64
        comes from the one IPv6 link block at `v6_index` (default: `index`), so callers
        numbering v4 per side must number v6 globally."""
        if side not in ("access", "internet"):
            raise ParameterError("link side", side, "'access' or 'internet'")
        v4block = self.nets[f"{side}_links_v4"]
        v6block = self.nets["links_v6"]
        n4 = v4block.num_addresses // 4
        n6 = 2 ** (64 - v6block.prefixlen)
        v6_index = index if v6_index is None else v6_index
        if not 0 <= index < n4:
            raise ParameterError(f"{side} link index", index, f"0..{n4 - 1}")
        if not 0 <= v6_index < n6:
            raise ParameterError("IPv6 link index", v6_index, f"0..{n6 - 1}")
        v4 = IPv4Network((int(v4block.network_address) + 4 * index, 30))
        v6 = IPv6Network((int(v6block.network_address) + (v6_index << 64), 64))
        return LinkAddresses(index, v4, v6)

    # -- service addresses ------------------------------------------------------------------
    def service(self, block: str, host: int) -> tuple[IPv4Address, IPv6Address]:
        """A service address pair (v4, v6) at host number `host` of a *_v4/*_v6 block pair."""
        v4 = self.nets[f"{block}_v4"]
        v6 = self.nets[f"{block}_v6"]
        if not 1 <= host < v4.num_addresses - 1:
            raise ParameterError(f"{block} host number", host, f"1..{v4.num_addresses - 2}")
        return v4.network_address + host, v6.network_address + host  # type: ignore[return-value]

    def pop_block(self, pop: int) -> str:
        """The service block pair of CDN PoP number `pop`: "cdn" for the first, then "cdn2"."""
        block = "cdn" if pop == 0 else f"cdn{pop + 1}"
        if f"{block}_v4" not in self.nets:
            pops = sum(1 for n in self.nets if n.startswith("cdn") and n.endswith("_v4"))
            raise ParameterError("point of presence", pop, f"0..{pops - 1}")
        return block

    def front_door(self, pop: int = 0) -> tuple[IPv4Address, IPv6Address]:
        return self.service(self.pop_block(pop), 10)

    def origin(self, index: int, pop: int = 0) -> tuple[IPv4Address, IPv6Address]:
        return self.service(self.pop_block(pop), 20 + index)

    def dns_server(self, pop: int = 0) -> tuple[IPv4Address, IPv6Address]:
        return self.service(self.pop_block(pop), 53)

    def provider(self, index: int) -> tuple[IPv4Address, IPv6Address]:
        return self.service("providers", 10 + index)

    def cfr_host(self, index: int) -> tuple[IPv4Address, IPv6Address]:
        """Service address of a node that can host a CFR off the access path."""
        return self.service("providers", 100 + index)

    # -- relay pools ------------------------------------------------------------------------
    def alias_pool_v4(self, size: int) -> list[IPv4Address]:
        block = self.nets["alias_pool_v4"]
        if not 1 <= size <= block.num_addresses - 2:
            raise ParameterError("alias pool size", size, f"1..{block.num_addresses - 2}")
        return [block.network_address + 1 + i for i in range(size)]  # type: ignore[misc]

    def alias_pool_v6(self, size: int) -> list[IPv6Address]:
        """`size` alias addresses, one in each of `size` /64s of the alias prefix block."""
        block = self.nets["alias_pool_v6"]
        limit = 2 ** (64 - block.prefixlen)
        if not 1 <= size <= limit:
            raise ParameterError("alias pool size", size, f"1..{limit}")
        return [block.network_address + (i << 64) + 1 for i in range(size)]  # type: ignore[misc]

    def cgn_pool_v4(self, size: int) -> list[IPv4Address]:
        block = self.nets["cgn_pool_v4"]
        if not 1 <= size <= block.num_addresses - 2:
            raise ParameterError("cgn pool size", size, f"1..{block.num_addresses - 2}")
        return [block.network_address + 1 + i for i in range(size)]  # type: ignore[misc]

    def relay_prefixes(self) -> list[Network]:
        """Prefixes that live behind the ISP edge (routed there from the Internet side)."""
        names = ("subscribers_v4", "subscribers_v6", "alias_pool_v4", "alias_pool_v6",
                 "cgn_pool_v4", "nptv6_v6")
        return [self.nets[n] for n in names]

    def in_subscriber_space(self, addr: str) -> bool:
        ip = ipaddress.ip_address(addr)
        return any(ip in self.nets[n] for n in ("subscribers_v4", "subscribers_v6"))
