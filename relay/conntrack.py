"""Conntrack over netlink: the relay's read-only view of the kernel's flow table.

Used for three things: the mapping log (NEW/DESTROY events), pool occupancy for `cfr
status` (a dump), and the kernel's NAT failure count (per-CPU stats). The relay never
writes or flushes conntrack: established flows must keep their mappings.

A plain NETLINK_NETFILTER socket carries the requests and event subscriptions; pyroute2's
ctnetlink message classes decode the replies. (pyroute2's own socket wrappers are
asynchronous in 0.9 and their event API changed between versions; the message decoders
are stable.)
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple, nfct_msg, nfct_stats_cpu

from relay.errors import KernelError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_STATS_CPU = 4
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFNLGRP_CONNTRACK_NEW = 1
NFNLGRP_CONNTRACK_DESTROY = 3
IPS_SRC_NAT = 1 << 4
PROTO_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp",
               socket.IPPROTO_ICMP: "icmp", socket.IPPROTO_ICMPV6: "icmpv6"}
RCVBUF = 8 << 20

NEW = "new"
DESTROY = "destroy"


@dataclass(frozen=True)
class Flow:
    """One conntrack entry, reduced to what the relay needs (no destination kept beyond
    the status computation; the mapping log never stores it)."""

    ct_id: int
    family: int  # 4 or 6
    proto: str
    src: str  # subscriber (original direction source)
    sport: int
    dst: str
    dport: int
    reply_dst: str  # the alias after SNAT (== src when not translated)
    reply_dport: int
    status: int

    @property
    def aliased(self) -> bool:
        return self.reply_dst != self.src or self.reply_dport != self.sport


def _port(t: NFCTAttrTuple, which: str) -> int:
    if t.proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6):
        return int(t.icmp_id or 0)
    v = getattr(t, which)
    return int(v or 0)


def _flow(msg: nfct_msg) -> Flow | None:
    fam = msg["nfgen_family"]
    if fam not in (socket.AF_INET, socket.AF_INET6):
        return None
    to, tr = msg.get_attr("CTA_TUPLE_ORIG"), msg.get_attr("CTA_TUPLE_REPLY")
    if to is None or tr is None:
        return None
    o = NFCTAttrTuple.from_netlink(fam, to)
    r = NFCTAttrTuple.from_netlink(fam, tr)
    return Flow(
        ct_id=int(msg.get_attr("CTA_ID") or 0),
        family=4 if fam == socket.AF_INET else 6,
        proto=PROTO_NAMES.get(o.proto, str(o.proto)),
        src=str(ipaddress.ip_address(o.saddr)), sport=_port(o, "sport"),
        dst=str(ipaddress.ip_address(o.daddr)), dport=_port(o, "dport"),
        reply_dst=str(ipaddress.ip_address(r.daddr)), reply_dport=_port(r, "dport"),
        status=int(msg.get_attr("CTA_STATUS") or 0),
    )


def _split(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    off = 0
    while off + 16 <= len(data):
        ln, typ, flags = struct.unpack_from("=IHH", data, off)
        if ln < 16:
            break
        yield typ, flags, data[off:off + ln]
        off += (ln + 3) & ~3


def _socket() -> socket.socket:
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as e:
        raise KernelError(f"cannot open a netfilter netlink socket: {e.strerror}") from None


def _request(msg_type: int) -> Iterator[bytes]:
    """Send one dump request; yield each reply message until NLMSG_DONE."""
    s = _socket()
    try:
        s.bind((0, 0))
        hdr = struct.pack("=IHHII", 20, (NFNL_SUBSYS_CTNETLINK << 8) | msg_type,
                          NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        s.send(hdr + struct.pack("=BBH", socket.AF_UNSPEC, 0, 0))
        while True:
            data = s.recv(1 << 20)
            for typ, _flags, raw in _split(data):
                if typ == NLMSG_DONE:
                    return
                if typ == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", raw, 16)[0]
                    if code == 0:
                        continue
                    raise KernelError(f"conntrack request failed: {os.strerror(code)}")
                yield raw
    finally:
        s.close()


def dump() -> list[Flow]:
    """Every conntrack entry of this network namespace (IPv4 and IPv6)."""
    flows = []
    for raw in _request(IPCTNL_MSG_CT_GET):
        m = nfct_msg(raw)
        m.decode()
        f = _flow(m)
        if f is not None:
            flows.append(f)
    return flows


def stats() -> dict[str, int]:
    """Per-CPU conntrack statistics summed. `insert_failed`/`drop` grow when SNAT finds no
    free (alias, port) tuple: that is how pool exhaustion shows up in the kernel."""
    total: dict[str, int] = {}
    for raw in _request(IPCTNL_MSG_CT_GET_STATS_CPU):
        m = nfct_stats_cpu(raw)
        m.decode()
        for k, v in m["attrs"]:
            if k.startswith("CTA_STATS_") and isinstance(v, int):
                key = k[len("CTA_STATS_"):].lower()
                total[key] = total.get(key, 0) + v
    return total


class EventStream:
    """Subscription to conntrack NEW and DESTROY events (non-blocking; use with select).

    On overflow (ENOBUFS) events are lost; `lost` counts those incidents so the caller can
    resynchronise from a dump.
    """

    def __init__(self) -> None:
        self.sock = _socket()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        groups = (1 << (NFNLGRP_CONNTRACK_NEW - 1)) | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1))
        self.sock.bind((0, groups))
        self.sock.setblocking(False)
        self.lost = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[tuple[str, Flow]]:
        """All events queued now."""
        out: list[tuple[str, Flow]] = []
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            for typ, _flags, raw in _split(data):
                kind = typ & 0xFF
                if typ >> 8 != NFNL_SUBSYS_CTNETLINK or kind not in (IPCTNL_MSG_CT_NEW,
                                                                     IPCTNL_MSG_CT_DELETE):
                    continue
                m = nfct_msg(raw)
                m.decode()
                f = _flow(m)
                if f is not None:
                    out.append((NEW if kind == IPCTNL_MSG_CT_NEW else DESTROY, f))

    def close(self) -> None:
        self.sock.close()
