"""Hostile packets from a subscriber host (run inside a node with scapy).

Why scapy here (and not in flood.py): these are few, malformed, hand-shaped packets whose
exact bytes matter (bad checksums, overlapping fragments, extension-header chains, forged
quoted headers), which is what scapy is for; rate does not matter.

    python hostile.py --src4 A --src6 B --dst4 C --dst6 D --victim4 E --out FILE
                      [--spoof4 X,Y --spoof6 Z] [--kinds k1,k2]
Writes {"sent": {kind: count}, "spoofed_sources": [...]}.

The spoofed sources come from the caller (the address plan), so the front-door capture can
be searched for exactly them: a spoofed packet that got through is seen there, whatever
the relay's counters say.
"""

from __future__ import annotations

import argparse
import json
import random

from scapy.all import (  # type: ignore[import-untyped]
    ICMP,
    IP,
    TCP,
    UDP,
    ICMPv6DestUnreach,
    IPerror,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
    TCPerror,
    UDPerror,
    fragment,
    send,
)


def build(a: argparse.Namespace) -> dict[str, list]:
    """Every hostile kind, keyed by name, so the caller can compare counters per kind."""
    sport = random.randint(20000, 60000)
    kinds: dict[str, list] = {}
    kinds["bad_tcp_checksum"] = [IP(src=a.src4, dst=a.dst4) / TCP(sport=sport + i, dport=443,
                                 flags="S", chksum=0xDEAD) for i in range(5)]
    kinds["bad_udp_checksum"] = [IP(src=a.src4, dst=a.dst4) / UDP(sport=sport, dport=9797,
                                 chksum=0xBEEF) / Raw(b"x" * 32) for _ in range(5)]
    big = IP(src=a.src4, dst=a.dst4, id=4242) / UDP(sport=sport, dport=9797) / Raw(b"F" * 200)
    kinds["tiny_fragments"] = fragment(big, fragsize=8)
    ov1 = IP(src=a.src4, dst=a.dst4, id=4343, flags="MF", frag=0, proto=17) / Raw(
        bytes(UDP(sport=sport, dport=9797, len=48)) + b"A" * 24)
    ov2 = IP(src=a.src4, dst=a.dst4, id=4343, frag=2, proto=17) / Raw(b"B" * 24)  # overlaps
    kinds["overlapping_fragments"] = [ov1, ov2]
    kinds["v6_extension_chain"] = [
        IPv6(src=a.src6, dst=a.dst6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(addresses=[]) / IPv6ExtHdrDestOpt() / UDP(sport=sport, dport=9797)
        / Raw(b"ext"),
        IPv6(src=a.src6, dst=a.dst6) / IPv6ExtHdrFragment(id=77, m=1, offset=0)
        / IPv6ExtHdrDestOpt() / Raw(b"z" * 8),
    ]
    kinds["unknown_protocol"] = [IP(src=a.src4, dst=a.dst4, proto=253) / Raw(b"?" * 20),
                                 IPv6(src=a.src6, dst=a.dst6, nh=253) / Raw(b"?" * 20)]
    kinds["forged_icmp_error"] = [
        # a port-unreachable quoting a flow the relay never saw, with the real subscriber
        # address inside: untranslatable, so it must never reach the front door as is
        IP(src=a.src4, dst=a.dst4) / ICMP(type=3, code=3)
        / IPerror(src=a.dst4, dst=a.src4) / UDPerror(sport=9797, dport=sport),
        IP(src=a.src4, dst=a.dst4) / ICMP(type=11, code=0)
        / IPerror(src=a.src4, dst=a.dst4) / TCPerror(sport=sport, dport=443),
        IP(src=a.src4, dst=a.dst4) / ICMP(type=3, code=4)
        / IPerror(src=a.victim4, dst=a.dst4) / TCPerror(sport=sport, dport=443),
        IPv6(src=a.src6, dst=a.dst6) / ICMPv6DestUnreach(code=4)
        / IPv6(src=a.dst6, dst=a.src6) / UDP(sport=9797, dport=sport),
    ]
    kinds["spoofed_source"] = [IP(src=src, dst=a.dst4) / TCP(sport=sport + i, dport=443,
                                                             flags="S")
                               for i, src in enumerate(_split(a.spoof4))]
    kinds["spoofed_source_v6"] = [IPv6(src=src, dst=a.dst6) / TCP(sport=sport + i, dport=443,
                                                                  flags="S")
                                  for i, src in enumerate(_split(a.spoof6))]
    kinds["ttl_1"] = [IP(src=a.src4, dst=a.dst4, ttl=1) / UDP(sport=sport, dport=9797)
                      / Raw(b"ttl"), IPv6(src=a.src6, dst=a.dst6, hlim=1)
                      / UDP(sport=sport, dport=9797) / Raw(b"ttl")]
    return kinds


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("src4", "src6", "dst4", "dst6", "victim4", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--spoof4", default="", help="comma-separated spoofed IPv4 sources")
    ap.add_argument("--spoof6", default="", help="comma-separated spoofed IPv6 sources")
    ap.add_argument("--kinds", default="", help="comma-separated kinds to send (default: all)")
    args = ap.parse_args()
    only = set(_split(args.kinds))
    sent: dict[str, int] = {}
    for kind, pkts in build(args).items():
        if (only and kind not in only) or not pkts:
            continue
        send(pkts, verbose=False)
        sent[kind] = len(pkts)
    with open(args.out, "w") as fh:
        json.dump({"sent": sent, "spoofed_sources": _split(args.spoof4) + _split(args.spoof6)},
                  fh)


if __name__ == "__main__":
    main()
