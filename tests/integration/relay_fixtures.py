"""Fixtures for the relay's integration tests: a private namespace network (labs.labnet)
with far-side servers, and a controller for the `cfr` CLI running in the edge namespace.

Import the fixtures into a test module by name (`from tests.integration.relay_fixtures
import lab, relay`). Root is required; under CI=true a missing root FAILS the test
rather than skipping it, so CI can never silently run none of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labs.labnet import LabNet, wait_for
from tests.conftest import require_root

__all__ = ["lab", "relay", "RelayCtl", "chi_square_uniform_p", "settle"]


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    require_root()
    net = LabNet()
    try:
        net.up()
        srv = net.py_popen("fd", "serve", net.plan.fd_v4, net.plan.fd_v6,
                           stdout=subprocess.PIPE, text=True)
        line = srv.stdout.readline() if srv.stdout else ""
        assert "serving" in line, f"far-side server did not start: {line!r}"
        yield net
    finally:
        net.down()


class RelayCtl:
    """Drives `cfr` inside the lab's edge namespace."""

    def __init__(self, net: LabNet) -> None:
        self.net = net
        self.config: Path | None = None
        self.daemon: subprocess.Popen | None = None
        self.state = net.tmp / "state"

    # config / CLI
    def write(self, policy: str, **over: Any) -> Path:
        self.config = self.net.write_config(policy, **over)
        return self.config

    def cfr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.net.cfr(*args, timeout=timeout)

    def apply(self, policy: str, **over: Any) -> Path:
        cfg = self.write(policy, **over)
        r = self.cfr("apply", str(cfg))
        assert r.returncode == 0, r.stderr
        return cfg

    def rotate(self) -> None:
        assert self.config is not None
        r = self.cfr("rotate", str(self.config))
        assert r.returncode == 0, r.stderr

    def status(self, flows: bool = True) -> dict[str, Any]:
        assert self.config is not None
        args = ["status", str(self.config), "--json"] + ([] if flows else ["--no-flows"])
        r = self.cfr(*args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def drops(self) -> dict[str, int]:
        return self.status(flows=False)["drops"]

    def table(self) -> str:
        return self.net.cmd("edge", "nft", "-j", "list", "table", "inet", "cfr",
                            check=False).stdout

    # daemon
    def start_daemon(self, policy: str | None = None, **over: Any) -> subprocess.Popen:
        if policy is not None:
            self.write(policy, **over)
        assert self.config is not None
        log = open(self.net.tmp / "cfr-run.log", "a")  # noqa: SIM115 - owned by the process
        self.daemon = self.net.popen("edge", sys.executable, "-m", "relay.cli", "run",
                                     "--config", str(self.config), "--state-dir",
                                     str(self.state), "--status-interval", "0.5",
                                     stdout=log, stderr=log)
        ok = wait_for(lambda: (self.state / "status.json").exists()
                      and json.loads((self.state / "status.json").read_text()).get("pid")
                      == self._daemon_pid(), timeout=20)
        assert ok, f"cfr run did not come up: {self.log()}"
        return self.daemon

    def _daemon_pid(self) -> int | None:
        try:
            return int((self.state / "cfr.pid").read_text())
        except (OSError, ValueError):
            return None

    def signal_daemon(self, sig: int) -> None:
        pid = self._daemon_pid()
        assert pid is not None
        os.kill(pid, sig)

    def stop_daemon(self) -> int | None:
        if self.daemon is None:
            return None
        pid = self._daemon_pid()
        if pid is not None and self.daemon.poll() is None:
            os.kill(pid, signal.SIGTERM)
        try:
            rc = self.daemon.wait(15)
        except subprocess.TimeoutExpired:
            self.net.stop(self.daemon, signal.SIGKILL)
            rc = None
        self.daemon = None
        return rc

    def log(self) -> str:
        p = self.net.tmp / "cfr-run.log"
        return p.read_text() if p.exists() else ""

    # traffic
    def probe(self, role: str, dst: str, count: int, proto: str = "tcp") -> list[list]:
        out = json.loads(self.net.py(role, "probe", "--dst", dst, "--count", str(count),
                                     "--proto", proto, timeout=300))
        assert not out["errors"], out["errors"]
        return out["peers"]

    def cleanup(self) -> None:
        self.stop_daemon()
        self.net.cmd("edge", "nft", "delete", "table", "inet", "cfr", check=False)
        # Test isolation only (the relay itself never flushes conntrack).
        self.net.cmd("edge", "conntrack", "-F", check=False)
        for role in ("sub1", "sub2", "spoof", "fd", "edge"):  # learned path MTUs
            self.net.cmd(role, "ip", "route", "flush", "cache", check=False)
            self.net.cmd(role, "ip", "-6", "route", "flush", "cache", check=False)
        subprocess.run(["rm", "-rf", str(self.state)], check=False)
        log = self.net.tmp / "cfr-run.log"
        if log.exists():
            log.unlink()


@pytest.fixture
def relay(lab: LabNet) -> Iterator[RelayCtl]:
    ctl = RelayCtl(lab)
    try:
        yield ctl
    finally:
        ctl.cleanup()


def chi_square_uniform_p(counts: list[int]) -> float:
    """p-value of Pearson's chi-square test of `counts` against a uniform distribution."""
    from scipy.stats import chisquare

    return float(chisquare(counts).pvalue)


def settle(seconds: float = 0.2) -> None:
    time.sleep(seconds)


# -- capture analysis (scapy) -----------------------------------------------------------


def packets(path: Path) -> list:
    import scapy.layers.all  # noqa: F401 - registers the link/IP layers for dissection
    from scapy.utils import rdpcap

    return list(rdpcap(str(path)))


def raw_bytes(pkts: list) -> list[bytes]:
    return [bytes(p) for p in pkts]


def find_leaks(pkts: list, needles: dict[str, bytes]) -> dict[str, int]:
    """How many packets contain each forbidden byte sequence."""
    hits: dict[str, int] = {}
    for data in raw_bytes(pkts):
        for name, needle in needles.items():
            if needle in data:
                hits[name] = hits.get(name, 0) + 1
    return hits


def tcp_stream(pkts: list, src: str, sport: int, dst: str, dport: int) -> bytes:
    """In-order payload of one TCP direction, retransmissions removed."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    segs = []
    isn = None
    for p in pkts:
        ip = p.getlayer(IP) or p.getlayer(IPv6)
        tcp = p.getlayer(TCP)
        if ip is None or tcp is None:
            continue
        if (ip.src, tcp.sport, ip.dst, tcp.dport) != (src, sport, dst, dport):
            continue
        if tcp.flags & 0x02:  # SYN
            isn = tcp.seq + 1
        data = bytes(tcp.payload)
        if data:
            segs.append((tcp.seq, data))
    assert isn is not None, f"no SYN for {src}:{sport} -> {dst}:{dport}"
    out = bytearray()
    nxt = isn
    for seq, data in sorted(segs, key=lambda x: (x[0] - isn) % (1 << 32)):
        rel = (seq - nxt) % (1 << 32)
        if rel >= (1 << 31):  # starts before nxt: overlap / retransmission
            skip = (nxt - seq) % (1 << 32)
            if skip >= len(data):
                continue
            data = data[skip:]
        elif rel > 0:
            raise AssertionError(f"gap in captured stream at {(nxt - isn) % (1 << 32)}")
        out += data
        nxt = (nxt + len(data)) % (1 << 32)
    return bytes(out)
