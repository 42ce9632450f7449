"""Attach Mininet's CLI to a network that another process (a detached `cfrbench up`) runs.

Mininet's CLI needs node objects with shells. These nodes open their shell inside the
existing named namespace (`ip netns exec`) instead of creating a new one, so the CLI's
commands (`s1 ping fd`, `pingall`, `fd ss -tlnp`) act on the running network.
"""

from __future__ import annotations

import os
import pty
import select

from mininet.net import Mininet
from mininet.node import Node


class AttachedNode(Node):
    """A Mininet node whose shell runs in an already existing named namespace."""

    def __init__(self, name: str, netns: str, ip: str | None = None) -> None:
        self.netns_name = netns
        self._attached_ip = ip
        super().__init__(name, inNamespace=True)

    def startShell(self, mnopts: str | None = None) -> None:  # noqa: N802 - Mininet API
        # Same protocol as Node.startShell (prompt sentinel chr(127) on a pty), other command.
        cmd = ["mnexec", "-cd", "ip", "netns", "exec", self.netns_name,
               "env", "PS1=" + chr(127), "bash", "--norc", "--noediting", "-is",
               "mininet:" + self.name]
        self.master, self.slave = pty.openpty()
        self.shell = self._popen(cmd, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                 close_fds=False)
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.shell.pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed = False
        self.lastCmd = None
        self.lastPid = None
        self.readbuf = ""
        while True:
            data = self.read(1024)
            if data and data[-1] == chr(127):
                break
            self.pollOut.poll()
        self.waiting = False
        self.cmd("unset HISTFILE; stty -echo; set +m")

    def IP(self, intf: object = None) -> str | None:  # noqa: N802 - Mininet API
        return self._attached_ip

    def defaultIntf(self) -> _AddressOnly:  # noqa: N802 - Mininet API
        """The CLI replaces node names in commands with defaultIntf().updateIP()."""
        return _AddressOnly(self._attached_ip)


class _AddressOnly:
    """Just enough of a Mininet Intf for the CLI's name-to-address substitution."""

    def __init__(self, ip: str | None) -> None:
        self.ip = ip
        self.name = "attached"

    def updateIP(self) -> str | None:  # noqa: N802 - Mininet API
        return self.ip


def attached_mininet(nodes: dict[str, tuple[str, str | None]]) -> Mininet:
    """A Mininet object holding attached nodes: {name: (netns, primary IPv4)}."""
    mn = Mininet(topo=None, controller=None, build=False, cleanup=False)
    for name, (netns, ip) in nodes.items():
        node = AttachedNode(name, netns, ip)
        mn.hosts.append(node)
        mn.nameToNode[name] = node
    mn.built = True
    return mn


def detach_all(mn: Mininet) -> None:
    """End the attached shells; the network itself keeps running."""
    for node in mn.hosts:
        node.terminate()
