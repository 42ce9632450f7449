"""ICMP errors and PMTUD through the relay, no subscriber address upstream, no payload
changes: the relay forwards, it never terminates or inspects."""

from __future__ import annotations

import ipaddress
import json

import pytest

from testbed.leaks import LeakScanner
from tests.integration.relay_fixtures import (  # noqa: F401
    find_leaks,
    lab,
    packets,
    relay,
    tcp_stream,
)

pytestmark = pytest.mark.integration


def _needles(lab) -> dict[str, bytes]:  # noqa: F811
    p = lab.plan
    out = {}
    for name in ("sub1", "sub2"):
        v4 = getattr(p, f"{name}_v4")
        v6 = getattr(p, f"{name}_v6")
        out[f"{name} {v4}"] = ipaddress.ip_address(v4).packed
        out[f"{name} {v6}"] = ipaddress.ip_address(v6).packed
        out[f"{name} /56 prefix"] = ipaddress.ip_address(v6).packed[:7]
    return out


def _scanner(lab) -> LeakScanner:  # noqa: F811
    p = lab.plan
    return LeakScanner([p.sub1_v4, p.sub2_v4], [p.sub1_p6, p.sub2_p6])


@pytest.mark.parametrize("policy", ["cfr-flow", "cfr-epoch", "nptv6"])
def test_icmp_errors_pmtud_and_no_leak_upstream(relay, lab, policy):  # noqa: F811
    from scapy.layers.inet import ICMP, IP, IPerror
    from scapy.layers.inet6 import ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPerror6, IPv6

    relay.apply(policy)
    p = lab.plan
    results = {}
    with lab.capture("fd", "eth0", f"fd-{policy}.pcap") as far, \
            lab.capture("tr", "dnl", f"up-{policy}.pcap") as up:
        for fam, dst, tr in (("v4", p.fd_v4, p.tr_v4), ("v6", p.fd_v6, p.tr_v6)):
            # errors from the far side and from transit reach the subscriber ...
            r = json.loads(lab.py("sub1", "icmp", "--dst", dst, "--big", "1440"))
            results[fam] = r
            assert r["port_unreachable"] and r["port_unreachable"]["errno"] == 111, r
            assert r["port_unreachable"]["offender"] == dst
            assert r["time_exceeded"] and r["time_exceeded"]["offender"] == tr, r
            assert r["packet_too_big"] and r["packet_too_big"]["info"] == 1400, r
            assert r["packet_too_big"]["offender"] == tr
            # ... and PMTUD makes a large upload through the 1400-byte link complete
            bulk = json.loads(lab.py("sub1", "bulk", "--dst", dst, "--bytes", "3000000"))
            assert bulk["ok"], bulk
            # errors the relay router itself sends upstream: PTB for sub2's 1280-byte
            # access link, time exceeded for a reply whose hop limit runs out at the edge
            lab.py("sub2", "udp", "--dst", dst, "--cmd", "PEER", "--cmd", "BIG 1320",
                   "--cmd", "TTL 3")
    drops = relay.drops()
    assert drops["drop_leak_guard"] == 0, "the kernel should have translated every error"
    scanner = _scanner(lab)
    for path in (far, up):
        pk = packets(path)
        assert len(pk) > 100
        leaks = find_leaks(pk, _needles(lab))
        assert not leaks, f"{path.name}: subscriber address bytes upstream: {leaks}"
        # the run's leak scanner too: every nested header, options, embedded forms
        report = scanner.scan_pcap(path)
        assert report.packets == len(pk) and not report.hits, report.as_dict()
    # the edge-generated errors really were sent (from the alias, quoting the alias)
    pk = packets(far)
    frag_needed = [x for x in pk if x.haslayer(ICMP) and x[ICMP].type == 3
                   and x[ICMP].code == 4 and x.haslayer(IPerror)]
    ttl4 = [x for x in pk if x.haslayer(ICMP) and x[ICMP].type == 11 and x[IP].dst == p.fd_v4]
    ptb6 = [x for x in pk if x.haslayer(ICMPv6PacketTooBig) and x[ICMPv6PacketTooBig].mtu == 1280]
    ttl6 = [x for x in pk if x.haslayer(ICMPv6TimeExceeded) and x[IPv6].dst == p.fd_v6]
    assert frag_needed and ttl4 and ptb6 and ttl6, (len(frag_needed), len(ttl4), len(ptb6),
                                                    len(ttl6))
    for x in frag_needed:
        assert x[IP].src == x[IPerror].dst and x[IP].src != p.sub2_v4
    for x in ptb6:
        assert x[IPv6].src == x[IPerror6].dst and x[IPv6].src != p.sub2_v6


