"""Device namespaces (testbed/devices.py): the generated configuration, without root."""

from __future__ import annotations

from testbed.devices import (
    MARK_BASE,
    STACK_PROFILES,
    TABLE_BASE,
    DeviceNamespaces,
    DeviceSpec,
    StackProfile,
)
from testbed.lifecycle import RunRegistry
from testbed.netns import NetnsNode


class _Registry(RunRegistry):
    """A registry that never touches the state directory."""

    def __init__(self) -> None:  # noqa: D107 - no state file for a unit test
        self._prefix = "cfrt1"

    @property
    def prefix(self) -> str:
        return self._prefix

    def name(self, suffix: str) -> str:
        return f"{self._prefix}-{suffix}"


def make(n: int = 2) -> tuple[DeviceNamespaces, list[DeviceSpec]]:
    dn = DeviceNamespaces(NetnsNode("crowd", "cfrt1-crowd"), _Registry(), "198.18.0.1")
    devs = [DeviceSpec("a", STACK_PROFILES["linux"], ("198.18.1.5", "2001:db8:0:100::a"), 0, 2),
            DeviceSpec("b", STACK_PROFILES["windows-like"], ("198.18.1.5", "2001:db8:0:100::b"),
                       1, 2)][:n]
    return dn, devs


def test_create_lines_make_namespaces_and_veths_in_place() -> None:
    dn, devs = make()
    lines = dn.create_lines(devs)
    assert lines[:2] == ["netns add cfrt1-dv0", "netns add cfrt1-dv1"]
    assert lines[2] == ("link add cfrt1v0 address 02:cf:01:00:00:00 netns cfrt1-crowd type veth "
                        "peer name eth0 address 02:cf:02:00:00:00 netns cfrt1-dv0")


def test_parent_routes_replies_by_mark_before_the_local_table() -> None:
    dn, devs = make()
    v4 = dn.parent_lines(devs, 4)
    v6 = dn.parent_lines(devs, 6)
    # the shared household IPv4 address has a permanent neighbour on each device's veth
    assert "neigh replace 198.18.1.5 lladdr 02:cf:02:00:00:01 dev cfrt1v1 nud permanent" in v4
    assert not any("2001:db8" in line for line in v4)
    assert ("neigh replace 2001:db8:0:100::b lladdr 02:cf:02:00:00:01 dev cfrt1v1 "
            "nud permanent") in v6
    assert f"route replace 0.0.0.0/0 dev cfrt1v0 table {TABLE_BASE}" in v4
    assert f"rule add pref 50 fwmark {MARK_BASE + 1:#x} lookup {TABLE_BASE + 1}" in v6
    # the local table moves behind the mark rules, in both families
    for lines in (v4, v6):
        assert lines[-2:] == ["rule add pref 100 lookup local", "rule del pref 0 lookup local"]
    nft = dn.nft_ruleset(devs)
    assert "table inet cfrt1_devices" in nft
    assert f'"cfrt1v1" : {MARK_BASE + 1:#x}' in nft
    assert "ct direction reply meta mark set ct mark" in nft  # replies only
    assert dn.parent_sysctls(devs)["net/ipv4/conf/cfrt1v0/accept_local"] == "1"


def test_household_devices_get_disjoint_port_ranges() -> None:
    _, devs = make()
    (a0, a1), (b0, b1) = devs[0].port_range(), devs[1].port_range()
    assert a0 <= a1 < b0 <= b1
    assert a1 - a0 > 10000


def test_stack_profiles_differ_in_what_a_syn_shows() -> None:
    seen = {tuple(sorted(p.sysctls().items())) for p in STACK_PROFILES.values()}
    assert len(seen) == len(STACK_PROFILES)
    w = STACK_PROFILES["windows-like"].sysctls()
    assert w["net/ipv4/ip_default_ttl"] == "128" and w["net/ipv4/tcp_timestamps"] == "0"
    assert StackProfile("x", hop_limit=200).sysctls()["net/ipv6/conf/eth0/hop_limit"] == "200"
