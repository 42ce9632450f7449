"""The emulated network as a context manager: build, name, start, tear down.

Composition in Mininet's layering: `testbed.nodes` (Mininet node classes) and
`testbed.netns` (commands in a node's namespace) run commands, `testbed.links` configure
interfaces, this module composes them. Each Mininet node's namespace is attached under a
run-unique name (`<prefix>-<node>`, recorded *before* it exists) so that `cfrbench exec`
can reach it and `cfrbench clean` can remove it after a crash, and nothing else.

The topology comes from the layer above as a class (`topology=`, resolved from a
`--topology` spec by `topologies.load_topology`); this module never imports `topologies/`.
After `start()`, `net.roles` says which node does what (`testbed.roles.Roles`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mininet.log import setLogLevel
from mininet.net import Mininet

from testbed.errors import NetworkError
from testbed.lifecycle import RunRegistry
from testbed.links import DelayLineNode, choose_mechanism
from testbed.netns import NetnsNode
from testbed.roles import Roles, TopologyClass, resolve_topology
from testbed.scenario import Scenario


@dataclass
class NodeInfo:
    """What `cfrbench` shows and records about one node."""

    name: str
    role: str
    netns: str
    addresses: dict[str, list[str]] = field(default_factory=dict)


class Network:
    """A running emulated network. Use as `with Network(scenario, registry) as net: ...`.

    The network records its namespaces in the run's registry and removes them when it
    stops, so one run can bring several networks up and down in turn. Without a registry
    it makes (and closes) its own. `topology` is the topology class (from
    `topologies.load_topology(scenario.topology)`); `topo_cls` is its former name."""

    def __init__(self, scenario: Scenario, registry: RunRegistry | None = None,
                 topology: TopologyClass | None = None,
                 topo_cls: TopologyClass | None = None) -> None:
        self.scenario = scenario.validate()
        self.topo_cls = topology or topo_cls or resolve_topology(scenario.topology)
        self.owns_registry = registry is None
        self.registry = registry if registry is not None else RunRegistry("net")
        self._netns: list[str] = []
        self._workdir: Path | None = None
        self._stopped = False
        self.mechanism = ""
        self.mn: Mininet | None = None
        self.nodes: dict[str, NetnsNode] = {}
        self.info: dict[str, NodeInfo] = {}
        self.timings: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Network:
        t0 = time.monotonic()
        setLogLevel("warning")
        self.mechanism = choose_mechanism(self.scenario.mechanism)
        workdir = self._workdir = self.registry.make_tmpdir("net")
        topo = self.topo_cls(scenario=self.scenario, mechanism=self.mechanism,
                             workdir=str(workdir))
        self.topo = topo
        names = list(topo.hosts()) + list(topo.switches())
        taken = [n for n in map(self.registry.name, names) if Path("/run/netns", n).exists()]
        if taken:
            raise NetworkError(f"namespaces {', '.join(taken)} exist already: is another "
                               f"network of run {self.registry.prefix} still up?")
        for name in names:  # record first: a crash from here on is still cleanable
            self._netns.append(self.registry.name(name))
            self.registry.record_netns(self.registry.name(name))
        self.registry.defer(self._stop_mininet)
        self.mn = Mininet(topo=topo, controller=None, build=False, autoSetMacs=False,
                          waitConnected=False, cleanup=False)
        self.mn.build()
        for name in names:
            node = self.mn[name]
            netns = self.registry.name(name)
            out = subprocess.run(["ip", "netns", "attach", netns, str(node.pid)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise NetworkError(f"cannot name namespace of {name} as {netns}: "
                                   f"{out.stderr.strip()}")
            if name in topo.hosts():
                self.nodes[name] = NetnsNode(name, netns, self.registry)
                gnode = topo.graph.nodes[name]
                self.info[name] = NodeInfo(name, gnode.role, netns, dict(gnode.addrs))
        self.timings["build_s"] = time.monotonic() - t0
        self.mn.start()  # starts the delay lines
        self.timings["up_s"] = time.monotonic() - t0
        self.registry.set_info(
            network={"nodes": {n: vars(i) for n, i in self.info.items()},
                     "delay_nodes": [s for s in topo.switches()],
                     "roles": topo.roles.to_dict(),
                     "mechanism": self.mechanism, "scenario": self.scenario.to_dict()}
        )
        return self

    def _stop_mininet(self) -> None:
        if self.mn is None:
            return
        t0 = time.monotonic()
        for switch in self.mn.switches:
            with contextlib.suppress(Exception):
                switch.stop(deleteIntfs=False)
        for node in self.mn.hosts + self.mn.switches:
            with contextlib.suppress(Exception):
                node.terminate()
        self.mn = None
        self.timings["stop_mininet_s"] = time.monotonic() - t0

    def stop(self) -> list[str]:
        """Stop Mininet, delete this network's namespaces and work dir (idempotent)."""
        if self._stopped:
            return []
        self._stopped = True
        t0 = time.monotonic()
        self._stop_mininet()
        problems = self.registry.release_netns(self._netns)
        if self._workdir is not None:
            self.registry.release_tmpdir(self._workdir)
        if self.owns_registry:
            problems += self.registry.close()
        self.timings["down_s"] = time.monotonic() - t0
        return problems

    def __enter__(self) -> Network:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- access -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> NetnsNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise NetworkError(f"no node {name!r}; nodes: {', '.join(self.nodes)}") from None

    @property
    def graph(self):
        return self.topo.graph

    @property
    def roles(self) -> Roles:
        """Which node does what in this network's topology (available once started)."""
        topo = getattr(self, "topo", None)
        if topo is None:
            raise NetworkError("the network has no roles before start()")
        return topo.roles

    def interface_towards(self, node: str, peer: str) -> str:
        """The name of `node`'s interface on its link to `peer` (from the graph)."""
        for link in self.graph.links:
            if (link.a, link.b) == (node, peer):
                return link.a_if
            if (link.b, link.a) == (node, peer):
                return link.b_if
        raise NetworkError(f"no link between {node} and {peer}")

    def hosts(self, role: str | None = None) -> list[str]:
        return [n for n, i in self.info.items() if role is None or i.role == role]

    def delay_nodes(self) -> list[DelayLineNode]:
        return [s for s in (self.mn.switches if self.mn else []) if isinstance(s, DelayLineNode)]

    def primary_addresses(self, name: str) -> tuple[str | None, str | None]:
        """The (v4, v6) address a node is best reached at: its service or first address."""
        addrs = self.info[name].addresses
        ordered = addrs.get("lo", []) + [a for k, v in addrs.items() if k != "lo" for a in v]
        v4 = next((a.split("/")[0] for a in ordered if ":" not in a), None)
        segment = self.graph.plan.nets["access_segment_v6"]
        v6 = next((a.split("/")[0] for a in ordered
                   if ":" in a and ipaddress.ip_address(a.split("/")[0]) not in segment), None)
        return v4, v6
