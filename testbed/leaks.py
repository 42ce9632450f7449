"""Leak detector: does any packet on the front-door side carry a subscriber's address?

With an aliasing policy the front door must never see a subscriber address or prefix, in
any header, in any form. The scanner knows every subscriber IPv4 address, every delegated
IPv6 prefix and every other subscriber IPv6 address (the access segment's next-hop
addresses), and looks for them in two ways:

1. Structurally (`testbed.ipwalk`): every IP header in the frame at any depth (ICMP error
   quotes, ICMP-in-ICMP, IP-in-IP, GRE, Teredo, VXLAN), IPv4 options (every 4-byte window:
   record route, source routes, timestamps), IPv6 routing-header addresses, ICMP redirect
   addresses. An IPv6 address is a hit when it is inside a subscriber prefix, is a known
   subscriber address, or embeds a subscriber IPv4 address: `::ffff:a.b.c.d` (mapped),
   `::a.b.c.d` (compatible), NAT64 (RFC 6052, `64:ff9b::/96`, `64:ff9b:1::/48`), 6to4
   (`2002::/16`), Teredo (`2001::/32`, client obfuscated) and ISATAP (`::5efe:a.b.c.d`).
2. Over the whole captured frame, for the same IPv6 forms (at least 6 fixed bytes, so
   ciphertext never matches by chance), wherever the walk did not already look. A bare
   4-byte IPv4 address is only matched where a header puts an address: over whole frames
   it would match ciphertext by chance.

Each hit has a category, so a positive control can demand a hit in every category and a
broken scan of one of them cannot hide behind the others: ipv4-outer, ipv6-outer,
icmp-quoted-ipv4, icmp-quoted-ipv6, tunnelled-ipv4/6, ipv4-option, frame-bytes.

Set aside, and counted, are only payload-free TCP FIN/RST/ACK segments of flows that
existed before the switch to the aliasing policy (`preexisting`): the end of a connection
the front door knew unaliased all along, not something the policy let through. Data, SYNs,
UDP and ICMP of those same 4-tuples are scanned like everything else.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed.addressing import Subscriber
from testbed.errors import ParameterError
from testbed.ipwalk import LINK_ETHERNET, TCP_ACK, TCP_FIN, TCP_RST, Field, Transport, walk_frame

#: Categories every positive control must hit (module doc).
CONTROL_CATEGORIES = ("ipv4-outer", "ipv6-outer", "icmp-quoted-ipv4", "icmp-quoted-ipv6")
#: NAT64 prefixes whose RFC 6052 embeddings are searched (well-known and local-use).
NAT64_PREFIXES = ("64:ff9b::/96", "64:ff9b:1::/48")
#: TCP flags a set-aside segment may carry: FIN, RST, ACK and the ECN bits (ECE, CWR).
SET_ASIDE_FLAGS = TCP_FIN | TCP_RST | TCP_ACK | 0x40 | 0x80
_MAPPED = b"\0" * 10 + b"\xff\xff"
_COMPAT = b"\0" * 12
_ISATAP = (b"\0\0\x5e\xfe", b"\x02\0\x5e\xfe")


@dataclass
class LeakHit:
    packet: int
    where: str
    address: str
    summary: str
    category: str = "frame-bytes"
    form: str = "address"  # how the address appeared: address, prefix, ::ffff:-mapped, ...


#: A transport flow without direction: (protocol, (address, port), (address, port)), the two
#: endpoints in sorted order, so a packet and its reply give the same key.
FlowKey = tuple[str, tuple[str, int], tuple[str, int]]


def on_wire(address: str) -> str:
    """The address as packets carry it: a dual-stack socket lists an IPv4 peer as
    ::ffff:a.b.c.d, but its packets are IPv4."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).compressed


def flow_key(proto: str, a: str, a_port: int, b: str, b_port: int) -> FlowKey:
    ends = sorted([(on_wire(a), int(a_port)), (on_wire(b), int(b_port))])
    return (proto, ends[0], ends[1])


def _transport_key(t: Transport) -> FlowKey | None:
    if len(t.src) not in (4, 16) or len(t.dst) != len(t.src):
        return None
    return flow_key(t.proto, str(ipaddress.ip_address(t.src)), t.sport,
                    str(ipaddress.ip_address(t.dst)), t.dport)


