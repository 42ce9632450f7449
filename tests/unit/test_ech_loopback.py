"""ECH front door, DNS and load generator end to end on loopback (no namespaces).

Real processes only: BIND 9 publishes the HTTPS records, `echd serve` / `echd front` +
`echd origin` terminate or forward TLS, `echd load` (Go) and curl (BoringSSL, through
curl_cffi) are the clients. Ports are picked free per module so parallel runs and other
agents on the machine do not collide.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.rdatatype
import pytest

from testbed import paths
from testbed.services import HostNode
from testbed.services.dns import DnsServer, ZoneData, site_names
from testbed.services.ech import (
    CdnDeployment,
    FrontDoor,
    LoadGenerator,
    ech_config_list,
    generate_ech_keys,
    make_ca,
    rotate_ech_keys,
)
from testbed.waiting import WaitTimeout, wait_until

NAMED = ["pineapple-pizza.example", "anchovy-fans.test"]
NSITES = 20

pytestmark = pytest.mark.skipif(shutil.which("named") is None, reason="BIND 9 not installed")


def free_port() -> int:
    """A TCP port free on both 127.0.0.1 and ::1 right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6) as s6:
                s6.bind(("::1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


class Env:
    """CA, keys and DNS shared by the module; each test starts its own front door."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        self.node = HostNode("host")
        self.ca_dir = root / "ca"
        self.ca = make_ca(self.ca_dir)
        self.key_dir = root / "keys"
        generate_ech_keys(self.key_dir, "cdn.example", 1)
        self.port = free_port()
        self.names = site_names(NSITES, NAMED) + ["cdn.example"]
        self.dns = DnsServer(self.node, self.zone(), listen_v4=["127.0.0.1"], listen_v6=["::1"],
                             port=free_port(), control_port=free_port(), workdir=root / "dns")
        self.dns.start()

    def zone(self) -> ZoneData:
        return ZoneData(names=self.names, ech_config_list=ech_config_list(self.key_dir),
                        ipv4=["127.0.0.1"], ipv6=["::1"], port=self.port)

    def cdn(self, mode: str, **kw) -> CdnDeployment:
        port = free_port()
        self.n += 1
        return CdnDeployment(self.node, self.ca_dir, self.key_dir, mode=mode,
                             workdir=self.root / f"cdn{self.n}-{mode}",
                             listen=[f"127.0.0.1:{self.port}", f"[::1]:{self.port}"],
                             origin_listen=f"127.0.0.1:{port}", sites=NSITES,
                             named_sites=NAMED, **kw)

    def load(self, tag: str) -> LoadGenerator:
        return LoadGenerator(self.node, dns=self.dns.address, ca_file=self.ca,
                             workdir=self.root / f"load-{tag}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    paths.binary("echd")  # clear error if not built
    e = Env(tmp_path_factory.mktemp("ech"))
    yield e
    e.dns.stop()


def wait_records(front: FrontDoor, n: int, timeout: float = 5.0) -> list[dict]:
    """Front-door log records of connections that sent something (port probes filtered),
    in accept order."""
    recs: list[dict] = []

    def enough() -> bool:
        recs[:] = [r for r in front.records()
                   if r["error"] != "connection closed before a ClientHello"]
        return len(recs) >= n

    with contextlib.suppress(WaitTimeout):  # the caller's assertions say what is missing
        wait_until(enough, timeout, 0.05, f"{n} front-door records")
    # Lines are written when connections close; accept order is conn_id order.
    return sorted(recs, key=lambda r: r["conn_id"])


def test_dns_https_record_carries_current_config(env: Env) -> None:
    """dnspython sees exactly the front door's advertised ECHConfigList in the HTTPS RR."""
    answer = env.dns.query_https("pineapple-pizza.example")
    rrs = [rr for rrset in answer.answer if rrset.rdtype == dns.rdatatype.HTTPS for rr in rrset]
    assert len(rrs) == 1
    ech = rrs[0].params[5].ech
    assert base64.b64encode(ech).decode() == ech_config_list(env.key_dir)
    alpn = [a.decode() for a in rrs[0].params[1].ids]
    assert alpn == ["h2", "http/1.1"]


@pytest.mark.parametrize("mode", ["shared", "split"])
@pytest.mark.parametrize("family", [4, 6])
def test_ech_accepted_end_to_end(env: Env, mode: str, family: int) -> None:
    with env.cdn(mode) as cdn:
        src = "127.0.0.1" if family == 4 else "::1"
        res = env.load(f"e2e-{mode}-{family}").run(
            sites=["pineapple-pizza.example"], count=5, concurrency=2, source=src, family=family)
        assert res.summary["count"] == 5 and res.summary["errors"] == 0, res.summary
        assert all(r["ech_accepted"] and r["status"] == 200 for r in res.records)
        for r in res.records:
            for phase in ("dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "total_ms"):
                assert r[phase] is not None and r[phase] >= 0
        cdn.stop()  # flushes every connection's log line
        recs = {r["client_random"]: r for r in wait_records(cdn.front, 5)}
        for truth in res.records:
            seen = recs[truth["client_random"]]  # the join key
            assert seen["ech"] == "accepted"
            assert seen["inner_sni"] == "pineapple-pizza.example"
            assert seen["outer_sni"] == "cdn.example"
            assert seen["mode"] == mode
            assert seen["peer_addr"] == src == truth["local_addr"]
            assert seen["peer_port"] == truth["local_port"]
        if mode == "split":
            origin = cdn.origin.records()
            served = [r for r in origin if r["ech"] == "inner"]
            assert len(served) == 5
            # The origin sees the front door, not the client.
            assert {r["peer_addr"] for r in served} == {"127.0.0.1"}
            client_ports = {t["local_port"] for t in res.records}
            assert {r["peer_port"] for r in served}.isdisjoint(client_ports)


@pytest.mark.parametrize("mode", ["shared", "split"])
def test_curl_boringssl_client_ech_accepted(env: Env, mode: str) -> None:
    """A non-Go ECH client: libcurl with BoringSSL (curl_cffi), ECHConfigList from DNS."""
    curl_cffi = pytest.importorskip("curl_cffi")
    from curl_cffi import Curl, CurlOpt

    answer = env.dns.query_https("site-0007.example")
    ech = next(rr for rrset in answer.answer for rr in rrset).params[5].ech
    with env.cdn(mode) as cdn:
        c = Curl()
        body = bytearray()
        c.setopt(CurlOpt.URL, f"https://site-0007.example:{env.port}/")
        c.setopt(CurlOpt.RESOLVE, [f"site-0007.example:{env.port}:127.0.0.1"])
        c.setopt(CurlOpt.CAINFO, str(env.ca))
        c.setopt(CurlOpt.ECH, "ecl:" + base64.b64encode(ech).decode())
        c.setopt(CurlOpt.WRITEFUNCTION, lambda chunk: body.extend(chunk) or len(chunk))
        c.perform()
        status = c.getinfo(curl_cffi.CurlInfo.RESPONSE_CODE)
        c.close()
        assert status == 200
        assert b"site-0007.example" in body
        assert (b"served by origin" if mode == "split" else b"served by shared") in body
        recs = wait_records(cdn.front, 1)
        assert recs[-1]["ech"] == "accepted"
        assert recs[-1]["inner_sni"] == "site-0007.example"


@pytest.mark.parametrize("mode", ["shared", "split"])
def test_key_rotation_retry_configs(env: Env, mode: str) -> None:
    """A client holding the old config (DNS not yet updated) is rejected with retry configs,
    retries with them and succeeds; after the DNS reload the new config is published."""
    with env.cdn(mode) as cdn:
        old = ech_config_list(env.key_dir)
        rotate_ech_keys(env.key_dir, "cdn.example")
        cdn.front.reload_keys()
        new = ech_config_list(env.key_dir)
        assert new != old
        res = env.load(f"rot-{mode}").run(sites=["site-0003.example"], count=2)
        first, retry = res.records[0], res.records[1]
        assert first["attempt"] == 1 and "retry configs" in first["error"]
        assert retry["attempt"] == 2 and retry["ech_accepted"] and retry["error"] is None
        # The retry configs were cached for the site: the second flow goes straight through.
        assert res.records[2]["ech_accepted"] and res.records[2]["attempt"] == 1
        env.dns.reload(env.zone())
        ech = next(rr for rrset in env.dns.query_https("site-0003.example").answer
                   for rr in rrset).params[5].ech
        assert base64.b64encode(ech).decode() == new
        res2 = env.load(f"rot2-{mode}").run(sites=["site-0003.example"], count=2)
        assert res2.summary["errors"] == 0 and res2.summary["ech_accepted"] == 2
        recs = wait_records(cdn.front, 3)
        assert recs[0]["ech"] == "rejected" and recs[0]["inner_sni"] is None


@pytest.mark.parametrize("mode", ["shared", "split"])
def test_resumption_and_session_mode(env: Env, mode: str) -> None:
    with env.cdn(mode) as cdn:
        res = env.load(f"res-{mode}").run(sites=["site-0009.example"], count=4, resumption=True,
                                          session=True, page_resources=5)
        assert res.summary["errors"] == 0, res.summary
        assert [r["resumed"] for r in res.records] == [False, True, True, True]
        assert all(r["requests"] == 6 for r in res.records)
        cdn.stop()
        by_random = {r["client_random"]: r for r in wait_records(cdn.front, 4)}
        for t in res.records:
            seen = by_random[t["client_random"]]
            assert seen["resumed"] == t["resumed"]
            assert (seen["psk_id_hash"] is not None) == t["resumed"]


def test_resumption_disabled(env: Env) -> None:
    with env.cdn("shared", resumption=False):
        res = env.load("nores").run(sites=["site-0002.example"], count=3, resumption=True)
        assert res.summary["errors"] == 0
        assert not any(r["resumed"] for r in res.records)


def test_workload_file_and_sources(env: Env) -> None:
    workload = [
        {"t": 0.0, "subscriber": "alice", "source": "127.0.0.1", "site": "pineapple-pizza.example",
         "path": "/page/3", "subresources": True},
        {"t": 0.2, "subscriber": "bob", "source": "::1", "site": "anchovy-fans.test", "path": "/"},
        {"t": 0.4, "subscriber": "alice", "source": "127.0.0.1", "site": "site-0001.example",
         "path": "/bytes/5000"},
    ]
    with env.cdn("shared"):
        res = env.load("wl").run(workload=workload)
        assert res.summary["errors"] == 0, res.summary
        by_sub = {}
        for r in res.records:
            by_sub.setdefault(r["subscriber"], []).append(r)
        assert len(by_sub["alice"]) == 2 and len(by_sub["bob"]) == 1
        assert by_sub["bob"][0]["local_addr"] == "::1"
        page = next(r for r in by_sub["alice"] if r["site"] == "pineapple-pizza.example")
        assert page["requests"] == 4
        big = next(r for r in by_sub["alice"] if r["site"] == "site-0001.example")
        assert big["bytes"] == 5000
        starts = sorted(r["ts"] for r in res.records)
        assert 0.3 < starts[-1] - starts[0] < 1.5


def test_open_loop_and_many_subscribers(env: Env) -> None:
    sources = [(f"sub{i}", "127.0.0.1") for i in range(10)]
    with env.cdn("shared"):
        res = env.load("open").run(site_count=NSITES, rate=50, duration=1, sources=sources,
                                   resumption=True)
        assert res.summary["errors"] == 0, res.summary
        assert 40 <= res.summary["count"] <= 60
        assert {r["subscriber"] for r in res.records} == {f"sub{i}" for i in range(10)}


def test_proxy_connect_tunnel(env: Env, tmp_path: Path) -> None:
    """Through a real forward proxy (tinyproxy): CONNECT tunnels TLS, ECH still accepted,
    and the front door sees the proxy's connection, not the client's.

    Connections are compared by their full 4-tuple, never by bare source port: on loopback
    the kernel may legitimately give the proxy's outgoing socket the same ephemeral port as
    a client socket to another destination (the proxy). The proxy binds its outgoing side
    to a second loopback address, so a client connection that bypassed the proxy would
    show up at the front door with the client's own tuple."""
    if shutil.which("tinyproxy") is None:
        pytest.skip("tinyproxy not installed")
    pport = free_port()
    proxy_out = "127.0.0.2"  # all of 127/8 is local on Linux: no interface set-up needed
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(f"Port {pport}\nListen 127.0.0.1\nBind {proxy_out}\nTimeout 30\n"
                    f"MaxClients 50\nLogLevel Error\nAllow 127.0.0.1\n")
    proxy = env.node.spawn(["tinyproxy", "-d", "-c", str(conf)], label="tinyproxy",
                           log=tmp_path / "tinyproxy.log")
    try:
        from testbed.services import wait_tcp

        wait_tcp(env.node, "127.0.0.1", pport, timeout=10, proc=proxy, what="tinyproxy")
        with env.cdn("shared") as cdn:
            res = env.load("proxy").run(sites=["site-0004.example"], count=3,
                                        proxies=[f"127.0.0.1:{pport}"])
            assert res.summary["errors"] == 0, res.summary
            assert all(r["ech_accepted"] and r["proxy"] == f"127.0.0.1:{pport}"
                       for r in res.records)
            cdn.stop()
            recs = {r["client_random"]: r for r in wait_records(cdn.front, 3)}
            # What the front door would have seen had a client connected directly.
            direct = {(r["local_addr"], r["local_port"], r["remote_addr"], r["remote_port"])
                      for r in res.records}
            for t in res.records:
                seen = recs[t["client_random"]]
                tup = (seen["peer_addr"], seen["peer_port"], seen["local_addr"],
                       seen["local_port"])
                assert tup not in direct, (tup, direct)
                assert seen["peer_addr"] == proxy_out, seen
    finally:
        proxy.stop()


@pytest.mark.parametrize("mode", ["shared", "split"])
def test_malformed_hellos_do_not_stop_service(env: Env, mode: str) -> None:
    """Thousands of truncated/mutated ClientHellos and random bytes, while a well-formed ECH
    client keeps connecting: the front door survives and every good connection succeeds."""
    rng = random.Random(7)
    with env.cdn(mode) as cdn:
        # One real ClientHello to mutate: capture what echd load sends.
        srv = socket.create_server(("127.0.0.1", 0))
        cport = srv.getsockname()[1]
        grabbed: list[bytes] = []

        def grab() -> None:
            conn, _ = srv.accept()
            conn.settimeout(5)
            grabbed.append(conn.recv(4096))
            conn.close()

        t = threading.Thread(target=grab)
        t.start()
        env.load("grab").run(sites=["site-0001.example"], count=1, check=False,
                             extra=["--port", str(cport), "--timeout", "2s"])
        t.join(10)
        srv.close()
        hello = grabbed[0]
        assert hello[0] == 22

        stop = threading.Event()
        good: list[dict] = []

        def clients() -> None:
            lg = env.load(f"fuzz-{mode}")
            while not stop.is_set():
                good.append(lg.run(sites=["site-0002.example"], count=20, concurrency=2,
                                   check=False).summary)

        ct = threading.Thread(target=clients)
        ct.start()
        sent = 0
        try:
            for i in range(3000):
                kind = i % 4
                if kind == 0:
                    data = hello[: rng.randrange(len(hello))]
                elif kind == 1:
                    b = bytearray(hello)
                    for _ in range(rng.randint(1, 6)):
                        b[rng.randrange(5, len(b))] ^= rng.randint(1, 255)
                    data = bytes(b)
                elif kind == 2:
                    data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
                else:
                    data = b"\x16\x03\x01" + bytes(rng.getrandbits(8) for _ in range(200))
                # The front door may reset garbage before we finish sending: that is fine.
                with socket.create_connection(("127.0.0.1", env.port), timeout=5) as s, \
                        contextlib.suppress(OSError):
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                sent += 1
        finally:
            stop.set()
            ct.join(120)
        assert sent == 3000
        assert cdn.front.proc is not None and cdn.front.proc.alive()
        assert good and all(s.get("errors") == 0 and s.get("count") == 20 for s in good), good
        res = env.load(f"after-{mode}").run(sites=["site-0003.example"], count=3)
        assert res.summary["ech_accepted"] == 3


def test_bad_input_exits_2_with_one_line(env: Env, tmp_path: Path) -> None:
    echd = str(paths.binary("echd"))
    bad_keys = tmp_path / "bad"
    bad_keys.mkdir()
    (bad_keys / "x.ech").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    wl = tmp_path / "wl.jsonl"
    wl.write_text('{"t": 0, "subscriber": "a", "site": "site-0001.example"}\n{"t": "soon"\n')
    cases = [
        [echd, "serve", "--ca-dir", str(env.ca_dir), "--keys", str(bad_keys)],
        [echd, "serve", "--ca-dir", str(env.ca_dir), "--keys", str(tmp_path / "missing")],
        [echd, "serve", "--ca-dir", str(tmp_path), "--keys", str(env.key_dir)],
        [echd, "front", "--ca-dir", str(env.ca_dir), "--keys", str(env.key_dir)],
        [echd, "serve", "--bogus-flag"],
        [echd, "serve", "--listen", "nonsense"],
        [echd, "front", "--ca-dir", str(env.ca_dir), "--keys", str(env.key_dir),
         "--route", "no-equals-sign"],
        [echd, "load", "--dns", env.dns.address, "--ca", str(env.ca), "--site", "nosuch.example"],
        [echd, "load", "--dns", env.dns.address, "--ca", str(env.ca), "--workload", str(wl)],
        [echd, "load", "--dns", env.dns.address, "--ca", str(env.ca), "--site", "x.example",
         "--resumption", "maybe"],
        [echd, "load", "--ca", str(env.ca), "--site", "site-0001.example"],
        [echd, "keygen", "--dir", str(tmp_path / "k"), "--public-name", "not a name"],
        [echd, "nosuchcommand"],
    ]
    for argv in cases:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert res.returncode == 2, (argv, res.returncode, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("echd"), (argv, res.stderr)
    res = subprocess.run(cases[7], capture_output=True, text=True, timeout=30)
    assert "unknown site nosuch.example" in res.stderr


# --- Fields the linkability analysis needs (benchmarks/linkability/README.md, "Contract
# with the emulation side"): workload fields copied into the ground truth, and issued
# session-ticket hashes in the front-door log.

def strict_truth(res) -> list[dict]:
    """The ground-truth file as written, parsed strictly: a key twice in one line fails
    (json.loads would silently keep the last one)."""
    def no_dups(pairs: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
        return dict(pairs)

    out = Path(res.argv[res.argv.index("--out") + 1])
    return [json.loads(line, object_pairs_hook=no_dups)
            for line in out.read_text().splitlines() if line.strip()]


EXTRA_KEYS = ("household", "device", "session_id", "family", "x_unknown")


def test_workload_extra_fields_copied_into_ground_truth(env: Env) -> None:
    workload = [
        {"t": 0.0, "subscriber": "alice", "source": "127.0.0.1", "site": "pineapple-pizza.example",
         "path": "/page/3", "subresources": True, "household": "hh-1", "device": "hh-1/laptop",
         "session_id": "sess-1", "family": 4, "x_unknown": {"nested": [1, "two", None]}},
        {"t": 0.1, "subscriber": "bob", "source": "::1", "site": "anchovy-fans.test",
         "household": "hh-2", "device": "hh-2/phone", "session_id": "sess-2", "family": 6,
         "x_unknown": None},
        {"t": 0.2, "subscriber": "alice", "source": "127.0.0.1", "site": "site-0001.example",
         "household": "hh-1", "device": "hh-1/laptop", "session_id": "sess-3", "family": 4,
         "x_unknown": 3.25},
    ]
    with env.cdn("shared"):
        res = env.load("wl-extra").run(workload=workload, resumption=True)
    assert res.summary["errors"] == 0, res.summary
    truth = strict_truth(res)
    assert len(truth) == 3
    by_key = {(w["subscriber"], w["site"]): w for w in workload}
    for r in truth:
        w = by_key[(r["subscriber"], r["site"])]
        for k in EXTRA_KEYS:
            assert k in r and r[k] == w[k], (k, r)
        # The generator's own fields are intact; the workload's t/source/subresources are
        # interpreted, not copied.
        assert r["client_random"] and r["flow_id"].startswith("run")
        assert not {"t", "source", "subresources"} & r.keys()
    page = next(r for r in truth if r["site"] == "pineapple-pizza.example")
    assert page["requests"] == 4  # page + 3 sub-resources, one connection, one record


def test_workload_extra_fields_on_every_connection_of_a_retry(env: Env) -> None:
    """A workload record that produces two connections (ECH rejected with retry configs,
    then the retry) copies its fields into both ground-truth records."""
    w = {"t": 0.0, "subscriber": "carol", "source": "127.0.0.1", "site": "site-0011.example",
         "household": "hh-9", "device": "hh-9/tv", "session_id": "sess-9", "family": 4,
         "x_unknown": ["a", {"b": 1}]}
    with env.cdn("shared") as cdn:
        try:
            rotate_ech_keys(env.key_dir, "cdn.example")  # DNS still publishes the old config
            cdn.front.reload_keys()
            res = env.load("wl-retry").run(workload=[w])
        finally:
            env.dns.reload(env.zone())
    truth = strict_truth(res)
    assert [r["attempt"] for r in truth] == [1, 2], truth
    assert "retry configs" in truth[0]["error"] and truth[1]["ech_accepted"]
    for r in truth:
        for k in EXTRA_KEYS:
            assert r[k] == w[k], (k, r)


def test_workload_field_collision_generator_wins(env: Env) -> None:
    w = {"t": 0.0, "subscriber": "dave", "source": "127.0.0.1", "site": "site-0012.example",
         "ts": 1.5, "flow_id": "mine", "local_addr": "10.9.9.9", "ech_accepted": "nope",
         "client_random": "00", "household": "hh-4"}
    before = time.time()
    with env.cdn("shared"):
        res = env.load("wl-collide").run(workload=[w])
    (r,) = strict_truth(res)  # strict: no key twice
    assert r["ts"] >= before - 1 and r["ts"] != 1.5
    assert r["flow_id"] != "mine" and r["flow_id"].startswith("run")
    assert r["local_addr"] == "127.0.0.1"
    assert r["ech_accepted"] is True
    assert r["client_random"] != "00" and len(r["client_random"]) == 64
    assert r["household"] == "hh-4"


@pytest.mark.parametrize("mode", ["shared", "split"])
def test_issued_ticket_hashes_link_resumed_connection(env: Env, mode: str) -> None:
    """An adversary at the front door (shared) or origin (split) links each resumed
    connection to the handshake that issued its ticket: psk_id_hash of connection i is
    among issued_ticket_hashes of connection i-1."""
    with env.cdn(mode) as cdn:
        res = env.load(f"tickets-{mode}").run(sites=["site-0013.example"], count=3,
                                              resumption=True)
        assert res.summary["errors"] == 0, res.summary
        assert [r["resumed"] for r in res.records] == [False, True, True]
        cdn.stop()
        front = {r["client_random"]: r for r in wait_records(cdn.front, 3)}
        seen = [front[t["client_random"]] for t in res.records]
        if mode == "split":
            assert all(r["issued_ticket_hashes"] is None for r in seen)  # invisible to the front
            origin = {r["client_random"]: r for r in cdn.origin.records()}
            issuer = [origin[t["client_random"]] for t in res.records]  # join on client_random
            assert [o["psk_id_hash"] for o in issuer] == [r["psk_id_hash"] for r in seen]
        else:
            issuer = seen
        assert seen[0]["psk_id_hash"] is None
        for i in range(1, 3):
            assert seen[i]["psk_id_hash"] is not None
            assert seen[i]["psk_id_hash"] in issuer[i - 1]["issued_ticket_hashes"], (i, issuer)
        hashes = [h for r in issuer for h in r["issued_ticket_hashes"]]
        assert hashes and len(hashes) == len(set(hashes))
        assert all(len(h) == 16 for h in hashes)


def test_issued_ticket_hashes_empty_without_resumption(env: Env) -> None:
    with env.cdn("shared", resumption=False) as cdn:
        res = env.load("tickets-off").run(sites=["site-0014.example"], count=2, resumption=True)
        assert res.summary["errors"] == 0 and not any(r["resumed"] for r in res.records)
        cdn.stop()
        recs = wait_records(cdn.front, 2)
        assert len(recs) == 2
        for r in recs:
            assert "issued_ticket_hashes" in r and not r["issued_ticket_hashes"]
            assert r["psk_id_hash"] is None
