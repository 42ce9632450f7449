"""The leak scanner on crafted frames (scapy), no root.

Every benchmark run's "no leak" verdict rests on this scanner: it must find a subscriber
address wherever it hides (outer header, quoted ICMP header, IPv6 prefix anywhere), find
nothing in aliased traffic, and set aside only the exact flows that predate a capture."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from benchmarks.leakcheck import _split_endpoint
from testbed.leaks import LeakScanner, flow_key

SUB4, SUB6_PREFIX, SUB6 = "198.18.0.16", "2001:db8:1000:100::/56", "2001:db8:1000:100::2"
ALIAS4, ALIAS6, FD4, FD6 = "198.19.64.3", "2001:2:0:a000::7", "198.19.0.10", "2001:db8:cd00::10"


def scanner() -> LeakScanner:
    return LeakScanner([SUB4, "198.18.0.17"], [SUB6_PREFIX])


def frame(pkt) -> bytes:
    return bytes(Ether() / pkt)


def test_outer_addresses_both_directions_are_hits() -> None:
    s = scanner()
    up = s.scan_frame(0, frame(IP(src=SUB4, dst=FD4) / TCP(sport=40000, dport=443)))
    down = s.scan_frame(1, frame(IP(src=FD4, dst=SUB4) / TCP(sport=443, dport=40000)))
    assert [h.where for h in up] == ["ipv4 source"]
    assert [h.where for h in down] == ["ipv4 destination"]


def test_aliased_traffic_is_clean() -> None:
    s = scanner()
    assert s.scan_frame(0, frame(IP(src=ALIAS4, dst=FD4) / TCP(sport=1, dport=443) /
                                 (b"\x01" * 200))) == []
    assert s.scan_frame(1, frame(IPv6(src=ALIAS6, dst=FD6) / UDP(sport=1, dport=443))) == []


def test_quoted_headers_are_scanned() -> None:
    s = scanner()
    icmp4 = IP(src=ALIAS4, dst=FD4) / ICMP(type=3, code=3) / IPerror(src=SUB4, dst=FD4) / \
        UDPerror(sport=5000, dport=9)
    assert [h.where for h in s.scan_frame(0, frame(icmp4))] == ["quoted ipv4 source"]
    icmp6 = IPv6(src=ALIAS6, dst=FD6) / ICMPv6DestUnreach(code=4) / IPerror6(src=SUB6, dst=FD6)
    assert [h.where for h in s.scan_frame(1, frame(icmp6))] == ["frame bytes"]


def test_flow_key_has_no_direction() -> None:
    assert flow_key("tcp", FD4, 443, SUB4, 40000) == flow_key("tcp", SUB4, 40000, FD4, 443)
    assert flow_key("tcp", FD4, 443, SUB4, 40000) != flow_key("udp", FD4, 443, SUB4, 40000)
    assert LeakScanner.frame_flow(frame(IP(src=FD4, dst=SUB4) / TCP(sport=443, dport=1))) == \
        flow_key("tcp", SUB4, 1, FD4, 443)


def test_only_the_exact_preexisting_flows_are_set_aside(tmp_path: Path) -> None:
    old = flow_key("tcp", FD4, 443, SUB4, 32961)
    pkts = [
        Ether() / IP(src=FD4, dst=SUB4) / TCP(sport=443, dport=32961, flags="FPA"),  # old flow
        Ether() / IP(src=SUB4, dst=FD4) / TCP(sport=32961, dport=443, flags="R"),  # old flow
        Ether() / IP(src=SUB4, dst=FD4) / TCP(sport=32962, dport=443, flags="S"),  # new: leak
        Ether() / IP(src=ALIAS4, dst=FD4) / ICMP(type=3, code=3) /
        IPerror(src=SUB4, dst=FD4) / TCPerror(sport=32961, dport=443),  # ICMP never excused
    ]
    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), pkts)
    report = scanner().scan_pcap(pcap, exclude={old})
    assert report.packets == 4 and report.excluded == 2
    assert [(h.packet, h.where) for h in report.hits] == [(2, "ipv4 source"),
                                                          (3, "quoted ipv4 source")]
    unexcused = scanner().scan_pcap(pcap)
    assert unexcused.excluded == 0 and len(unexcused.hits) == 4


def test_is_subscriber_and_ss_endpoints() -> None:
    s = scanner()
    assert s.is_subscriber(SUB4) and s.is_subscriber("2001:db8:1000:1ff::9")
    assert not s.is_subscriber(ALIAS4) and not s.is_subscriber("2001:db8:1000:200::1")
    assert _split_endpoint("198.19.0.10:443") == ("198.19.0.10", 443)
    assert _split_endpoint("[2001:db8:cd00::10]:443") == ("2001:db8:cd00::10", 443)
    assert _split_endpoint("[fe80::1%fd-cdn]:546") == ("fe80::1", 546)
    assert _split_endpoint("0.0.0.0:*") is None and _split_endpoint("*:*") is None
