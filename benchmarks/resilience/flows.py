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
    # Hundreds of flows echo through one UDP socket: the default receive queue (~200 kB of
    # skb truesize) would drop echoes and count them as losses the relay never caused.
    with contextlib.suppress(OSError):
        lu.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
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


class _Flow:
    """One long-lived flow's socket and bookkeeping (TCP: bytes owed; UDP: seqs owed)."""

    __slots__ = ("fid", "sock", "tcp", "phase", "owed", "last_reply", "pending")

    def __init__(self, fid: str, sock: socket.socket, tcp: bool) -> None:
        self.fid, self.sock, self.tcp = fid, sock, tcp
        self.phase = 0.0  # offset of its send within the tick
        self.owed = 0  # TCP: echo bytes not yet received back
        self.last_reply = time.monotonic()
        self.pending: set[int] = set()  # UDP: sequence numbers not yet echoed


def _connect_all(args: argparse.Namespace, sources: list[str], errors: dict[str, int]
                 ) -> list[_Flow]:
    """Open every TCP flow with non-blocking connects (a few hundred in flight at once), then
    the UDP flows. Sequential blocking connects would take N round trips."""
    flows: list[_Flow] = []
    total = args.tcp + args.udp
    sel = selectors.DefaultSelector()
    connecting: dict[socket.socket, str] = {}
    deadline = time.monotonic() + args.connect_timeout
    for i in range(args.tcp):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i % len(sources)], 0))
        s.setblocking(False)
        s.connect_ex((args.dst, args.port))
        connecting[s] = f"{args.tag}t{i}"
        sel.register(s, selectors.EVENT_WRITE)
    while connecting and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            sel.unregister(s)
            fid = connecting.pop(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                errors["tcp_connect_failed"] += 1
                s.close()
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            flows.append(_Flow(fid, s, True))
    for s in connecting:
        errors["tcp_connect_failed"] += 1
        s.close()
    sel.close()
    for i in range(args.udp):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sources[i % len(sources)], 0))
        s.connect((args.dst, args.port))
        s.setblocking(False)
        flows.append(_Flow(f"{args.tag}u{i}", s, False))
    # Spread the flows' sends evenly over the tick: a burst of `total` messages at once
    # would overflow the sink's receive queue and measure the burst, not the relay.
    for n, f in enumerate(sorted(flows, key=lambda f: f.fid)):
        f.phase = args.tick * n / max(1, total)
    return flows


def client(args: argparse.Namespace) -> None:
    """Hold the flows open, one numbered message per flow per tick, paced across the tick;
    count resets, TCP stalls and lost UDP echoes; write a JSON summary.

    Event-driven (one selector, non-blocking sockets): a thousand flows cost a thousand
    small sends and receives per tick, never a blocking wait on one slow flow."""
    _raise_fd_limit()
    sources = args.sources.split(",")
    errors = {"tcp_connect_failed": 0, "tcp_reset": 0, "tcp_timeout": 0, "udp_lost": 0,
              "udp_error": 0}
    flows = _connect_all(args, sources, errors)
    local = {f.fid: "{}/{}:{}".format("tcp" if f.tcp else "udp", *f.sock.getsockname()[:2])
             for f in flows}
    with open(args.out + ".started", "w") as fh:
        json.dump(local, fh)
    sel = selectors.DefaultSelector()
    for f in flows:
        sel.register(f.sock, selectors.EVENT_READ, f)
    dead: set[str] = set()
    counts = {"sent": 0, "replies": 0}

    def kill(f: _Flow, reason: str) -> None:
        if f.fid not in dead:
            errors[reason] += 1
            dead.add(f.fid)
            sel.unregister(f.sock)

    def receive(timeout: float) -> None:
        """Take the echoes that arrive within `timeout` and settle what each flow is owed."""
        for key, _ in sel.select(max(0.0, timeout)):
            f = key.data
            try:
                data = f.sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                kill(f, "tcp_reset" if f.tcp else "udp_error")
                continue
            f.last_reply = time.monotonic()
            if f.tcp:
                if not data:
                    kill(f, "tcp_reset")
                    continue
                f.owed -= len(data)
                counts["replies"] += data.count(b"\n")
            else:
                with contextlib.suppress(ValueError, IndexError):
                    f.pending.discard(int(data.split()[1]))
                counts["replies"] += 1

    order = sorted(flows, key=lambda f: f.phase)
    start = time.monotonic()
    end = start + args.duration
    ticks = 0
    max_lag = 0.0
    idx = 0  # next flow to send to within the current tick
    while True:
        now = time.monotonic()
        tick_start = start + ticks * args.tick
        # Send every message whose time has come.
        while idx < len(order) and tick_start + order[idx].phase <= now:
            f = order[idx]
            idx += 1
            if f.fid in dead:
                continue
            max_lag = max(max_lag, now - (tick_start + f.phase))
            msg = f"{f.fid} {ticks + 1}\n".encode()
            try:
                f.sock.send(msg)
            except OSError:
                kill(f, "tcp_reset" if f.tcp else "udp_error")
                continue
            counts["sent"] += 1
            if f.tcp:
                f.owed += len(msg)
            else:
                f.pending.add(ticks + 1)
        if idx >= len(order):
            ticks += 1
            idx = 0
            if start + ticks * args.tick >= end:
                break
            # TCP stalls: nothing echoed back for stall_s although bytes are owed.
            for f in order:
                if f.tcp and f.owed and now - f.last_reply > args.stall_s:
                    kill(f, "tcp_timeout")
        next_due = (start + ticks * args.tick + order[idx].phase) if order else end
        receive(min(next_due, end) - time.monotonic())
    # Drain: echoes of the last tick are still in flight.
    drain_end = time.monotonic() + args.drain_s
    while time.monotonic() < drain_end and any(
            (f.owed if f.tcp else f.pending) for f in order if f.fid not in dead):
        receive(0.1)
    for f in order:
        if f.fid in dead:
            continue
        if f.tcp and f.owed:
            kill(f, "tcp_timeout")
        elif not f.tcp:
            errors["udp_lost"] += len(f.pending)
    for f in order:
        f.sock.close()
    with open(args.out, "w") as fh:
        json.dump({"tcp": sum(f.tcp for f in flows), "udp": sum(not f.tcp for f in flows),
                   "ticks": ticks, "messages_sent": counts["sent"],
                   "replies": counts["replies"],
                   "max_send_lag_s": round(max_lag, 4), "errors": errors,
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
    c.add_argument("--connect-timeout", type=float, default=30.0)
    c.add_argument("--stall-s", type=float, default=5.0,
                   help="a TCP flow that echoes nothing for this long while owed is stalled")
    c.add_argument("--drain-s", type=float, default=3.0)
    c.add_argument("--out", required=True)
    args = ap.parse_args()
    (sink if args.cmd == "sink" else client)(args)


if __name__ == "__main__":
    main()
