"""Mininet node classes: hosts and hosts-as-routers, configured from plain parameters.

(Running commands in an existing node's namespace, by name, is `testbed.netns`.)

All configuration a node needs (addresses, routes, forwarding, an access bridge) arrives as
node parameters computed by the topology, so the same topology runs under `cfrbench` and
under `mn --custom`. Configuration is applied with one `ip -batch` per node through nsenter
rather than one shell round trip per command: it keeps a 20-node network's start-up fast.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from mininet.node import Node

from testbed.errors import NetworkError

# Sysctls every node gets: no DAD delay (addresses usable at once), no router
# advertisements (routes are static), strict source validation left to the relay.
BASE_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv6.conf.all.keep_addr_on_down": "1",
}
ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
}


def _sysctl_script(values: dict[str, str]) -> str:
    return " && ".join(f"sysctl -qw {k}={v}" for k, v in values.items())


class NetNode(Node):
    """A host or router of the emulated network (a network namespace with a shell).

    Parameters (all optional, set by the topology):
      addrs:     {interface: [cidr, ...]} addresses per interface ('lo' allowed)
      routes:    [(prefix, gateway_or_None, device_or_None, src_or_None)] static routes
      router:    enable IPv4/IPv6 forwarding
      bridge:    {"name": str, "ports": [interface, ...]} an L2 segment inside this node
      role:      a word for listings ('subscriber', 'router', 'frontdoor', ...)
    """

    def __init__(self, name: str, role: str = "host", **params) -> None:
        self.role = role
        params.pop("inNamespace", None)
        super().__init__(name, inNamespace=True, **params)

    def config(self, addrs: dict[str, list[str]] | None = None,  # type: ignore[override]
               routes: Iterable[tuple[str, str | None, str | None, str | None]] | None = None,
               router: bool = False, bridge: dict | None = None, **params):
        params.pop("ip", None)  # addresses come from `addrs`, never Mininet's 10/8 default
        result = super().config(ip=None, **params)
        sysctls = dict(BASE_SYSCTLS)
        if router:
            sysctls.update(ROUTER_SYSCTLS)
        self._sh(_sysctl_script(sysctls))
        lines: list[str] = []
        if bridge:
            br = bridge["name"]
            lines.append(f"link add name {br} type bridge forward_delay 0 stp_state 0")
            for port in bridge["ports"]:
                lines.append(f"link set {port} master {br}")
            lines.append(f"link set {br} up")
        for intf in self.intfNames():
            lines.append(f"link set {intf} up")
        lines.append("link set lo up")
        for intf, cidrs in (addrs or {}).items():
            for cidr in cidrs:
                extra = " nodad" if ":" in cidr else ""
                lines.append(f"addr add {cidr} dev {intf}{extra}")
        for prefix, gateway, dev, src in routes or ():
            line = f"route replace {prefix}"  # ip infers the family from the prefix
            if gateway:
                line += f" via {gateway}"
            if dev:
                line += f" dev {dev}"
            if src:
                line += f" src {src}"
            lines.append(line)
        self.ip_batch(lines)
        ordered = (addrs or {}).get("lo", []) + [c for k, v in (addrs or {}).items()
                                                 if k != "lo" for c in v]
        self.primary_v4 = next((c.split("/")[0] for c in ordered if ":" not in c), None)
        return result

    def IP(self, intf=None):  # noqa: N802 - Mininet API
        """Mininet's pingall and CLI use this; our addresses are set outside Intf.setIP."""
        return super().IP(intf) or getattr(self, "primary_v4", None)

    def _sh(self, script: str) -> None:
        self.nsenter(["sh", "-c", script])

    def nsenter(self, argv: list[str], input: str | None = None) -> str:
        """Run a command in this node's namespace without the shell round trip."""
        proc = subprocess.run(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv],
            input=input, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise NetworkError(
                f"[{self.name}] {' '.join(argv[:3])}... failed: {proc.stderr.strip()}"
            )
        return proc.stdout

    def ip_batch(self, lines: list[str]) -> None:
        """Apply `ip` commands in one process; the error names the node and failing line."""
        if not lines:
            return
        proc = subprocess.run(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", "ip", "-batch", "-"],
            input="\n".join(lines) + "\n", capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise NetworkError(f"[{self.name}] ip -batch failed: {proc.stderr.strip()}")
