"""Long-lived flow sink and client for the resilience scenarios (run inside nodes).

Why a custom tool: the pass criterion "zero remapped flows" needs the server side to see
each flow's peer (alias addr:port) on every message, which no stock tool records. The
sink echoes and remembers, per flow id, every peer it saw; the client keeps N TCP and N UDP
flows open, sends one numbered message per flow per tick, and counts resets and losses.

    python flows.py sink --bind4 ADDR --port P --out FILE
    python flows.py client --dst ADDR --port P --sources a,b,c --tcp N --udp N
                           --duration S --tick S --out FILE [--tag T]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import selectors
import signal
import socket
import sys
import time


def _raise_fd_limit() -> None:
    """A thousand flows need more descriptors than the usual soft limit of 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def sink(args: argparse.Namespace) -> None:
    """Echo server; on SIGTERM writes {flow_id: [peer, ...]} (distinct peers, in order)."""
    _raise_fd_limit()
    peers: dict[str, list[str]] = {}
    msgs = {"n": 0}
    sel = selectors.DefaultSelector()
    lt = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lt.bind((args.bind4, args.port))
    lt.listen(4096)
    lt.setblocking(False)
    lu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lu.bind((args.bind4, args.port))
    lu.setblocking(False)
    sel.register(lt, selectors.EVENT_READ, "accept")
    sel.register(lu, selectors.EVENT_READ, "udp")
    buffers: dict[socket.socket, bytes] = {}

    def note(line: bytes, peer: str) -> None:
        fid = line.split(b" ", 1)[0].decode(errors="replace")
        seen = peers.setdefault(fid, [])
        if not seen or seen[-1] != peer:
            seen.append(peer)
        msgs["n"] += 1

    def dump(*_: object) -> None:
        with open(args.out, "w") as fh:
            json.dump({"peers": peers, "messages": msgs["n"]}, fh)
        sys.exit(0)

    signal.signal(signal.SIGTERM, dump)
    while True:
        for key, _ in sel.select(1.0):
            if key.data == "accept":
                try:
                    conn, _addr = lt.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                buffers[conn] = b""
                sel.register(conn, selectors.EVENT_READ, "tcp")
            elif key.data == "udp":
                try:
                    data, addr = lu.recvfrom(2048)
                except OSError:
                    continue
                note(data.strip(), f"udp/{addr[0]}:{addr[1]}")
                with contextlib.suppress(OSError):
                    lu.sendto(data, addr)
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(4096)
                    peer = conn.getpeername()
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    buffers.pop(conn, None)
                    conn.close()
                    continue
                buf = buffers[conn] + data
                *lines, buffers[conn] = buf.split(b"\n")
                for line in lines:
                    note(line, f"tcp/{peer[0]}:{peer[1]}")
                with contextlib.suppress(OSError):
                    conn.sendall(data)


def client(args: argparse.Namespace) -> None:
    """Open the flows, exchange one message per flow per tick; write a JSON summary."""
    _raise_fd_limit()
    sources = args.sources.split(",")
    tcp: dict[str, socket.socket] = {}
    udp: dict[str, socket.socket] = {}
    local: dict[str, str] = {}
    errors = {"tcp_connect_failed": 0, "tcp_reset": 0, "tcp_timeout": 0, "udp_lost": 0,
              "udp_error": 0}
    for i in range(args.tcp):
        fid = f"{args.tag}t{i}"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i % len(sources)], 0))
        s.settimeout(5)
        try:
            s.connect((args.dst, args.port))
        except OSError:
            errors["tcp_connect_failed"] += 1
            s.close()
            continue
        tcp[fid] = s
        local[fid] = "tcp/{}:{}".format(*s.getsockname()[:2])
    for i in range(args.udp):
        fid = f"{args.tag}u{i}"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sources[i % len(sources)], 0))
        s.connect((args.dst, args.port))
        s.settimeout(0.5)
        udp[fid] = s
        local[fid] = "udp/{}:{}".format(*s.getsockname()[:2])
    with open(args.out + ".started", "w") as fh:
        json.dump(local, fh)
    dead: set[str] = set()
    seq = 0
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        t0 = time.monotonic()
        seq += 1
        for fid, s in list(tcp.items()) + list(udp.items()):
            if fid in dead:
                continue
            try:
                s.send(f"{fid} {seq}\n".encode())
            except OSError:
                errors["tcp_reset" if fid in tcp else "udp_error"] += 1
                dead.add(fid)
        for fid, s in tcp.items():
            if fid in dead:
                continue
            want = len(f"{fid} {seq}\n")
            got = b""
            try:
                while len(got) < want:
                    chunk = s.recv(want - len(got))
                    if not chunk:
                        raise ConnectionResetError
                    got += chunk
            except TimeoutError:
                errors["tcp_timeout"] += 1
                dead.add(fid)
            except OSError:
                errors["tcp_reset"] += 1
                dead.add(fid)
        for fid, s in udp.items():
            if fid in dead:
                continue
            try:
                s.recv(2048)
            except TimeoutError:
                errors["udp_lost"] += 1
            except OSError:
                errors["udp_error"] += 1
        time.sleep(max(0.0, args.tick - (time.monotonic() - t0)))
    for s in list(tcp.values()) + list(udp.values()):
        s.close()
    with open(args.out, "w") as fh:
        json.dump({"tcp": len(tcp), "udp": len(udp), "ticks": seq, "errors": errors,
                   "dead": sorted(dead), "local": local}, fh)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--bind4", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--out", required=True)
    c = sub.add_parser("client")
    c.add_argument("--dst", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--sources", required=True)
    c.add_argument("--tcp", type=int, default=0)
    c.add_argument("--udp", type=int, default=0)
    c.add_argument("--duration", type=float, default=10)
    c.add_argument("--tick", type=float, default=1.0)
    c.add_argument("--tag", default="")
    c.add_argument("--out", required=True)
    args = ap.parse_args()
    (sink if args.cmd == "sink" else client)(args)


if __name__ == "__main__":
    main()
