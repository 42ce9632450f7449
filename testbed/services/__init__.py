"""Launchers for the testbed's real services (ECH front door, origins, DNS, load generator).

Each launcher takes a node (`testbed.netns.NetnsNode`) and starts its process there with
`node.spawn`, so the process is recorded in the run registry and dies with the controller.
`HostNode` runs in the controller's own network namespace, for loopback tests and
benchmarks that need no emulated network.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path

from testbed.errors import NetworkError
from testbed.lifecycle import RunRegistry
from testbed.netns import ManagedProcess, NetnsNode
from testbed.waiting import wait_until

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"


class HostNode(NetnsNode):
    """A node that is the host's own network namespace (no `ip netns exec`).

    Same interface as NetnsNode, so every launcher works on loopback unchanged."""

    def __init__(self, name: str = "host", registry: RunRegistry | None = None) -> None:
        super().__init__(name, "", registry)

    def __repr__(self) -> str:
        return f"HostNode({self.name!r})"

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)


def split_hostport(hostport: str) -> tuple[str, int]:
    """'[::1]:443' / '127.0.0.1:53' -> (host, port)."""
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def join_hostport(host: str, port: int) -> str:
    """(host, port) -> 'host:port', bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe_host(listen_host: str) -> str:
    """The address to poll for a listener bound to `listen_host` (wildcards -> loopback)."""
    if listen_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if listen_host == "::":
        return "::1"
    return listen_host


_TCP_PROBE = (
    "import socket,sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


def wait_tcp(
    node: NetnsNode,
    host: str,
    port: int,
    *,
    timeout: float,
    proc: ManagedProcess | None = None,
    what: str = "service",
) -> None:
    """Poll until a TCP connect to host:port succeeds inside `node`.

    Polling from inside the node is what tells readiness: the listener may only be
    reachable there. Fails fast, with the log tail, if the process died meanwhile."""
    def connects() -> bool:
        if proc is not None and not proc.alive():
            raise NetworkError(
                f"[{node.name}] {what} exited with status {proc.popen.returncode} before "
                f"listening on {join_hostport(host, port)}: {proc.log_tail(5)}"
            )
        probe = [sys.executable, "-S", "-c", _TCP_PROBE, host, str(port)]
        return node.run(probe, check=False, timeout=5).returncode == 0

    wait_until(connects, timeout, 0.05,
               f"[{node.name}] {what} to listen on {join_hostport(host, port)}",
               detail=lambda: proc.log_tail(5) if proc else "")


def is_ipv6(addr: str) -> bool:
    """True for an IPv6 literal."""
    return ipaddress.ip_address(addr).version == 6
