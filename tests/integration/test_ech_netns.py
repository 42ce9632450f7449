"""ECH end to end across network namespaces: client, DNS, front door and origin are
separate nodes on one bridged segment (198.18.251.0/24, 2001:db8:fe98::/64).

Namespaces are named `ect<4 hex>-<role>`, recorded in a run registry before creation and
deleted in teardown (also by `cfrbench clean` after a crash). Needs root; under CI=true it
runs and never skips.
"""

from __future__ import annotations

import base64
import os
import secrets
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import paths
from testbed.lifecycle import RunRegistry
from testbed.netns import NetnsNode
from testbed.services.dns import DnsServer, ZoneData, site_names
from testbed.services.ech import (
    CdnDeployment,
    LoadGenerator,
    ech_config_list,
    generate_ech_keys,
    make_ca,
    rotate_and_publish,
    rotate_ech_keys,
)
from testbed.waiting import wait_until

pytestmark = pytest.mark.integration

V4 = {"client": "198.18.251.10", "front": "198.18.251.2", "origin": "198.18.251.3",
      "dns": "198.18.251.53"}
V6 = {"client": "2001:db8:fe98::10", "front": "2001:db8:fe98::2", "origin": "2001:db8:fe98::3",
      "dns": "2001:db8:fe98::53"}
EXTRA_CLIENT_V4 = ["198.18.251.11", "198.18.251.12"]
SECRET_SITE = "pineapple-pizza.example"


def _require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("integration tests need root and must run under CI=true")
        pytest.skip("needs root (network namespaces)")


