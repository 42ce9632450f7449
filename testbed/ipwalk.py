"""Walk every IP header in a captured frame, at any nesting depth, without scapy.

Why a hand-written walker: a leak scanner must read headers where dissectors stop. scapy
dissects one ICMP quote but not an ICMP error quoting an ICMP error, stops at truncated
quotes, and does not expose IPv4 option bytes as addresses. This walker follows every
encapsulation a subscriber address could hide in: ICMP/ICMPv6 error quotes (any depth),
IP-in-IP (4/41), GRE, Teredo (UDP 3544), VXLAN (UDP 4789), IPv6 extension headers
(routing-header addresses), IPv4 options and ICMP redirect gateways. It never raises on
malformed or truncated input: it reports what the captured bytes hold.

Each address it finds is a `Field`: the bytes, where they sit in the frame (so a
whole-frame byte search can tell which matches the walk already examined) and the chain of
encapsulations above the header that holds them (empty: the outer header).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: Deeper nesting than this is not followed (a crafted frame could nest until snaplen).
MAX_DEPTH = 16

ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_TEB = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x6558
ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})  # unreach, quench, redirect, time exceeded, param
ICMP6_ERRORS = frozenset({1, 2, 3, 4})  # unreach, too big, time exceeded, param problem
ICMP6_REDIRECT = 137
V6_EXTENSIONS = frozenset({0, 43, 44, 51, 60, 135, 139, 140})
TEREDO_PORT, VXLAN_PORT = 3544, 4789
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

# Pcap link types the testbed's captures use.
LINK_ETHERNET, LINK_RAW, LINK_RAW_OLD, LINK_SLL, LINK_SLL2 = 1, 101, 12, 113, 276


@dataclass(frozen=True)
class Field:
    """An address (4 or 16 bytes) or IPv4 option bytes found in a frame."""

    kind: str  # "source", "destination", "option", "routing", "redirect gateway", ...
    family: int  # 4 or 6: the header it belongs to
    chain: tuple[str, ...]  # encapsulations above the header: ("icmp",), ("ipip", "icmp"), ...
    offset: int  # in the frame
    data: bytes

    @property
    def quoted(self) -> bool:
        """Inside an ICMP/ICMPv6 error quote, at whatever depth."""
        return any(step in ("icmp", "icmp6") for step in self.chain)


@dataclass(frozen=True)
class Transport:
    """The outer header's TCP or UDP segment, for deciding what a flow's packet is."""

    proto: str  # "tcp" | "udp"
    src: bytes
    dst: bytes
    sport: int
    dport: int
    flags: int  # TCP flags (0 for UDP)
    payload: int  # bytes of transport payload, from the IP length fields (not the snaplen)


@dataclass
class Walk:
    fields: list[Field]
    transport: Transport | None
    summary: str


def walk_frame(frame: bytes, linktype: int = LINK_ETHERNET) -> Walk:
    """Every IP header field in one captured frame (see module doc)."""
    w = Walk([], None, "")
    start = _l3_start(frame, linktype)
    if start is None:
        w.summary = f"non-IP frame ({len(frame)} bytes)"
        return w
    version = frame[start] >> 4 if start < len(frame) else 0
    _walk_ip(frame, start, version, (), w)
    if not w.summary:
        w.summary = f"frame of {len(frame)} bytes"
    return w


def _l3_start(frame: bytes, linktype: int) -> int | None:
    if linktype in (LINK_RAW, LINK_RAW_OLD):
        return 0
    if linktype == LINK_SLL:
        return 16 if _u16(frame, 14) in (ETH_IPV4, ETH_IPV6) else None
    if linktype == LINK_SLL2:
        return 20 if _u16(frame, 0) in (ETH_IPV4, ETH_IPV6) else None
    return _ether_payload(frame, 0)


def _ether_payload(frame: bytes, off: int) -> int | None:
    """Offset of the IP header inside an Ethernet frame at `off` (VLAN tags skipped)."""
    off += 12
    etype = _u16(frame, off)
    while etype in (ETH_VLAN, ETH_QINQ):
        off += 4
        etype = _u16(frame, off)
    return off + 2 if etype in (ETH_IPV4, ETH_IPV6) else None


def _u16(b: bytes, off: int) -> int:
    return struct.unpack_from("!H", b, off)[0] if off + 2 <= len(b) else -1


def _walk_ip(f: bytes, off: int, version: int, chain: tuple[str, ...], w: Walk) -> None:
    if len(chain) > MAX_DEPTH:
        return
    if version == 4:
        _walk_v4(f, off, chain, w)
    elif version == 6:
        _walk_v6(f, off, chain, w)


def _addr(w: Walk, f: bytes, kind: str, family: int, chain: tuple[str, ...], off: int) -> None:
    size = 4 if family == 4 else 16
    if off + size <= len(f):
        w.fields.append(Field(kind, family, chain, off, f[off:off + size]))


def _walk_v4(f: bytes, off: int, chain: tuple[str, ...], w: Walk) -> None:
    if off + 20 > len(f):
        # a truncated quote may still hold the source/destination
        _addr(w, f, "source", 4, chain, off + 12)
        _addr(w, f, "destination", 4, chain, off + 16)
        return
    ihl = max(20, (f[off] & 0x0F) * 4)
    total = _u16(f, off + 2)
    frag = _u16(f, off + 6) & 0x1FFF
    proto = f[off + 9]
    _addr(w, f, "source", 4, chain, off + 12)
    _addr(w, f, "destination", 4, chain, off + 16)
    options = f[off + 20:min(off + ihl, len(f))]
    if options:  # any 4 bytes of the options may be an address (RR, LSRR, SSRR, TS, ...)
        w.fields.append(Field("option", 4, chain, off + 20, options))
    if not chain:
        w.summary = (f"IPv4 {_ip4(f, off + 12)} > {_ip4(f, off + 16)} proto {proto} "
                     f"len {total}")
    if frag:
        return  # a non-first fragment carries no transport header
    _walk_payload(f, off + ihl, proto, chain, w, max(0, total - ihl) if total >= ihl else 0)


def _walk_v6(f: bytes, off: int, chain: tuple[str, ...], w: Walk) -> None:
    _addr(w, f, "source", 6, chain, off + 8)
    _addr(w, f, "destination", 6, chain, off + 24)
    if off + 40 > len(f):
        return
    plen = _u16(f, off + 4)
    nh = f[off + 6]
    if not chain:
        w.summary = f"IPv6 {_ip6(f, off + 8)} > {_ip6(f, off + 24)} nh {nh} plen {plen}"
    p = off + 40
    remaining = plen
    while nh in V6_EXTENSIONS and p + 8 <= len(f):
        if nh == 44:  # fragment: only the first fragment carries the next header's start
            if struct.unpack_from("!H", f, p + 2)[0] >> 3:
                return
            size = 8
        elif nh == 51:  # AH counts in 4-byte units
            size = (f[p + 1] + 2) * 4
        else:
            size = (f[p + 1] + 1) * 8
        if nh == 43 and f[p + 2] in (0, 2, 4):  # type 0, type 2 (home address), SRH
            for i in range((size - 8) // 16):
                _addr(w, f, "routing header", 6, chain, p + 8 + 16 * i)
        nh = f[p]
        p += size
        remaining -= size
    _walk_payload(f, p, nh, chain, w, max(0, remaining))


def _walk_payload(f: bytes, p: int, proto: int, chain: tuple[str, ...], w: Walk,
                  length: int) -> None:
    """The upper layer of an IP header: follow it if it can hold another IP header."""
    if proto == 1 and p + 8 <= len(f):
        if f[p] in ICMP4_ERRORS:
            if f[p] == 5:
                _addr(w, f, "redirect gateway", 4, chain, p + 4)
            _walk_ip(f, p + 8, f[p + 8] >> 4 if p + 8 < len(f) else 4, (*chain, "icmp"), w)
    elif proto == 58 and p + 8 <= len(f):
        if f[p] in ICMP6_ERRORS:
            _walk_ip(f, p + 8, f[p + 8] >> 4 if p + 8 < len(f) else 6, (*chain, "icmp6"), w)
        elif f[p] == ICMP6_REDIRECT:
            _addr(w, f, "redirect target", 6, chain, p + 8)
            _addr(w, f, "redirect destination", 6, chain, p + 24)
    elif proto == 4:
        _walk_ip(f, p, 4, (*chain, "ipip"), w)
    elif proto == 41:
        _walk_ip(f, p, 6, (*chain, "6in4"), w)
    elif proto == 47:
        _walk_gre(f, p, chain, w)
    elif proto in (6, 17):
        _walk_transport(f, p, proto, chain, w, length)


def _walk_gre(f: bytes, p: int, chain: tuple[str, ...], w: Walk) -> None:
    if p + 4 > len(f):
        return
    flags, etype = f[p], _u16(f, p + 2)
    size = 4 + 4 * sum(1 for bit in (0x80, 0x20, 0x10) if flags & bit)  # csum, key, seq
    if etype == ETH_IPV4:
        _walk_ip(f, p + size, 4, (*chain, "gre"), w)
    elif etype == ETH_IPV6:
        _walk_ip(f, p + size, 6, (*chain, "gre"), w)
    elif etype == ETH_TEB:
        inner = _ether_payload(f, p + size)
        if inner is not None and inner < len(f):
            _walk_ip(f, inner, f[inner] >> 4, (*chain, "gre"), w)


def _walk_transport(f: bytes, p: int, proto: int, chain: tuple[str, ...], w: Walk,
                    length: int) -> None:
    if p + 8 > len(f):
        return
    sport, dport = _u16(f, p), _u16(f, p + 2)
    if proto == 6:
        if p + 14 > len(f):
            return
        doff = (f[p + 12] >> 4) * 4
        if not chain:
            src, dst = _outer_addresses(w)
            w.transport = Transport("tcp", src, dst, sport, dport, f[p + 13],
                                    max(0, length - doff))
        return
    if not chain:
        src, dst = _outer_addresses(w)
        w.transport = Transport("udp", src, dst, sport, dport, 0, max(0, length - 8))
    q = p + 8
    if TEREDO_PORT in (sport, dport) and q < len(f):
        # Teredo: optional authentication (0x0001) and origin indication (0x0000) headers
        if _u16(f, q) == 1 and q + 4 <= len(f):
            q += 13 + f[q + 2] + f[q + 3]
        if _u16(f, q) == 0 and q + 8 <= len(f):
            # origin indication: the client's mapped IPv4 address, XOR-obfuscated
            w.fields.append(Field("teredo origin", 4, (*chain, "teredo"), q + 4,
                                  bytes(b ^ 0xFF for b in f[q + 4:q + 8])))
            q += 8
        if q < len(f) and f[q] >> 4 == 6:
            _walk_ip(f, q, 6, (*chain, "teredo"), w)
    elif VXLAN_PORT in (sport, dport) and q + 8 < len(f):
        inner = _ether_payload(f, q + 8)
        if inner is not None and inner < len(f):
            _walk_ip(f, inner, f[inner] >> 4, (*chain, "vxlan"), w)


def _outer_addresses(w: Walk) -> tuple[bytes, bytes]:
    outer = [x for x in w.fields if not x.chain and x.kind in ("source", "destination")]
    src = next((x.data for x in outer if x.kind == "source"), b"")
    dst = next((x.data for x in outer if x.kind == "destination"), b"")
    return src, dst


def _ip4(f: bytes, off: int) -> str:
    return ".".join(str(b) for b in f[off:off + 4])


def _ip6(f: bytes, off: int) -> str:
    import ipaddress

    raw = f[off:off + 16]
    return str(ipaddress.IPv6Address(raw)) if len(raw) == 16 else raw.hex()