def is_straggler(t: Transport | None) -> bool:
    """A payload-free TCP segment carrying only FIN/RST/ACK: the close of a connection."""
    return (t is not None and t.proto == "tcp" and t.payload == 0
            and t.flags & (TCP_FIN | TCP_RST | TCP_ACK) != 0 and t.flags & ~SET_ASIDE_FLAGS == 0)


@dataclass
class LeakReport:
    capture: str
    packets: int = 0
    hits: list[LeakHit] = field(default_factory=list)
    set_aside: int = 0  # payload-free FIN/RST/ACK of pre-existing flows (module doc)
    set_aside_examples: list[str] = field(default_factory=list)

    def categories(self) -> dict[str, int]:
        """Hits per category, every control category present (0 when none)."""
        counts = Counter(h.category for h in self.hits)
        return {**{c: 0 for c in CONTROL_CATEGORIES}, **dict(sorted(counts.items()))}

    def as_dict(self) -> dict:
        return {"capture": self.capture, "packets": self.packets, "hits": len(self.hits),
                "hits_by_category": self.categories(), "set_aside": self.set_aside,
                "excluded_preexisting": self.set_aside,  # the older name report.py reads
                "set_aside_examples": self.set_aside_examples[:10],
                "examples": [asdict(h) for h in self.hits[:10]]}


@dataclass(frozen=True)
class _Pattern:
    """A whole-frame search: find `anchor`, then `key(frame, i)` names what it matched."""

    anchor: bytes
    form: str
    key: Callable[[bytes, int], str | None]


