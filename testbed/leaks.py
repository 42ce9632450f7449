"""Leak detector: does any packet on the front-door side carry a subscriber's address?

With an aliasing policy the front door must never see a subscriber address or prefix, in
any header or in the header an ICMP error quotes. The scanner looks at:
- IPv4 source and destination, outer and (ICMP errors) quoted inner header: 4-byte matches
  against every subscriber address;
- every byte of the captured frame for any subscriber's IPv6 /56 prefix (7 bytes), which
  covers outer, quoted and extension-header addresses, temporary addresses included.
A 4-byte search over whole frames would match ciphertext by chance; 7 bytes never do.

Flows that existed before the capture began (`exclude`) are set aside, not scanned: when a
run switches from `route` to an aliasing policy, the front door may still retransmit a FIN
of a connection made under `route` to the subscriber's real address. That packet is the
end of a flow the front door knew unaliased all along, not something the aliasing policy
let through; every other packet, and every ICMP error whatever it quotes, is scanned.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LeakHit:
    packet: int
    where: str
    address: str
    summary: str


#: A transport flow without direction: (protocol, (address, port), (address, port)), the two
#: endpoints in sorted order, so a packet and its reply give the same key.
FlowKey = tuple[str, tuple[str, int], tuple[str, int]]


def flow_key(proto: str, a: str, a_port: int, b: str, b_port: int) -> FlowKey:
    ends = sorted([(ipaddress.ip_address(a).compressed, int(a_port)),
                   (ipaddress.ip_address(b).compressed, int(b_port))])
    return (proto, ends[0], ends[1])


@dataclass
class LeakReport:
    capture: str
    packets: int = 0
    hits: list[LeakHit] = field(default_factory=list)
    excluded: int = 0  # packets of flows that existed before the capture (see module doc)

    def as_dict(self) -> dict:
        return {"capture": self.capture, "packets": self.packets, "hits": len(self.hits),
                "excluded_preexisting": self.excluded,
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

    def is_subscriber(self, address: str) -> bool:
        """Whether `address` is one of the subscribers' (IPv4) or inside their IPv6 prefixes."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if ip.version == 4:
            return ip.packed in self.v4
        return any(ip.packed.startswith(p) for p in self.v6)

    @staticmethod
    def frame_flow(frame: bytes) -> FlowKey | None:
        """The TCP/UDP flow a frame belongs to (None for ICMP and anything else)."""
        from scapy.layers.l2 import Ether

        return LeakScanner._packet_flow(Ether(frame))

    @staticmethod
    def _packet_flow(pkt: Any) -> FlowKey | None:
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.inet6 import IPv6

        net = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        if net is None:
            return None
        for proto, layer in (("tcp", TCP), ("udp", UDP)):
            # a quoted header inside an ICMP error is TCPerror/UDPerror: not a match here
            if layer in pkt:
                t = pkt[layer]
                return flow_key(proto, net.src, t.sport, net.dst, t.dport)
        return None

    def scan_frame(self, index: int, frame: bytes, pkt: Any = None) -> list[LeakHit]:
        """Hits in one frame; `pkt` is the frame already parsed by scapy, if the caller has it
        (parsing is most of the cost of a scan)."""
        from scapy.layers.inet import ICMP, IP, IPerror
        from scapy.layers.l2 import Ether

        hits = []
        pkt = Ether(frame) if pkt is None else pkt
        for pattern, prefix in self.v6.items():
            if pattern in frame:
                hits.append(LeakHit(index, "frame bytes", prefix, pkt.summary()))
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

    def scan_pcap(self, path: Path, exclude: Iterable[FlowKey] = ()) -> LeakReport:
        """Scan every frame of a capture; frames of the flows in `exclude` are counted in
        `excluded` instead (flows that predate the capture, see the module doc)."""
        from scapy.layers.l2 import Ether
        from scapy.utils import RawPcapReader

        skip = set(exclude)
        report = LeakReport(str(path))
        if not path.exists() or path.stat().st_size == 0:
            return report
        for index, (frame, _meta) in enumerate(RawPcapReader(str(path))):
            report.packets += 1
            pkt = Ether(frame)
            if skip and self._packet_flow(pkt) in skip:
                report.excluded += 1
                continue
            report.hits += self.scan_frame(index, frame, pkt)
        return report
