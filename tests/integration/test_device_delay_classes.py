"""Per-line access delays for device namespaces (testbed/devices.py, delay classes): devices
of three classes behind a scratch parent, one delay line per class; a ping from each device
to a host behind the parent must take its class's round trip, over IPv4 and IPv6, and
devices of one class must share the class's delay line. (The target sits behind the parent,
as the network does in a run: the parent routes forwarded replies by connection mark.)

Root only; everything is made under a run registry of its own and removed at the end. The
tolerance (at least the class RTT minus 0.5 ms, at most plus 5 ms median) allows for the
shared, loaded machine; the classes differ by far more.
"""

from __future__ import annotations

import re
import statistics
import subprocess

import pytest

from testbed.devices import STACK_PROFILES, DeviceNamespaces, DeviceSpec
from testbed.lifecycle import run_registry
from testbed.netns import NetnsNode
from tests.conftest import require_root

pytestmark = pytest.mark.integration

RTTS = (2.0, 8.0, 30.0)
FAR_V4, FAR_V6 = "198.19.255.254", "2001:db8:ffff::fe"


def _ping(ns: str, dst: str, v6: bool) -> float:
    out = subprocess.run(["ip", "netns", "exec", ns, "ping", "-6" if v6 else "-4", "-n",
                          "-c", "7", "-i", "0.2", "-W", "2", dst],
                         capture_output=True, text=True, check=False).stdout
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
    assert len(times) >= 5, f"ping {dst} from {ns}: {out[-300:]}"
    return statistics.median(times[1:])  # the first may wait for the delay line's warm-up


def test_each_class_has_its_round_trip() -> None:
    require_root()
    with run_registry("devices-delay-test") as reg:
        parent_ns = reg.name("dvparent")
        reg.record_netns(parent_ns)
        subprocess.run(["ip", "netns", "add", parent_ns], check=True)
        parent = NetnsNode("dvparent", parent_ns, reg)
        far_ns = reg.name("dvfar")
        reg.record_netns(far_ns)
        subprocess.run(["ip", "netns", "add", far_ns], check=True)
        # No DAD on the scratch link, as the testbed's nodes have none: while pf0's link-local
        # address is tentative the parent cannot solicit FAR_V6 for a forwarded packet and
        # the first IPv6 pings wait for the 1 s neighbour retransmit (a 299 ms median in CI).
        for ns in (parent_ns, far_ns):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            "net.ipv6.conf.all.accept_dad=0",
                            "net.ipv6.conf.default.accept_dad=0"], check=True)
        for cmd in (f"link add pf0 netns {parent_ns} type veth peer name f0 netns {far_ns}",
                    f"-n {parent_ns} link set pf0 up", f"-n {far_ns} link set f0 up",
                    f"-n {parent_ns} addr add 198.19.255.1/24 dev pf0",
                    f"-n {parent_ns} addr add 2001:db8:ffff::1/64 dev pf0 nodad",
                    f"-n {far_ns} addr add {FAR_V4}/24 dev f0",
                    f"-n {far_ns} addr add {FAR_V6}/64 dev f0 nodad",
                    f"-n {far_ns} route add default via 198.19.255.1",
                    f"-n {far_ns} -6 route add default via 2001:db8:ffff::1"):
            subprocess.run(["ip", *cmd.split()], check=True)
        lin = STACK_PROFILES["linux"]
        devices = [DeviceSpec(f"d{k}", lin, (f"198.18.9.{k + 1}", f"2001:db8:900::{k + 1}"),
                              delay_class=k % 3) for k in range(6)]
        dn = DeviceNamespaces(parent, reg, "198.18.0.1", delay_rtts_ms=RTTS)
        try:
            rep = dn.up(devices)
            assert rep.delay_s > 0 and [c["devices"] for c in dn.delay_classes()] == [2, 2, 2]
            got = {}
            for k, d in enumerate(devices):
                for v6, dst in ((False, FAR_V4), (True, FAR_V6)):
                    got[(k, v6)] = _ping(dn.ns_name(k), dst, v6)
                    want = RTTS[d.delay_class]
                    assert want - 0.5 <= got[(k, v6)] <= want + 5.0, (d, v6, got[(k, v6)])
            print("median ping RTT ms (device, v6):", {k: round(v, 2) for k, v in got.items()})
        finally:
            problems = dn.down()
            problems += reg.release_netns([parent_ns, far_ns])
        assert not problems
