"""The delay line on a real link: A <-> [link namespace running delayline] <-> B.

Root only. Creates its own namespaces `dlt<hex>-a`, `-l`, `-b` (never touching any other) and
removes them, with the delay-line process, in teardown. Under CI=true a missing root or tool
is a failure, not a skip: CI must exercise the mechanism every result depends on.

The RTT tolerance here (median within 0.5 ms of 2 x 10 ms) is looser than the calibration
target (0.3 ms median, 2 ms p99; see labs/delayline_lab.py) to survive noisy CI hosts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.delayline_lab import V4_A, V4_B, V6_B, delay_net, nsexec
from testbed.delayline import DirectionSpec
from testbed.delayline.build import current_binary
from testbed.waiting import wait_until

pytestmark = pytest.mark.integration

IN_CI = os.environ.get("CI") == "true"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: integration tests never skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def delayline_bin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        _unavailable("needs root (network namespaces, AF_PACKET)")
    for tool in ("ip", "ethtool", "ping", "iperf3"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed (run 'make setup')")
    binary = current_binary(tmp_path_factory.mktemp("delayline-bin"))
    if binary is None:
        _unavailable("delayline is not built and there is no Go toolchain (run 'make setup')")
    yield binary


def ping_rtts(ns: str, dst: str, count: int, interval: float = 0.01) -> tuple[int, list[float]]:
    """(exit status, RTTs in ms) of ping(8) from namespace ns."""
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", dst]
    proc = subprocess.run(nsexec(ns, *argv), capture_output=True, text=True, check=False)
    return proc.returncode, [float(m) for m in re.findall(r"time=([\d.]+) ms", proc.stdout)]


def test_10ms_each_way_rtt_v4_v6_and_stats(delayline_bin: Path) -> None:
    spec = DirectionSpec(delay_ms=10)
    with delay_net(spec, spec, binary=str(delayline_bin)) as net:
        before = net.read_stats()
        code, rtts = ping_rtts(net.a, V4_B, 300)
        assert code == 0 and len(rtts) == 300
        median = statistics.median(rtts)
        # Never early (a delay line cannot be faster than its delay), and at most 0.5 ms late.
        assert 20.0 <= median <= 20.5, (median, sorted(rtts)[::30])

        code6, rtts6 = ping_rtts(net.a, V6_B, 50)
        assert code6 == 0 and len(rtts6) == 50
        assert 20.0 <= statistics.median(rtts6) <= 20.5, rtts6

        stats = net.stop()
    assert stats["version"] == 1 and stats["if_a"] == "la" and stats["if_b"] == "lb"
    for direction in ("a2b", "b2a"):
        d = stats[direction]
        assert d["spec"] == "delay=10ms"
        # Every frame received is accounted for: forwarded, dropped (none here) or in flight.
        assert d["rx_packets"] == d["tx_packets"] + d["in_flight"] + d["tx_errors"]
        assert d["dropped_loss"] == d["dropped_queue"] == d["dropped_overload"] == 0
        assert d["tx_errors"] == 0 and d["oversize"] == 0
        # 350 echo requests went A -> B and 350 replies B -> A during the test.
        assert d["tx_packets"] - before[direction]["tx_packets"] >= 350
        assert d["tx_bytes"] >= d["tx_packets"] * 60


def test_loss_100_in_one_direction_blocks_pings(delayline_bin: Path) -> None:
    with delay_net(DirectionSpec(loss_pct=100), DirectionSpec(), binary=str(delayline_bin)) as net:
        code, rtts = ping_rtts(net.a, V4_B, 20)
        assert code != 0 and rtts == []
        # From B too: B's ARP requests reach A, but A's replies travel A -> B and are lost.
        code, rtts = ping_rtts(net.b, V4_A, 20)
        assert code != 0 and rtts == []
        stats = net.stop()
    a2b, b2a = stats["a2b"], stats["b2a"]
    # How many frames A sends depends on ARP timing (19 to 31 seen: requests, retries and
    # queued echoes); at least its 3 ARP probes, and none may get through.
    assert a2b["rx_packets"] >= 3 and a2b["tx_packets"] == 0
    assert a2b["dropped_loss"] == a2b["rx_packets"]
    assert b2a["dropped_loss"] == 0 and b2a["tx_packets"] == b2a["rx_packets"] > 0


def _wait_listening(netns: str, port: int, timeout: float = 10.0) -> None:
    def listening() -> bool:
        return bool(subprocess.run(nsexec(netns, "ss", "-Hltn", f"sport = :{port}"),
                                   capture_output=True, text=True, check=False).stdout.strip())

    wait_until(listening, timeout, 0.05, f"a listener on port {port} in {netns}")


def test_rate_limit_caps_tcp_throughput(delayline_bin: Path) -> None:
    """TCP through rate=20mbit gets at most 20 Mbit/s, and most of it (an upper bound on a
    shared machine is safe to assert; the lower bound is loose)."""
    spec = DirectionSpec(delay_ms=5, rate_mbit=20, queue_packets=100)
    with delay_net(spec, spec, binary=str(delayline_bin)) as net:
        server = subprocess.Popen(
            nsexec(net.b, "iperf3", "-s", "-1", "-B", V4_B),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(net.b, 5201)  # the client must not race the server's bind
            client = subprocess.run(
                nsexec(net.a, "iperf3", "-c", V4_B, "-t", "4", "-J", "--connect-timeout", "3000"),
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
        finally:
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        result = json.loads(client.stdout)
        assert "error" not in result, result.get("error")
        mbit = result["end"]["sum_received"]["bits_per_second"] / 1e6
        # iperf3 counts TCP payload; frames carry ~3% headers more on the emulated wire.
        assert 10 <= mbit <= 20.5, mbit
        stats = net.stop()
    assert stats["a2b"]["oversize"] == 0 and stats["a2b"]["tx_errors"] == 0


def test_subscriber_rate_link_never_drops_by_itself(delayline_bin: Path) -> None:
    """A 1 Gbit/s, 10 ms link (queue: one bandwidth-delay product) carrying bulk TCP: only
    the configured queue may drop. Any frame the delay line drops by itself (it fell
    behind, its ring overflowed, a send failed) fails the run's calibration, so it must be
    zero here even on a loaded CI host; the shaper must also cap what it carries."""
    spec = DirectionSpec(delay_ms=10, rate_mbit=1000, queue_packets=1700)
    with delay_net(spec, spec, binary=str(delayline_bin)) as net:
        before = net.read_stats()
        server = subprocess.Popen(
            nsexec(net.b, "iperf3", "-s", "-1", "-B", V4_B),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(net.b, 5201)
            t0 = time.monotonic()
            client = subprocess.run(
                nsexec(net.a, "iperf3", "-c", V4_B, "-t", "5", "-J", "--connect-timeout", "3000"),
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            elapsed = time.monotonic() - t0
        finally:
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        result = json.loads(client.stdout)
        assert "error" not in result, result.get("error")
        stats = net.stop()
    for direction in ("a2b", "b2a"):
        d = stats[direction]
        assert (d["dropped_overload"], d["kernel_drops"], d["tx_errors"]) == (0, 0, 0), d
    # TCP payload of full frames is 1448 of 1514 bytes: at most 957 Mbit/s through 1 Gbit/s.
    mbit = result["end"]["sum_received"]["bits_per_second"] / 1e6
    assert 100 <= mbit <= 960, mbit
    l2_mbit = 8 * (stats["a2b"]["tx_bytes"] - before["a2b"]["tx_bytes"]) / elapsed / 1e6
    assert l2_mbit <= 1010, l2_mbit
