"""Leak detector: does any packet on the front-door side carry a subscriber's address?

With an aliasing policy the front door must never see a subscriber address or prefix, in
any header or in the header an ICMP error quotes. The scanner looks at:
- IPv4 source and destination, outer and (ICMP errors) quoted inner header: 4-byte matches
  against every subscriber address;
- every byte of the captured frame for any subscriber's IPv6 /56 prefix (7 bytes), which
  covers outer, quoted and extension-header addresses, temporary addresses included.
A 4-byte search over whole frames would match ciphertext by chance; 7 bytes never do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LeakHit:
    packet: int
    where: str
    address: str
    summary: str


@dataclass
class LeakReport:
    capture: str
    packets: int = 0
    hits: list[LeakHit] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"capture": self.capture, "packets": self.packets, "hits": len(self.hits),
                "examples": [vars(h) for h in self.hits[:10]]}


class LeakScanner:
    """Scans captures for the addresses and prefixes of a set of subscribers."""

    def __init__(self, v4_addresses: Iterable[object], v6_prefixes: Iterable[object]) -> None:
        self.v4 = {ipaddress.IPv4Address(str(a)).packed: str(a) for a in v4_addresses}
        self.v6 = {}
        for p in v6_prefixes:
            net = ipaddress.IPv6Network(str(p))
            if net.prefixlen % 8:
                raise ValueError(f"{net}: prefix length must be a multiple of 8")
            self.v6[net.network_address.packed[: net.prefixlen // 8]] = str(net)

    def scan_frame(self, index: int, frame: bytes) -> list[LeakHit]:
        from scapy.layers.inet import ICMP, IP, IPerror
        from scapy.layers.l2 import Ether

        hits = []
        for pattern, prefix in self.v6.items():
            if pattern in frame:
                hits.append(LeakHit(index, "frame bytes", prefix, Ether(frame).summary()))
        pkt = Ether(frame)
        if IP in pkt:
            ip = pkt[IP]
            for where, addr in (("ipv4 source", ip.src), ("ipv4 destination", ip.dst)):
                if ipaddress.IPv4Address(addr).packed in self.v4:
                    hits.append(LeakHit(index, where, addr, pkt.summary()))
            if ICMP in pkt and IPerror in pkt:
                inner = pkt[IPerror]
                for where, addr in (("quoted ipv4 source", inner.src),
                                    ("quoted ipv4 destination", inner.dst)):
                    if ipaddress.IPv4Address(addr).packed in self.v4:
                        hits.append(LeakHit(index, where, addr, pkt.summary()))
        return hits

    def scan_pcap(self, path: Path) -> LeakReport:
        from scapy.utils import RawPcapReader

        report = LeakReport(str(path))
        if not path.exists() or path.stat().st_size == 0:
            return report
        for index, (frame, _meta) in enumerate(RawPcapReader(str(path))):
            report.packets += 1
            report.hits += self.scan_frame(index, frame)
        return report
