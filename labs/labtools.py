"""Traffic helpers run *inside* the lab namespaces (`python -m labs.labtools CMD ...`).

serve   far-side servers: TCP echo (7001, first line reports the peer address it sees),
        TCP sink (7002, replies with length and SHA-256 of what it got), UDP (7003:
        PEER / BIG n / TTL t / ECHO commands)
probe   open N new flows one after another; print the peer address the server saw for each
hold    keep one TCP and one UDP flow busy; print per-flow echo results and peers seen
icmp    provoke port-unreachable, time-exceeded and packet-too-big; print what came back
bulk    upload N bytes over one TCP connection (PMTUD); print the sink's length/hash
send    send UDP datagrams from a chosen source address (spoofing tests)
udp     send UDP commands on one flow (make the far side send big / low-TTL replies)
rr      request/response round trips over one established TCP flow (latency)
rrpair  alternating round trips over two flows opened under different policies
many    open N TCP flows and hold them (flow limit, pool exhaustion)
connrate  new TCP connections per second (bench)
udpflood  one datagram to each of many ports: many tracked flows (memory bench)
Every command prints one JSON document on stdout.

About 550 lines on purpose: it is the one program the labs and the relay's integration tests
exec in every namespace, stdlib only (sockets) but for the project's one wait helper
(`testbed.waiting`, itself stdlib only), so each command stays a small function here rather
than a module of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from typing import Any

from testbed.waiting import WaitTimeout, wait_until

TCP_ECHO, TCP_SINK, UDP_PORT, CLOSED_PORT = 7001, 7002, 7003, 7009
IP_RECVERR, IPV6_RECVERR = 11, 25
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER, PMTUDISC_DO = 10, 23, 2
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3


def pattern(n: int) -> bytes:
    """Payload bytes: an increasing sequence mod 251, which never contains an address of
    the lab plan as a 4-byte or 7-byte substring (keeps the leak scan free of false hits)."""
    block = bytes(i % 251 for i in range(251 * 64))
    reps = n // len(block) + 1
    return (block * reps)[:n]


def family_of(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


# -- servers -------------------------------------------------------------------------------


def _tcp_server(addr: str, port: int, handler: Any) -> None:
    s = socket.socket(family_of(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1024)
    while True:
        c, peer = s.accept()
        threading.Thread(target=handler, args=(c, peer), daemon=True).start()


def _echo(c: socket.socket, peer: tuple) -> None:
    with contextlib.suppress(OSError), c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(f"PEER {peer[0]} {peer[1]}\n".encode())
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)


def _sink(c: socket.socket, peer: tuple) -> None:
    with contextlib.suppress(OSError), c:
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(1 << 16)
            if not d:
                break
            h.update(d)
            n += len(d)
        c.sendall(f"LEN {n} SHA {h.hexdigest()} PEER {peer[0]} {peer[1]}\n".encode())


def _udp_server(addr: str) -> None:
    fam = family_of(addr)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((addr, UDP_PORT))
    v4 = fam == socket.AF_INET
    ttl_opt = (socket.IPPROTO_IP, socket.IP_TTL) if v4 else (socket.IPPROTO_IPV6,
                                                             socket.IPV6_UNICAST_HOPS)
    while True:
        d, peer = s.recvfrom(65536)
        parts = d.split(b" ", 1)
        cmd = parts[0]
        try:
            if cmd == b"PEER":
                s.sendto(f"PEER {peer[0]} {peer[1]}".encode(), peer)
            elif cmd == b"BIG":
                n = int(parts[1])
                mtu_opt = (socket.IPPROTO_IP, IP_MTU_DISCOVER) if v4 else (
                    socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER)
                s.setsockopt(*mtu_opt, PMTUDISC_DO)
                with contextlib.suppress(OSError):
                    s.sendto(pattern(n), peer)
                s.setsockopt(*mtu_opt, 0)
            elif cmd == b"TTL":
                s.setsockopt(*ttl_opt, int(parts[1]))
                s.sendto(b"TTL", peer)
                s.setsockopt(*ttl_opt, 64)
            else:
                s.sendto(d, peer)
        except (OSError, ValueError, IndexError):
            continue


def cmd_serve(a: argparse.Namespace) -> None:
    for addr in a.addr:
        threading.Thread(target=_tcp_server, args=(addr, TCP_ECHO, _echo), daemon=True).start()
        threading.Thread(target=_tcp_server, args=(addr, TCP_SINK, _sink), daemon=True).start()
        threading.Thread(target=_udp_server, args=(addr,), daemon=True).start()
    print(json.dumps({"serving": a.addr}), flush=True)
    while True:
        time.sleep(3600)


# -- clients -------------------------------------------------------------------------------


def _readline(s: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(4096)
        if not d:
            break
        buf += d
    return buf.decode().strip()


def tcp_peer(dst: str, timeout: float = 5.0, src: str | None = None) -> tuple[str, int, int]:
    """(peer address the server saw, its port, our local port) for one new TCP flow."""
    s = socket.socket(family_of(dst), socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    with s:
        s.connect((dst, TCP_ECHO))
        local = s.getsockname()[1]
        parts = _readline(s).split()
    return parts[1], int(parts[2]), local


def udp_peer(dst: str, timeout: float = 2.0, tries: int = 3) -> tuple[str, int, int]:
    s = socket.socket(family_of(dst), socket.SOCK_DGRAM)
    s.settimeout(timeout)
    with s:
        s.connect((dst, UDP_PORT))
        local = s.getsockname()[1]
        for _ in range(tries):
            s.send(b"PEER")
            try:
                parts = s.recv(4096).decode().split()
                return parts[1], int(parts[2]), local
            except TimeoutError:
                continue
    raise TimeoutError("no UDP answer")


def cmd_many(a: argparse.Namespace) -> None:
    """Open `count` TCP flows and keep them open for `hold` seconds (flow-limit tests)."""
    socks = []
    ok, failed = 0, 0
    peers = []
    for _ in range(a.count):
        s = socket.socket(family_of(a.dst), socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        if a.src:
            s.bind((a.src, 0))
        try:
            s.connect((a.dst, TCP_ECHO))
            peers.append(_readline(s).split()[1:3])
            socks.append(s)
            ok += 1
        except OSError:
            s.close()
            failed += 1
    print(json.dumps({"ok": ok, "failed": failed, "peers": peers}), flush=True)
    # Hold for --hold seconds, or less if the controller creates --stop-file.
    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: bool(a.stop_file) and os.path.exists(a.stop_file), a.hold, 0.05,
                   "the stop file")
    alive = 0
    for s in socks:
        try:
            s.sendall(b"ping")
            if s.recv(16):
                alive += 1
        except OSError:
            pass
        s.close()
    print(json.dumps({"alive_at_end": alive}), flush=True)


def cmd_probe(a: argparse.Namespace) -> None:
    out = []
    errors = []
    for _ in range(a.count):
        try:
            out.append(tcp_peer(a.dst) if a.proto == "tcp" else udp_peer(a.dst))
        except OSError as e:
            errors.append(str(e))
    print(json.dumps({"peers": out, "errors": errors}))


def cmd_hold(a: argparse.Namespace) -> None:
    fam = family_of(a.dst)
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.settimeout(5)
    t.connect((a.dst, TCP_ECHO))
    t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tcp_peer_seen = _readline(t).split()[1:3]
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.connect((a.dst, UDP_PORT))
    res: dict[str, Any] = {
        "tcp": {"sent": 0, "ok": 0, "errors": [], "peers": [tcp_peer_seen], "max_gap": 0.0,
                "local": list(t.getsockname()[:2])},
        "udp": {"sent": 0, "ok": 0, "errors": [], "peers": [], "max_gap": 0.0,
                "local": list(u.getsockname()[:2])},
    }
    last_ok = {"tcp": time.monotonic(), "udp": time.monotonic()}
    print(json.dumps({"ready": True, "tcp_peer": tcp_peer_seen}), flush=True)
    end = time.monotonic() + a.duration
    i = 0
    while time.monotonic() < end and not (a.stop_file and os.path.exists(a.stop_file)):
        i += 1
        msg = f"m{i:08d}".encode() * 4
        r = res["tcp"]
        r["sent"] += 1
        try:
            t.sendall(msg)
            got = b""
            while len(got) < len(msg):
                d = t.recv(len(msg) - len(got))
                if not d:
                    raise ConnectionResetError("EOF from server")
                got += d
            if got == msg:
                r["ok"] += 1
                now = time.monotonic()
                r["max_gap"] = max(r["max_gap"], now - last_ok["tcp"])
                last_ok["tcp"] = now
        except OSError as e:
            r["errors"].append(f"{i}: {e!r}")
            if len(r["errors"]) > 20:
                break
        r = res["udp"]
        r["sent"] += 1
        try:
            u.send(b"PEER")
            parts = u.recv(4096).decode().split()
            peer = parts[1:3]
            if peer not in r["peers"]:
                r["peers"].append(peer)
            r["ok"] += 1
            now = time.monotonic()
            r["max_gap"] = max(r["max_gap"], now - last_ok["udp"])
            last_ok["udp"] = now
        except OSError as e:
            r["errors"].append(f"{i}: {e!r}")
        time.sleep(a.interval)
    t.close()
    u.close()
    print(json.dumps(res), flush=True)


def _errqueue(s: socket.socket, timeout: float = 3.0) -> dict[str, Any] | None:
    """First extended error on the socket: origin, ICMP type/code, info (MTU), offender;
    None if none arrives within `timeout` seconds."""
    try:
        return wait_until(lambda: _read_errqueue(s), timeout, 0.02, "an ICMP error")
    except WaitTimeout:
        return None


def _read_errqueue(s: socket.socket) -> dict[str, Any] | None:
    """One non-blocking read of the socket's error queue, parsed; None if it is empty."""
    try:
        _d, anc, _f, _addr = s.recvmsg(2048, 1024, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    for _lvl, _typ, data in anc:
        if len(data) < 16:
            continue
        ee_errno, origin, etype, code, _pad, info, _data = struct.unpack_from("=IBBBBII", data)
        off = data[16:]
        offender = None
        if len(off) >= 8:
            fam = struct.unpack_from("=H", off)[0]
            if fam == socket.AF_INET:
                offender = socket.inet_ntop(socket.AF_INET, off[4:8])
            elif fam == socket.AF_INET6 and len(off) >= 24:
                offender = socket.inet_ntop(socket.AF_INET6, off[8:24])
        return {"errno": ee_errno, "origin": origin, "type": etype, "code": code,
                "info": info, "offender": offender}
    return None


def _udp_with_recverr(dst: str, port: int) -> socket.socket:
    fam = family_of(dst)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    s.connect((dst, port))
    return s


def cmd_icmp(a: argparse.Namespace) -> None:
    fam = family_of(a.dst)
    v4 = fam == socket.AF_INET
    out: dict[str, Any] = {}
    # port unreachable
    s = _udp_with_recverr(a.dst, CLOSED_PORT)
    s.send(b"x")
    out["port_unreachable"] = _errqueue(s)
    s.close()
    # time exceeded: hop limit 2 expires at the transit router beyond the relay
    s = _udp_with_recverr(a.dst, UDP_PORT)
    if v4:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 2)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 2)
    s.send(b"ECHO ttl")
    out["time_exceeded"] = _errqueue(s)
    s.close()
    # packet too big / fragmentation needed from the smaller-MTU far link
    s = _udp_with_recverr(a.dst, UDP_PORT)
    if v4:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_DO)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_DO)
    with contextlib.suppress(OSError):
        s.send(b"ECHO " + pattern(a.big))
    out["packet_too_big"] = _errqueue(s)
    s.close()
    print(json.dumps(out))