def sh(*argv: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")


@dataclass
class Segment:
    registry: RunRegistry
    nodes: dict[str, NetnsNode]
    root: Path


@pytest.fixture(scope="module")
def segment() -> Iterator[Segment]:
    _require_root()
    paths.binary("echd")
    prefix = "ect" + secrets.token_hex(2)
    with RunRegistry("ech-netns-test", prefix=prefix) as reg:
        sw = reg.name("sw")
        reg.record_netns(sw)
        sh("ip", "netns", "add", sw)
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        nodes = {}
        for role in ("client", "dns", "front", "origin"):
            ns = reg.name(role)
            reg.record_netns(ns)
            sh("ip", "netns", "add", ns)
            port = f"p-{role}"
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
               "netns", sw)
            sh("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{V4[role]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{V6[role]}/64", "dev", "eth0", "nodad")
            if role == "client":
                for a in EXTRA_CLIENT_V4:
                    sh("ip", "-n", ns, "addr", "add", f"{a}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            nodes[role] = NetnsNode(role, ns, reg)
        yield Segment(reg, nodes, reg.make_tmpdir("ech"))
    # RunRegistry.close() killed the processes and deleted every namespace it recorded.


@dataclass
class Stack:
    seg: Segment
    ca: Path
    ca_dir: Path
    key_dir: Path
    dns: DnsServer
    names: list[str]

    def zone(self) -> ZoneData:
        return ZoneData(names=self.names, ech_config_list=ech_config_list(self.key_dir),
                        ipv4=[V4["front"]], ipv6=[V6["front"]],
                        ns_ipv4=[V4["dns"]], ns_ipv6=[V6["dns"]])

    def cdn(self, mode: str) -> CdnDeployment:
        n = self.seg.nodes
        return CdnDeployment(n["front"], self.ca_dir, self.key_dir, mode=mode,
                             origin_node=n["origin"], listen=["[::]:443"],
                             origin_listen="[::]:8443", origin_connect=f"{V4['origin']}:8443",
                             sites=50, named_sites=[SECRET_SITE])

    def load(self, family: int = 4) -> LoadGenerator:
        dns = f"{V4['dns']}:53" if family == 4 else f"[{V6['dns']}]:53"
        return LoadGenerator(self.seg.nodes["client"], dns=dns, ca_file=self.ca)


@pytest.fixture(scope="module")
def stack(segment: Segment) -> Iterator[Stack]:
    root = segment.root
    ca = make_ca(root / "ca")
    key_dir = root / "keys"
    generate_ech_keys(key_dir, "cdn.example", 1)
    names = site_names(50, [SECRET_SITE]) + ["cdn.example"]
    st = Stack(segment, ca, root / "ca", key_dir, None, names)  # type: ignore[arg-type]
    st.dns = DnsServer(segment.nodes["dns"], st.zone(), listen_v4=[V4["dns"]],
                       listen_v6=[V6["dns"]], workdir=root / "dns")
    st.dns.start()
    yield st
    st.dns.stop()


@pytest.mark.parametrize("mode", ["shared", "split"])
@pytest.mark.parametrize("family", [4, 6])
def test_ech_accepted_across_namespaces(stack: Stack, mode: str, family: int) -> None:
    src = V4["client"] if family == 4 else V6["client"]
    with stack.cdn(mode) as cdn:
        res = stack.load(family).run(sites=[SECRET_SITE], count=4, source=src, family=family,
                                     resumption=True)
        assert res.summary["errors"] == 0, (res.summary, res.stderr)
        assert all(r["ech_accepted"] for r in res.records)
        assert [r["resumed"] for r in res.records] == [False, True, True, True]
        assert {r["remote_addr"] for r in res.records} == {V4["front"] if family == 4
                                                           else V6["front"]}
        cdn.stop()
        seen = {r["client_random"]: r for r in cdn.front.records() if r["client_random"]}
        for t in res.records:
            r = seen[t["client_random"]]
            assert r["inner_sni"] == SECRET_SITE and r["outer_sni"] == "cdn.example"
            assert r["peer_addr"] == src and r["ech"] == "accepted" and r["mode"] == mode
            assert r["resumed"] == t["resumed"]
        if mode == "split":
            origin = [r for r in cdn.origin.records() if r["ech"] == "inner"]
            assert len(origin) == 4
            assert {r["peer_addr"] for r in origin} == {V4["front"]}  # not the client


def test_many_subscribers_one_process(stack: Stack) -> None:
    sources = [("alice", V4["client"]), ("bob", EXTRA_CLIENT_V4[0]), ("carol", EXTRA_CLIENT_V4[1])]
    with stack.cdn("shared") as cdn:
        res = stack.load().run(site_count=50, count=30, concurrency=3, sources=sources)
        assert res.summary["errors"] == 0, res.summary
        cdn.stop()
        peers = {r["client_random"]: r["peer_addr"] for r in cdn.front.records()}
        for t in res.records:
            assert peers[t["client_random"]] == dict(sources)[t["subscriber"]] == t["local_addr"]


def _client_hellos(pcap: Path) -> tuple[list[bytes], bytes]:
    """Client->server TCP payload of each port-443 stream (in sequence order), and all
    payload bytes of the capture."""
    from scapy.all import IP, TCP, IPv6, rdpcap

    streams: dict[tuple, dict[int, bytes]] = {}
    everything = bytearray()
    for pkt in rdpcap(str(pcap)):
        if TCP not in pkt:
            continue
        ip = pkt[IP] if IP in pkt else pkt[IPv6]
        payload = bytes(pkt[TCP].payload)
        everything += payload
        if pkt[TCP].dport == 443 and payload:
            key = (ip.src, pkt[TCP].sport)
            streams.setdefault(key, {})[pkt[TCP].seq] = payload
    out = []
    for segs in streams.values():
        out.append(b"".join(segs[s] for s in sorted(segs)))
    return out, bytes(everything)


def _parse_client_hello(stream: bytes) -> dict:
    """The outer ClientHello's SNI and extension types, from a client->server byte stream."""
    msg = b""
    off = 0
    while len(msg) < 4 or len(msg) < 4 + int.from_bytes(msg[1:4], "big"):
        assert stream[off] == 22, "first records must be handshake records"
        n = struct.unpack(">H", stream[off + 3:off + 5])[0]
        msg += stream[off + 5:off + 5 + n]
        off += 5 + n
    assert msg[0] == 1
    body = msg[4:]
    p = 2 + 32
    p += 1 + body[p]
    p += 2 + struct.unpack(">H", body[p:p + 2])[0]
    p += 1 + body[p]
    end = p + 2 + struct.unpack(">H", body[p:p + 2])[0]
    p += 2
    exts, sni = [], None
    while p < end:
        typ, n = struct.unpack(">HH", body[p:p + 4])
        data = body[p + 4:p + 4 + n]
        exts.append(typ)
        if typ == 0:
            sni = data[5:5 + struct.unpack(">H", data[3:5])[0]].decode()
        p += 4 + n
    return {"sni": sni, "extensions": exts}


@pytest.mark.parametrize("mode", ["shared", "split"])
def test_on_path_observer_sees_only_public_name(stack: Stack, mode: str, tmp_path: Path) -> None:
    """tcpdump on the client's link: every ClientHello carries encrypted_client_hello
    (0xfe0d) with outer SNI cdn.example, and the secret site name appears nowhere in the
    TLS traffic. (DNS is plaintext UDP here and does leak the name; DoH is out of scope,
    so the capture filter is the TLS port.)"""
    client = stack.seg.nodes["client"]
    pcap = tmp_path / "client.pcap"
    cap = client.spawn(["tcpdump", "-i", "eth0", "-U", "--immediate-mode", "-Z", "root", "-n",
                        "-s", "0", "-w", str(pcap),
                        "tcp port 443"], label="tcpdump", log=tmp_path / "tcpdump.log")
    try:
        def capturing() -> bool:
            assert cap.alive(), cap.log_tail(5)
            return "listening on" in cap.log_tail(5)

        wait_until(capturing, 10, 0.05, "tcpdump to listen", detail=lambda: cap.log_tail(5))
        with stack.cdn(mode):
            res = stack.load().run(sites=[SECRET_SITE], count=3, session=True, page_resources=3)
            assert res.summary["errors"] == 0
            time.sleep(0.5)
    finally:
        cap.stop()
    hellos, everything = _client_hellos(pcap)
    assert len(hellos) == 3
    for stream in hellos:
        ch = _parse_client_hello(stream)
        assert 0xFE0D in ch["extensions"]
        assert ch["sni"] == "cdn.example"
    assert SECRET_SITE.encode() not in pcap.read_bytes()
    assert b"pineapple" not in everything


def test_rotation_across_namespaces(stack: Stack) -> None:
    with stack.cdn("split") as cdn:
        rotate_ech_keys(stack.key_dir, "cdn.example")
        cdn.front.reload_keys()
        res = stack.load().run(sites=["site-0010.example"], count=1)  # DNS still old
        assert res.records[0]["error"].startswith("ECH rejected; retry configs")
        assert res.records[1]["ech_accepted"] and res.records[1]["attempt"] == 2
        stack.dns.reload(stack.zone())
        res = stack.load().run(sites=["site-0010.example"], count=2)
        assert res.summary["errors"] == 0 and res.summary["ech_accepted"] == 2
        # The operator's order (keys, front door, then DNS) with the old key kept as
        # retired: a client that looks up DNS afterwards goes straight through.
        new = rotate_and_publish(stack.key_dir, [cdn.front], stack.dns, keep_old=True)
        assert new == ech_config_list(stack.key_dir)
        res = stack.load().run(sites=["site-0011.example"], count=2)
        assert res.summary["errors"] == 0 and res.summary["ech_accepted"] == 2
        assert all(r["attempt"] == 1 for r in res.records)


_CURL = """
import base64, sys
import dns.message, dns.query, dns.rdatatype
from curl_cffi import Curl, CurlOpt, CurlInfo
site, dns_ip, front, ca = sys.argv[1:5]
q = dns.message.make_query(site + ".", dns.rdatatype.HTTPS)
ech = dns.query.udp(q, dns_ip, timeout=2).answer[0][0].params[5].ech
c = Curl()
body = bytearray()
c.setopt(CurlOpt.URL, f"https://{site}/")
c.setopt(CurlOpt.RESOLVE, [f"{site}:443:{front}"])
c.setopt(CurlOpt.CAINFO, ca)
c.setopt(CurlOpt.ECH, "ecl:" + base64.b64encode(ech).decode())
c.setopt(CurlOpt.WRITEFUNCTION, lambda b: body.extend(b) or len(b))
c.perform()
print(c.getinfo(CurlInfo.RESPONSE_CODE), body.decode()[:200])
"""


def test_curl_boringssl_across_namespaces(stack: Stack) -> None:
    with stack.cdn("split") as cdn:
        res = stack.seg.nodes["client"].run(
            [sys.executable, "-c", _CURL, SECRET_SITE, V4["dns"], V4["front"], str(stack.ca)],
            timeout=30)
        assert res.stdout.startswith("200") and "served by origin" in res.stdout
        cdn.stop()
        recs = [r for r in cdn.front.records() if r["ech"] == "accepted"]
        assert recs and recs[-1]["inner_sni"] == SECRET_SITE
        assert recs[-1]["peer_addr"] == V4["client"]


def test_dns_from_client_namespace(stack: Stack) -> None:
    script = ("import sys,dns.message,dns.query,dns.rdatatype,base64\n"
              "q=dns.message.make_query(sys.argv[1]+'.',dns.rdatatype.HTTPS)\n"
              "r=dns.query.udp(q,sys.argv[2],timeout=2)\n"
              "print(base64.b64encode(r.answer[0][0].params[5].ech).decode())\n")
    for server in (V4["dns"], V6["dns"]):
        res = stack.seg.nodes["client"].run([sys.executable, "-c", script, "site-0042.example",
                                             server])
        assert res.stdout.strip() == ech_config_list(stack.key_dir)
        assert base64.b64decode(res.stdout.strip())


def test_namespaces_are_ours(segment: Segment) -> None:
    for ns in segment.registry.state.netns:
        assert ns.startswith(segment.registry.prefix + "-")

