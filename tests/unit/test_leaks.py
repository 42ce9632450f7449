"""The leak scanner on crafted frames (scapy), no root.

Every benchmark run's "no leak" verdict rests on this scanner: it must find a subscriber
address wherever it hides (outer header, IPv4 option, ICMP quote, nested header at any
depth, embedded in an IPv6 address, anywhere in the bytes), find nothing in aliased
traffic, and set aside only payload-free FIN/RST/ACK of flows that predate a capture.
Each category test plants one address and asserts the category it is reported under,
because the positive control demands a hit per category."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPerror,
    IPOption_LSRR,
    IPOption_RR,
    TCPerror,
    UDPerror,
)
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6TimeExceeded, IPerror6, IPv6
from scapy.layers.l2 import GRE, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from benchmarks.leakcheck import _split_endpoint, ss_peer_filters, verdict
from testbed.addressing import AddressPlan
from testbed.errors import ParameterError
from testbed.ipwalk import LINK_RAW
from testbed.leaks import CONTROL_CATEGORIES, LeakScanner, flow_key, sources_seen

PLAN = AddressPlan()
SUBS = PLAN.subscribers(3)
SUB4, SUB6, SEG6 = str(SUBS[0].v4), str(SUBS[0].v6), str(SUBS[0].v6_segment)
TEMP6 = str(SUBS[1].v6_in_first_64(0x1234_5678_9ABC))  # a temporary address in a /56
ALIAS4, ALIAS6 = str(PLAN.alias_pool_v4(3)[2]), str(PLAN.alias_pool_v6(2)[1])
FD4, FD6 = (str(a) for a in PLAN.front_door())
OTHER4 = str(PLAN.service("providers", 77)[0])  # not a subscriber


def scanner() -> LeakScanner:
    return LeakScanner.for_subscribers(SUBS)


def frame(pkt) -> bytes:
    return bytes(Ether() / pkt)


def found(pkt) -> list[tuple[str, str, str]]:
    """(category, form, address) of every hit in one crafted packet."""
    return [(h.category, h.form, h.address) for h in scanner().scan_frame(0, frame(pkt))]


def test_outer_ipv4_both_directions() -> None:
    s = scanner()
    up = s.scan_frame(0, frame(IP(src=SUB4, dst=FD4) / TCP(sport=40000, dport=443)))
    down = s.scan_frame(1, frame(IP(src=FD4, dst=SUB4) / TCP(sport=443, dport=40000)))
    assert [(h.where, h.category) for h in up] == [("ipv4 source", "ipv4-outer")]
    assert [(h.where, h.category) for h in down] == [("ipv4 destination", "ipv4-outer")]


def test_outer_ipv6_prefix_temporary_and_access_segment_addresses() -> None:
    assert found(IPv6(src=SUB6, dst=FD6) / UDP()) == [
        ("ipv6-outer", "prefix", str(SUBS[0].v6_prefix))]
    assert found(IPv6(src=FD6, dst=TEMP6) / UDP()) == [
        ("ipv6-outer", "prefix", str(SUBS[1].v6_prefix))]
    # the next-hop address on the access segment is outside the /56 but still the subscriber
    assert found(IPv6(src=SEG6, dst=FD6) / UDP()) == [("ipv6-outer", "address", SEG6)]


def test_ipv4_options_are_read() -> None:
    rr = IP(src=ALIAS4, dst=FD4, options=[IPOption_RR(routers=[OTHER4, SUB4])]) / UDP()
    assert found(rr) == [("ipv4-option", "address", SUB4)]
    lsrr = IP(src=ALIAS4, dst=FD4, options=[IPOption_LSRR(routers=[str(SUBS[2].v4)])]) / UDP()
    assert found(lsrr) == [("ipv4-option", "address", str(SUBS[2].v4))]


def test_icmp_quoted_ipv4() -> None:
    pkt = IP(src=ALIAS4, dst=FD4) / ICMP(type=3, code=3) / IPerror(src=SUB4, dst=FD4) / \
        UDPerror(sport=5000, dport=9)
    hits = scanner().scan_frame(0, frame(pkt))
    assert [(h.where, h.category) for h in hits] == [("quoted ipv4 source", "icmp-quoted-ipv4")]


def test_icmp_quoted_ipv6() -> None:
    pkt = IPv6(src=ALIAS6, dst=FD6) / ICMPv6DestUnreach(code=4) / IPerror6(src=SUB6, dst=FD6)
    hits = scanner().scan_frame(0, frame(pkt))
    assert [(h.where, h.category) for h in hits] == [("quoted ipv6 source", "icmp-quoted-ipv6")]


def test_truncated_quote_still_yields_its_source() -> None:
    pkt = IP(src=ALIAS4, dst=FD4) / ICMP(type=11) / IPerror(src=SUB4, dst=FD4)
    cut = frame(pkt)[:14 + 20 + 8 + 16]  # the quote ends right after its source address
    assert [h.category for h in scanner().scan_frame(0, cut)] == ["icmp-quoted-ipv4"]


def test_nested_headers_at_any_depth() -> None:
    # ICMP error quoting an ICMP error quoting the subscriber's packet (depth 2)
    inner = IP(src=ALIAS4, dst=FD4) / ICMP(type=3, code=3) / IP(src=SUB4, dst=FD4) / UDP()
    icmp_in_icmp = IP(src=ALIAS4, dst=FD4) / ICMP(type=11) / inner
    hits = scanner().scan_frame(0, frame(icmp_in_icmp))
    assert [(h.where, h.category) for h in hits] == [
        ("quoted ipv4 source [icmp > icmp]", "icmp-quoted-ipv4")]
    # ICMPv6 in ICMPv6, with the subscriber only in the innermost header
    v6 = IPv6(src=ALIAS6, dst=FD6) / ICMPv6TimeExceeded() / IPv6(src=ALIAS6, dst=FD6) / \
        ICMPv6DestUnreach() / IPv6(src=FD6, dst=SUB6) / UDP()
    assert [h.category for h in scanner().scan_frame(0, frame(v6))] == ["icmp-quoted-ipv6"]
    # IP-in-IP, 6in4, GRE, three levels deep
    ipip = IP(src=ALIAS4, dst=FD4) / IP(src=ALIAS4, dst=FD4) / IP(src=SUB4, dst=FD4) / UDP()
    assert found(ipip) == [("tunnelled-ipv4", "address", SUB4)]
    six_in_four = IP(src=ALIAS4, dst=FD4, proto=41) / IPv6(src=SUB6, dst=FD6) / UDP()
    assert found(six_in_four) == [("tunnelled-ipv6", "prefix", str(SUBS[0].v6_prefix))]
    gre = IP(src=ALIAS4, dst=FD4) / GRE() / IP(src=FD4, dst=SUB4) / UDP()
    assert found(gre) == [("tunnelled-ipv4", "address", SUB4)]


@pytest.mark.parametrize(("address", "form"), [
    (f"::ffff:{SUB4}", "::ffff:-mapped"),
    (f"::{SUB4}", "v4-compatible"),
    (f"64:ff9b::{SUB4}", "nat64 64:ff9b::/96"),
    ("2002:{:02x}{:02x}:{:02x}{:02x}::1".format(*ipaddress.IPv4Address(SUB4).packed), "6to4"),
    (str(ipaddress.IPv6Address(  # 2001:0:<server>:<flags>:<port ^ ffff>:<client ^ ffffffff>
        b"\x20\x01\x00\x00" + ipaddress.IPv4Address(FD4).packed + b"\x80\x00\xff\xfe"
        + bytes(b ^ 0xFF for b in ipaddress.IPv4Address(SUB4).packed))), "teredo client"),
    (f"2001:db8:cd00::5efe:{SUB4}", "isatap"),
])
def test_ipv4_embedded_in_ipv6(address: str, form: str) -> None:
    # the address is rebuilt from its text, so a typo above would fail here, not pass
    addr = str(ipaddress.IPv6Address(address))
    assert (("ipv6-outer", form, SUB4)) in found(IPv6(src=addr, dst=FD6) / UDP())
    # and the same 16 bytes anywhere in a payload are found by the whole-frame search
    payload = IP(src=ALIAS4, dst=FD4) / UDP() / Raw(b"x" * 33 + ipaddress.IPv6Address(addr).packed)
    assert ("frame-bytes", form, SUB4) in found(payload)


def test_nat64_local_use_prefix_rfc6052_layout() -> None:
    raw = bytearray(ipaddress.IPv6Address("64:ff9b:1::").packed)
    v4 = ipaddress.IPv4Address(SUB4).packed
    raw[6:8], raw[9:11] = v4[:2], v4[2:]  # /48: bits 48-63, then 72-87 (u octet skipped)
    addr = str(ipaddress.IPv6Address(bytes(raw)))
    assert ("ipv6-outer", "nat64 64:ff9b:1::/48", SUB4) in found(IPv6(src=addr, dst=FD6) / UDP())


def test_ipv6_prefix_anywhere_in_the_frame() -> None:
    blob = ipaddress.IPv6Address(SUB6).packed
    hits = scanner().scan_frame(0, frame(IP(src=ALIAS4, dst=FD4) / UDP() / Raw(b"ab" + blob)))
    assert [(h.category, h.form) for h in hits] == [("frame-bytes", "prefix")]


def test_aliased_and_random_traffic_is_clean() -> None:
    s = scanner()
    assert s.scan_frame(0, frame(IP(src=ALIAS4, dst=FD4) / TCP(sport=1, dport=443) /
                                 (b"\x01" * 200))) == []
    assert s.scan_frame(1, frame(IPv6(src=ALIAS6, dst=FD6) / UDP(sport=1, dport=443))) == []
    icmp = IPv6(src=ALIAS6, dst=FD6) / ICMPv6DestUnreach() / IPerror6(src=ALIAS6, dst=FD6)
    assert s.scan_frame(2, frame(icmp)) == []
    rng = random.Random(7)  # ciphertext-like payloads: the whole-frame search never matches
    head = frame(IP(src=ALIAS4, dst=FD4, len=240) / TCP())
    assert [i for i in range(5000) if s.scan_frame(i, head + rng.randbytes(200))] == []


def test_raw_ip_link_type() -> None:
    raw = bytes(IP(src=SUB4, dst=FD4) / UDP())
    assert [h.category for h in scanner().scan_frame(0, raw, LINK_RAW)] == ["ipv4-outer"]


def test_flow_key_has_no_direction() -> None:
    assert flow_key("tcp", FD4, 443, SUB4, 40000) == flow_key("tcp", SUB4, 40000, FD4, 443)
    assert flow_key("tcp", FD4, 443, SUB4, 40000) != flow_key("udp", FD4, 443, SUB4, 40000)


def test_flow_key_of_a_dual_stack_socket_matches_its_ipv4_packets(tmp_path: Path) -> None:
    # `ss` on a [::]:443 listener lists an IPv4 peer as ::ffff:a.b.c.d
    from_ss = flow_key("tcp", f"::ffff:{FD4}", 443, f"::ffff:{SUB4}", 40000)
    assert from_ss == flow_key("tcp", SUB4, 40000, FD4, 443)
    pcap = tmp_path / "m.pcap"
    wrpcap(str(pcap), [Ether() / IP(src=SUB4, dst=FD4) / TCP(sport=40000, dport=443,
                                                             flags="FA")])
    assert scanner().scan_pcap(pcap, preexisting={from_ss}).set_aside == 1


def test_only_payload_free_fin_rst_ack_of_preexisting_flows_are_set_aside(tmp_path: Path
                                                                          ) -> None:
    old = flow_key("tcp", FD4, 443, SUB4, 32961)
    pkts = [
        IP(src=FD4, dst=SUB4) / TCP(sport=443, dport=32961, flags="FA"),  # 0 set aside
        IP(src=SUB4, dst=FD4) / TCP(sport=32961, dport=443, flags="R"),  # 1 set aside
        IP(src=SUB4, dst=FD4) / TCP(sport=32961, dport=443, flags="A"),  # 2 set aside
        IP(src=SUB4, dst=FD4) / TCP(sport=32961, dport=443, flags="PA") / Raw(b"data"),  # 3
        IP(src=SUB4, dst=FD4) / TCP(sport=32961, dport=443, flags="S"),  # 4 new SYN, same 4-tuple
        IP(src=SUB4, dst=FD4) / TCP(sport=32961, dport=443, flags="FA") / Raw(b"x"),  # 5 data
        IP(src=SUB4, dst=FD4) / UDP(sport=32961, dport=443),  # 6 udp, same ports
        IP(src=SUB4, dst=FD4) / TCP(sport=32962, dport=443, flags="FA"),  # 7 another flow
        IP(src=ALIAS4, dst=FD4) / ICMP(type=3, code=3) /
        IPerror(src=SUB4, dst=FD4) / TCPerror(sport=32961, dport=443),  # 8 ICMP never excused
    ]
    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), [Ether() / p for p in pkts])
    report = scanner().scan_pcap(pcap, preexisting={old})
    assert report.packets == 9 and report.set_aside == 3
    assert sorted({h.packet for h in report.hits}) == [3, 4, 5, 6, 7, 8]
    assert report.as_dict()["set_aside"] == 3 and report.as_dict()["hits"] == 6
    everything = scanner().scan_pcap(pcap)
    assert everything.set_aside == 0 and len({h.packet for h in everything.hits}) == 9


def test_report_counts_every_control_category(tmp_path: Path) -> None:
    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), [Ether() / IP(src=SUB4, dst=FD4) / UDP(),
                       Ether() / IP(src=SUB4, dst=FD4) / UDP()])
    cats = scanner().scan_pcap(pcap).categories()
    assert set(CONTROL_CATEGORIES) <= set(cats)
    assert cats["ipv4-outer"] == 2 and cats["ipv6-outer"] == 0


def test_spoofed_sources_are_found_at_any_depth(tmp_path: Path) -> None:
    pcap = tmp_path / "s.pcap"
    wrpcap(str(pcap), [Ether() / IP(src=ALIAS4, dst=FD4) / TCP(),
                       Ether() / IP(src=OTHER4, dst=FD4) / TCP(flags="S"),
                       Ether() / IP(src=ALIAS4, dst=FD4) / ICMP(type=3) /
                       IP(src=FD4, dst=OTHER4) / UDP()])
    assert sources_seen(pcap, [OTHER4]) == [(1, OTHER4)]
    assert sources_seen(pcap, [SUB4]) == []


def test_is_subscriber_and_ss_endpoints() -> None:
    s = scanner()
    assert s.is_subscriber(SUB4) and s.is_subscriber(TEMP6) and s.is_subscriber(SEG6)
    assert s.is_subscriber(f"::ffff:{SUB4}")
    assert not s.is_subscriber(ALIAS4) and not s.is_subscriber(ALIAS6)
    assert not s.is_subscriber(str(SUBS[2].v6_prefix.network_address + (1 << 72)))
    assert _split_endpoint("198.19.0.10:443") == ("198.19.0.10", 443)
    assert _split_endpoint("[2001:db8:cd00::10]:443") == ("2001:db8:cd00::10", 443)
    assert _split_endpoint("[fe80::1%fd-cdn]:546") == ("fe80::1", 546)
    assert _split_endpoint("0.0.0.0:*") is None and _split_endpoint("*:*") is None


def test_bad_prefixes_raise_typed_errors() -> None:
    with pytest.raises(ParameterError):
        LeakScanner([], ["::/0"])
    with pytest.raises(ParameterError):
        LeakScanner([], [], nat64_prefixes=["64:ff9b::/80"])


def _block(control: dict[str, int], hits: int = 0, set_aside: int = 0) -> dict:
    return {"control": {"hits_by_category": control}, "hits": hits, "set_aside_limit": 8,
            "policies": {"cfr-flow": {"set_aside": set_aside}}}


def test_leak_check_verdict_needs_every_control_category_and_a_bounded_set_aside() -> None:
    full = dict.fromkeys(CONTROL_CATEGORIES, 3)
    ok = verdict(_block(full))
    assert ok["passed"] and ok["valid"] and ok["control_missing"] == []
    no_quoted6 = {**full, "icmp-quoted-ipv6": 0}
    v = verdict(_block(no_quoted6))
    assert not v["valid"] and not v["passed"] and v["control_missing"] == ["icmp-quoted-ipv6"]
    assert not verdict(_block(full, hits=1))["passed"]
    assert verdict(_block(full, set_aside=8))["passed"]
    over = verdict(_block(full, set_aside=9))
    assert not over["passed"] and over["set_aside_over_limit"] == ["cfr-flow"]


def test_ss_filters_use_ss_syntax_and_cover_every_subscriber_block() -> None:
    f = ss_peer_filters(PLAN, FD4, FD6)
    nets = [PLAN.nets[n] for n in ("subscribers_v4", "subscribers_v6", "access_segment_v6")]
    assert f["front_door"][:3] == [str(n) for n in nets]  # prefixes: never bracketed
    v4 = PLAN.nets["subscribers_v4"]
    assert f["front_door"][3] == f"::ffff:{v4.network_address}/{96 + v4.prefixlen}"
    assert f["subscribers"] == [FD4, f"[{FD6}]"]  # a single IPv6 address: bracketed