def cmd_bulk(a: argparse.Namespace) -> None:
    data = pattern(a.bytes)
    s = socket.socket(family_of(a.dst), socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    t0 = time.monotonic()
    s.connect((a.dst, TCP_SINK))
    local = s.getsockname()[:2]
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    reply = _readline(s).split()
    s.close()
    dt = time.monotonic() - t0
    ok = (len(reply) >= 4 and int(reply[1]) == len(data)
          and reply[3] == hashlib.sha256(data).hexdigest())
    print(json.dumps({"ok": ok, "reply": reply, "seconds": dt, "bytes": len(data),
                      "local": list(local)}))


def cmd_send(a: argparse.Namespace) -> None:
    fam = family_of(a.dst)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    # IP(V6)_TRANSPARENT (root): send from an address this host does not own (spoofing)
    if fam == socket.AF_INET:
        s.setsockopt(socket.SOL_IP, 19, 1)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, 75, 1)
    s.bind((a.src, 0))
    sent = 0
    for _ in range(a.count):
        with contextlib.suppress(OSError):
            s.sendto(b"spoof", (a.dst, a.port))
            sent += 1
    print(json.dumps({"sent": sent}))


def cmd_udp(a: argparse.Namespace) -> None:
    """Send UDP commands (e.g. "BIG 1300", "TTL 3") on one flow; report what came back."""
    s = socket.socket(family_of(a.dst), socket.SOCK_DGRAM)
    s.settimeout(a.wait)
    s.connect((a.dst, UDP_PORT))
    got = []
    for c in a.commands:
        s.send(c.encode())
        try:
            got.append(len(s.recv(65536)))
        except OSError as e:
            got.append(repr(e))
    print(json.dumps({"replies": got, "local": list(s.getsockname()[:2])}))