def _rfc6052_positions(prefixlen: int) -> list[int]:
    """Byte positions of the embedded IPv4 address after a NAT64 prefix (bits 64-71 are 0)."""
    return [i for i in range(prefixlen // 8, 16) if i != 8][:4]


def _common_prefix(items: list[bytes]) -> bytes:
    if not items:
        return b""
    first, last = min(items), max(items)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


class LeakScanner:
    """Scans frames and captures for a set of subscribers' addresses (module doc)."""

    def __init__(self, v4_addresses: Iterable[object], v6_prefixes: Iterable[object],
                 v6_addresses: Iterable[object] = (),
                 nat64_prefixes: Iterable[str] = NAT64_PREFIXES) -> None:
        self.v4 = {ipaddress.IPv4Address(str(a)).packed: str(a) for a in v4_addresses}
        self.v6_nets = sorted({ipaddress.IPv6Network(str(p)) for p in v6_prefixes})
        self.v6_exact = {ipaddress.IPv6Address(str(a)).packed: str(a) for a in v6_addresses}
        self._by_len: dict[int, dict[int, str]] = {}
        for net in self.v6_nets:
            if net.prefixlen == 0:
                raise ParameterError("subscriber IPv6 prefix", str(net), "a prefix longer than /0")
            key = int(net.network_address) >> (128 - net.prefixlen)
            self._by_len.setdefault(net.prefixlen, {})[key] = str(net)
        self.nat64 = []
        for text in nat64_prefixes:
            net = ipaddress.IPv6Network(text)
            if net.prefixlen not in (32, 40, 48, 56, 64, 96):
                raise ParameterError("NAT64 prefix", text, "a /32, /40, /48, /56, /64 or /96")
            self.nat64.append((net.network_address.packed[:net.prefixlen // 8],
                               _rfc6052_positions(net.prefixlen), str(net)))
        self._patterns = self._frame_patterns()

    @classmethod
    def for_subscribers(cls, subscribers: Iterable[Subscriber],
                        extra: Iterable[object] = ()) -> LeakScanner:
        """Every address the plan gives these subscribers: IPv4, delegated /56, the access
        segment's next-hop address; `extra` adds addresses (v4 or v6) found configured on
        the network's subscriber hosts, so a topology that adds one is covered too."""
        subs = list(subscribers)
        more = [ipaddress.ip_address(str(a)) for a in extra]
        return cls([*(s.v4 for s in subs), *(a for a in more if a.version == 4)],
                   [s.v6_prefix for s in subs],
                   [*(s.v6_segment for s in subs), *(a for a in more if a.version == 6)])

    # -- what counts as a subscriber address ------------------------------------------------
    def is_subscriber(self, address: str) -> bool:
        """Whether `address` is a subscriber's, in any form the scanner knows (module doc)."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if ip.version == 4:
            return ip.packed in self.v4
        return bool(self._v6_matches(ip.packed))

    def _prefix_of(self, raw: bytes) -> str | None:
        value = int.from_bytes(raw[:16].ljust(16, b"\0"), "big")
        for plen, keys in self._by_len.items():
            hit = keys.get(value >> (128 - plen))
            if hit is not None:
                return hit
        return None

    def embedded_v4(self, raw: bytes) -> list[tuple[str, bytes]]:
        """Every IPv4 address an IPv6 address embeds, with the form's name."""
        out = []
        if raw[:12] == _MAPPED:
            out.append(("::ffff:-mapped", raw[12:16]))
        elif raw[:12] == _COMPAT:
            out.append(("v4-compatible", raw[12:16]))
        if raw[:2] == b"\x20\x02":
            out.append(("6to4", raw[2:6]))
        if raw[:4] == b"\x20\x01\x00\x00":
            out.append(("teredo client", bytes(b ^ 0xFF for b in raw[12:16])))
            out.append(("teredo server", raw[4:8]))
        if raw[8:12] in _ISATAP:
            out.append(("isatap", raw[12:16]))
        for prefix, positions, name in self.nat64:
            if raw.startswith(prefix):
                out.append((f"nat64 {name}", bytes(raw[i] for i in positions)))
        return out

    def _v6_matches(self, raw: bytes) -> list[tuple[str, str]]:
        """(form, subscriber address or prefix) for one 16-byte IPv6 address."""
        out = []
        if raw in self.v6_exact:
            out.append(("address", self.v6_exact[raw]))
        prefix = self._prefix_of(raw)
        if prefix is not None:
            out.append(("prefix", prefix))
        out += [(form, self.v4[v4]) for form, v4 in self.embedded_v4(raw) if v4 in self.v4]
        return out

    def _field_matches(self, f: Field) -> list[tuple[str, str]]:
        if f.kind == "option":  # any 4-byte window of the options
            return [("address", self.v4[f.data[i:i + 4]]) for i in range(len(f.data) - 3)
                    if f.data[i:i + 4] in self.v4]
        if f.family == 4 or len(f.data) == 4:
            return [("address", self.v4[f.data])] if f.data in self.v4 else []
        return self._v6_matches(f.data)

    # -- whole-frame patterns ---------------------------------------------------------------
    def _frame_patterns(self) -> list[_Pattern]:
        pats: list[_Pattern] = []

        def v4_at(offset: int, xor: int = 0) -> Callable[[bytes, int], str | None]:
            def key(frame: bytes, i: int) -> str | None:
                raw = frame[i + offset:i + offset + 4]
                return self.v4.get(bytes(b ^ xor for b in raw) if xor else raw)
            return key

        def prefix_at(plen: int) -> Callable[[bytes, int], str | None]:
            need = -(-plen // 8)

            def key(frame: bytes, i: int) -> str | None:
                raw = frame[i:i + 16]
                return self._prefix_of(raw) if len(raw) >= need else None
            return key

        for plen, keys in self._by_len.items():
            nets = [ipaddress.IPv6Network(n).network_address.packed[:plen // 8]
                    for n in keys.values()]
            pats.append(_Pattern(_common_prefix(nets), "prefix", prefix_at(plen)))
        if self.v6_exact:
            pats.append(_Pattern(_common_prefix(list(self.v6_exact)), "address",
                                 lambda frame, i: self.v6_exact.get(frame[i:i + 16])))
        if self.v4:
            pats += [_Pattern(_MAPPED, "::ffff:-mapped", v4_at(12)),
                     _Pattern(_COMPAT, "v4-compatible", v4_at(12)),
                     _Pattern(b"\x20\x02", "6to4", v4_at(2)),
                     _Pattern(b"\x20\x01\x00\x00", "teredo client", v4_at(12, 0xFF))]
            pats += [_Pattern(a, "isatap", v4_at(4)) for a in _ISATAP]
            for prefix, positions, name in self.nat64:
                def nat64_key(frame: bytes, i: int, positions: list[int] = positions
                              ) -> str | None:
                    raw = frame[i:i + 16]
                    if len(raw) <= positions[-1]:
                        return None
                    return self.v4.get(bytes(raw[p] for p in positions))
                pats.append(_Pattern(prefix, f"nat64 {name}", nat64_key))
        return pats

    def _frame_matches(self, frame: bytes, covered: list[tuple[int, int]]
                       ) -> list[tuple[int, str, str]]:
        out = []
        for pat in self._patterns:
            i = frame.find(pat.anchor)
            while i != -1:
                if not any(a <= i < b for a, b in covered):
                    hit = pat.key(frame, i)
                    if hit is not None:
                        out.append((i, pat.form, hit))
                i = frame.find(pat.anchor, i + 1)
        return out

    # -- scanning ---------------------------------------------------------------------------
    def scan_frame(self, index: int, frame: bytes, linktype: int = LINK_ETHERNET
                   ) -> list[LeakHit]:
        """Hits in one frame (module doc)."""
        return self._scan(index, frame, linktype)[0]

    def _scan(self, index: int, frame: bytes, linktype: int
              ) -> tuple[list[LeakHit], Transport | None]:
        walk = walk_frame(frame, linktype)
        hits: list[LeakHit] = []
        covered = []
        for f in walk.fields:
            covered.append((f.offset, f.offset + len(f.data)))
            for form, address in self._field_matches(f):
                hits.append(LeakHit(index, _where(f), address, walk.summary, _category(f),
                                    form))
        for offset, form, address in self._frame_matches(frame, covered):
            hits.append(LeakHit(index, f"frame bytes at {offset}", address, walk.summary,
                                "frame-bytes", form))
        return hits, walk.transport

    def scan_pcap(self, path: Path, preexisting: Iterable[FlowKey] = ()) -> LeakReport:
        """Scan every frame of a capture. Payload-free FIN/RST/ACK segments of the flows in
        `preexisting` are counted in `set_aside` instead (module doc); every other packet of
        those flows is scanned."""
        from scapy.utils import RawPcapReader

        old = set(preexisting)
        report = LeakReport(str(path))
        if not path.exists() or path.stat().st_size == 0:
            return report
        with RawPcapReader(str(path)) as reader:
            linktype = int(getattr(reader, "linktype", LINK_ETHERNET))
            for index, (frame, _meta) in enumerate(reader):
                report.packets += 1
                hits, transport = self._scan(index, frame, linktype)
                if hits and old and is_straggler(transport) and transport is not None \
                        and _transport_key(transport) in old:
                    report.set_aside += 1
                    report.set_aside_examples.append(f"{index}: {hits[0].summary} "
                                                     f"flags 0x{transport.flags:02x}")
                    continue
                report.hits += hits
        return report


def sources_seen(path: Path, addresses: Iterable[str]) -> list[tuple[int, str]]:
    """(packet, address) for every IP header, at any depth, whose source is one of
    `addresses`: did a spoofed source reach this capture point?"""
    from scapy.utils import RawPcapReader

    wanted = {ipaddress.ip_address(a).packed: str(a) for a in addresses}
    found: list[tuple[int, str]] = []
    if not path.exists() or path.stat().st_size == 0:
        return found
    with RawPcapReader(str(path)) as reader:
        linktype = int(getattr(reader, "linktype", LINK_ETHERNET))
        for index, (frame, _meta) in enumerate(reader):
            found += [(index, wanted[f.data]) for f in walk_frame(frame, linktype).fields
                      if f.kind == "source" and f.data in wanted]
    return found


def _category(f: Field) -> str:
    if f.kind == "option":
        return "ipv4-option"
    if not f.chain:
        return f"ipv{f.family}-outer"
    return f"icmp-quoted-ipv{f.family}" if f.quoted else f"tunnelled-ipv{f.family}"


def _where(f: Field) -> str:
    place = "" if not f.chain else ("quoted " if f.quoted else "tunnelled ")
    text = f"{place}ipv{f.family} {f.kind}"
    if len(f.chain) > 1 or (f.chain and not f.quoted):
        text += f" [{' > '.join(f.chain)}]"
    return text