def test_leak_guard_drops_untranslatable_errors(relay, lab):  # noqa: F811
    """Defence in depth: an ICMP error quoting a subscriber address that conntrack cannot
    translate (here forged on the edge itself) never leaves the egress."""
    import sys

    relay.apply("cfr-flow")
    p = lab.plan
    # Raw IP sockets go through the router's output path (netfilter); scapy's default
    # packet sockets would bypass it. A netfilter drop of a local packet returns EPERM.
    script = lab.tmp / "forge_icmp.py"
    script.write_text(f"""
import socket
from scapy.all import ICMP, IP, UDP, ICMPv6DestUnreach, IPv6
v4 = bytes(ICMP(type=3, code=3) / IP(src="{p.fd_v4}", dst="{p.sub1_v4}") / UDP(dport=5555))
v6 = bytes(ICMPv6DestUnreach(code=4) / IPv6(src="{p.fd_v6}", dst="{p.sub1_v6}") / UDP(dport=5555))
refused = 0
for fam, proto, data, dst in ((socket.AF_INET, socket.IPPROTO_ICMP, v4, "{p.fd_v4}"),
                              (socket.AF_INET6, socket.IPPROTO_ICMPV6, v6, "{p.fd_v6}")):
    s = socket.socket(fam, socket.SOCK_RAW, proto)
    try:
        s.sendto(data, (dst, 0))
    except PermissionError:
        refused += 1
print(refused)
""")
    before = relay.drops()["drop_leak_guard"]
    with lab.capture("tr", "dnl", "guard.pcap") as up:
        out = lab.cmd("edge", sys.executable, str(script)).stdout.strip()
    assert out == "2", out
    assert relay.drops()["drop_leak_guard"] == before + 2
    assert not find_leaks(packets(up), _needles(lab))
    assert not _scanner(lab).scan_pcap(up).hits


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_payload_bytes_identical_on_both_sides(relay, lab, fam):  # noqa: F811
    relay.apply("cfr-flow")
    p = lab.plan
    dst = p.fd_v4 if fam == "v4" else p.fd_v6
    with lab.capture("sub1", "eth0", f"sub-{fam}.pcap") as sub_pcap, \
            lab.capture("fd", "eth0", f"far-{fam}.pcap") as far_pcap:
        bulk = json.loads(lab.py("sub1", "bulk", "--dst", dst, "--bytes", "400000"))
    assert bulk["ok"], bulk
    local_addr, local_port = bulk["local"][0], bulk["local"][1]
    alias, alias_port = bulk["reply"][5], int(bulk["reply"][6])
    assert alias != local_addr
    sub_side = packets(sub_pcap)
    far_side = packets(far_pcap)
    up_sub = tcp_stream(sub_side, local_addr, local_port, dst, 7002)
    up_far = tcp_stream(far_side, alias, alias_port, dst, 7002)
    down_sub = tcp_stream(sub_side, dst, 7002, local_addr, local_port)
    down_far = tcp_stream(far_side, dst, 7002, alias, alias_port)
    from labs.labtools import pattern

    assert up_sub == up_far == pattern(400000)
    assert down_sub == down_far and down_sub.startswith(b"LEN 400000 SHA ")