def _rr_conn(dst: str) -> tuple[socket.socket, str]:
    s = socket.socket(family_of(dst), socket.SOCK_STREAM)
    s.connect((dst, TCP_ECHO))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, _readline(s).split()[1]


def _rr_once(s: socket.socket, msg: bytes) -> int:
    t0 = time.perf_counter_ns()
    s.sendall(msg)
    got = 0
    while got < len(msg):
        got += len(s.recv(65536))
    return time.perf_counter_ns() - t0


def cmd_rrpair(a: argparse.Namespace) -> None:
    """Paired latency: flow A is opened, then (after a line on stdin, when the caller has
    changed the relay's policy) flow B; samples then alternate A, B, A, B ... so both
    flows see the same machine load, and only their per-packet treatment differs."""
    sa, peer_a = _rr_conn(a.dst)
    print(json.dumps({"a_ready": True, "peer": peer_a}), flush=True)
    sys.stdin.readline()
    sb, peer_b = _rr_conn(a.dst)
    msg = b"x" * a.size
    ra, rb = [], []
    for i in range(a.count):
        if i % 2:
            rb.append(_rr_once(sb, msg))
            ra.append(_rr_once(sa, msg))
        else:
            ra.append(_rr_once(sa, msg))
            rb.append(_rr_once(sb, msg))
    print(json.dumps({"peer_a": peer_a, "peer_b": peer_b, "a_ns": ra, "b_ns": rb}))


def cmd_connrate(a: argparse.Namespace) -> None:
    """New TCP connections per second, one after another, for `seconds`. With --refused the
    target port is closed: each attempt is SYN -> RST, which measures the per-flow cost of
    conntrack + NAT without a userspace server in the loop."""
    port = CLOSED_PORT if a.refused else TCP_ECHO
    fam = family_of(a.dst)
    n = errors = 0
    t0 = time.perf_counter()
    end = t0 + a.seconds
    while time.perf_counter() < end:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((a.dst, port))
            if not a.refused:
                _readline(s)
            n += 1
        except ConnectionRefusedError:
            if a.refused:
                n += 1
            else:
                errors += 1
        except OSError:
            errors += 1
        finally:
            s.close()
    dt = time.perf_counter() - t0
    print(json.dumps({"connections": n, "errors": errors, "seconds": dt, "rate": n / dt}))


def cmd_udpflood(a: argparse.Namespace) -> None:
    """One datagram to each destination port in [lo, hi]: that many distinct tracked flows."""
    s = socket.socket(family_of(a.dst), socket.SOCK_DGRAM)
    sent = 0
    for port in range(a.lo, a.hi + 1):
        try:
            s.sendto(b"f", (a.dst, port))
            sent += 1
        except OSError:
            time.sleep(0.001)
    print(json.dumps({"sent": sent}))


def cmd_rr(a: argparse.Namespace) -> None:
    s = socket.socket(family_of(a.dst), socket.SOCK_STREAM)
    s.connect((a.dst, TCP_ECHO))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _readline(s)
    msg = b"x" * a.size
    samples = []
    for _ in range(a.count):
        t0 = time.perf_counter_ns()
        s.sendall(msg)
        got = 0
        while got < len(msg):
            got += len(s.recv(65536))
        samples.append(time.perf_counter_ns() - t0)
    s.close()
    print(json.dumps({"rtt_ns": samples}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labs.labtools")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("addr", nargs="+")
    p = sub.add_parser("probe")
    p.add_argument("--dst", required=True)
    p.add_argument("--proto", choices=["tcp", "udp"], default="tcp")
    p.add_argument("--count", type=int, default=10)
    p = sub.add_parser("hold")
    p.add_argument("--dst", required=True)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--stop-file")
    p = sub.add_parser("icmp")
    p.add_argument("--dst", required=True)
    p.add_argument("--big", type=int, default=1440)
    p = sub.add_parser("bulk")
    p.add_argument("--dst", required=True)
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("--timeout", type=float, default=30)
    p = sub.add_parser("send")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, default=UDP_PORT)
    p.add_argument("--count", type=int, default=5)
    p = sub.add_parser("many")
    p.add_argument("--dst", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--hold", type=float, default=30)
    p.add_argument("--timeout", type=float, default=2)
    p.add_argument("--src")
    p.add_argument("--stop-file")
    p = sub.add_parser("udp")
    p.add_argument("--dst", required=True)
    p.add_argument("--cmd", dest="commands", action="append", default=[])
    p.add_argument("--wait", type=float, default=0.5)
    p = sub.add_parser("rrpair")
    p.add_argument("--dst", required=True)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--size", type=int, default=64)
    p = sub.add_parser("connrate")
    p.add_argument("--dst", required=True)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--refused", action="store_true")
    p = sub.add_parser("udpflood")
    p.add_argument("--dst", required=True)
    p.add_argument("--lo", type=int, default=10000)
    p.add_argument("--hi", type=int, default=59999)
    p = sub.add_parser("rr")
    p.add_argument("--dst", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    a = ap.parse_args(argv)
    {"serve": cmd_serve, "probe": cmd_probe, "hold": cmd_hold, "icmp": cmd_icmp,
     "bulk": cmd_bulk, "send": cmd_send, "rr": cmd_rr, "many": cmd_many, "udp": cmd_udp,
     "connrate": cmd_connrate, "udpflood": cmd_udpflood, "rrpair": cmd_rrpair}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
