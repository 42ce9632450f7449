"""A network described as a graph, with static routes derived from it, emitted as a Mininet Topo.

Topology files say *what* is connected (nodes, links, who owns which prefix); this module
works out every interface address (from the address plan) and every static route (shortest
path by hop count, routers only transit), then emits Mininet nodes and links, inserting a
delay-line node into each link that needs userspace emulation. Keeping route computation
here means no topology file writes a route by hand.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

from mininet.topo import Topo

from testbed.addressing import AddressPlan, LinkAddresses, Network
from testbed.errors import UsageError
from testbed.links import DelayLineNode, LinkSpec, ShapedLink
from testbed.nodes import NetNode

IFNAMSIZ = 15


def intf_name(node: str, peer: str) -> str:
    name = f"{node}-{peer}"
    return name[:IFNAMSIZ]


@dataclass
class GraphNode:
    name: str
    role: str
    router: bool = False
    owned: list[Network] = field(default_factory=list)
    addrs: dict[str, list[str]] = field(default_factory=dict)
    routes: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    bridge: dict | None = None
    default_src_v6: str | None = None


@dataclass
class GraphLink:
    a: str
    b: str
    link_class: str
    spec: LinkSpec
    addrs: LinkAddresses | None  # None: the link joins an L2 segment (addresses on a bridge)
    index: int

    @property
    def a_if(self) -> str:
        return intf_name(self.a, self.b)

    @property
    def b_if(self) -> str:
        return intf_name(self.b, self.a)


class NetworkGraph:
    def __init__(self, plan: AddressPlan) -> None:
        self.plan = plan
        self.nodes: dict[str, GraphNode] = {}
        self.links: list[GraphLink] = []
        self._link_counter = {"access": 0, "internet": 0}

    # -- description ------------------------------------------------------------------------
    def add_node(self, name: str, role: str, router: bool = False) -> GraphNode:
        if name in self.nodes:
            raise UsageError(f"node {name!r} defined twice")
        if len(name) > 5 or not name.isalnum():
            raise UsageError(f"node name {name!r}: use at most 5 letters/digits")
        node = GraphNode(name, role, router)
        self.nodes[name] = node
        return node

    def add_link(self, a: str, b: str, link_class: str, spec: LinkSpec,
                 side: str | None = "internet") -> GraphLink:
        """Link a (closer to subscribers) and b; side picks the address block, None for none."""
        for n in (a, b):
            if n not in self.nodes:
                raise UsageError(f"link {a}-{b}: unknown node {n!r}")
        addrs = None
        if side is not None:
            v6_index = sum(self._link_counter.values())
            addrs = self.plan.link(self._link_counter[side], side, v6_index)
            self._link_counter[side] += 1
            self.nodes[a].addrs.setdefault(intf_name(a, b), []).extend(
                [f"{addrs.a4}/30", f"{addrs.a6}/64"])
            self.nodes[b].addrs.setdefault(intf_name(b, a), []).extend(
                [f"{addrs.b4}/30", f"{addrs.b6}/64"])
        link = GraphLink(a, b, link_class, spec, addrs, len(self.links))
        self.links.append(link)
        return link

    def own(self, node: str, prefix: Network) -> None:
        """`node` is where `prefix` lives: every router routes it towards `node`."""
        self.nodes[node].owned.append(prefix)

    def add_service_address(self, node: str, v4: object, v6: object) -> None:
        """A /32 + /128 on the node's loopback, routed to it (services bind to these)."""
        self.nodes[node].addrs.setdefault("lo", []).extend([f"{v4}/32", f"{v6}/128"])
        self.own(node, ipaddress.ip_network(f"{v4}/32"))
        self.own(node, ipaddress.ip_network(f"{v6}/128"))

    # -- routes -----------------------------------------------------------------------------
    def _neighbors(self, name: str) -> list[tuple[str, GraphLink]]:
        out = []
        for link in self.links:
            if link.a == name:
                out.append((link.b, link))
            elif link.b == name:
                out.append((link.a, link))
        return out

    def _first_hops(self, source: str) -> dict[str, tuple[str, GraphLink]]:
        """For every reachable node: (first-hop neighbor, link to it). Only routers transit."""
        first: dict[str, tuple[str, GraphLink]] = {}
        queue: deque[str] = deque()
        for nb, link in self._neighbors(source):
            if nb not in first:
                first[nb] = (nb, link)
                queue.append(nb)
        while queue:
            here = queue.popleft()
            if not self.nodes[here].router:
                continue
            for nb, _ in self._neighbors(here):
                if nb != source and nb not in first:
                    first[nb] = first[here]
                    queue.append(nb)
        return first

    @staticmethod
    def _gateway(link: GraphLink, neighbor: str, version: int) -> str | None:
        if link.addrs is None:
            return None
        if version == 4:
            return str(link.addrs.a4 if neighbor == link.a else link.addrs.b4)
        return str(link.addrs.a6 if neighbor == link.a else link.addrs.b6)

    def compute_routes(self) -> None:
        """Fill in every node's static routes from ownership and link subnets."""
        for name, node in self.nodes.items():
            neighbors = self._neighbors(name)
            if not node.router:
                addressed = [(nb, lk) for nb, lk in neighbors if lk.addrs is not None]
                if len(addressed) == 1:
                    nb, lk = addressed[0]
                    node.routes.append(("0.0.0.0/0", self._gateway(lk, nb, 4), None, None))
                    node.routes.append(("::/0", self._gateway(lk, nb, 6), None,
                                        node.default_src_v6))
                continue
            first = self._first_hops(name)
            attached = {id(lk) for _, lk in neighbors}
            for other, (nb, lk) in first.items():
                prefixes: list[Network] = list(self.nodes[other].owned)
                for olink in self.links:
                    if olink.addrs is None or id(olink) in attached:
                        continue
                    if other in (olink.a, olink.b) and self._closer_end(name, olink) == other:
                        prefixes += [olink.addrs.v4_net, olink.addrs.v6_net]
                for prefix in prefixes:
                    gw = self._gateway(lk, nb, prefix.version)
                    if gw is not None:
                        node.routes.append((str(prefix), gw, None, None))

    def _closer_end(self, source: str, link: GraphLink) -> str:
        """Which end of `link` the source reaches first (the subnet is routed towards it)."""
        dist = {source: 0}
        queue = deque([source])
        while queue:
            here = queue.popleft()
            if here != source and not self.nodes[here].router:
                continue
            for nb, _ in self._neighbors(here):
                if nb not in dist:
                    dist[nb] = dist[here] + 1
                    queue.append(nb)
        return link.a if dist.get(link.a, 1 << 30) <= dist.get(link.b, 1 << 30) else link.b

    # -- emission ---------------------------------------------------------------------------
    def emit(self, topo: Topo, mechanism: str, seed: int = 1,
             workdir: str | None = None) -> None:
        """Add nodes and links to a Mininet Topo; delayed links get a delay-line node."""
        for node in self.nodes.values():
            topo.addHost(
                node.name, cls=NetNode, role=node.role, ip=None, addrs=node.addrs,
                routes=node.routes, router=node.router, bridge=node.bridge,
            )
        for link in self.links:
            a_if, b_if = link.a_if, link.b_if
            if mechanism == "delayline" and link.spec.needs_delay():
                dname = f"d{link.index}"
                topo.addSwitch(dname, cls=DelayLineNode, up=link.spec.up, down=link.spec.down,
                               seed=seed + link.index, workdir=workdir)
                topo.addLink(link.a, dname, cls=ShapedLink, intfName1=a_if,
                             intfName2=f"{dname}-a", offloads_off=True)
                topo.addLink(dname, link.b, cls=ShapedLink, intfName1=f"{dname}-b",
                             intfName2=b_if, offloads_off=True)
            else:
                topo.addLink(link.a, link.b, cls=ShapedLink, intfName1=a_if, intfName2=b_if,
                             spec=link.spec, use_netem=(mechanism == "netem"))


def path_links(graph: NetworkGraph, src: str, dst: str) -> list[tuple[GraphLink, bool]]:
    """The links a packet from src to dst crosses, each with True when crossed a->b (up)."""
    prev: dict[str, tuple[str, GraphLink]] = {}
    queue = deque([src])
    seen = {src}
    while queue:
        here = queue.popleft()
        if here == dst:
            break
        if here != src and not graph.nodes[here].router:
            continue
        for nb, link in graph._neighbors(here):
            if nb not in seen:
                seen.add(nb)
                prev[nb] = (here, link)
                queue.append(nb)
    if dst not in seen:
        raise UsageError(f"no path from {src} to {dst}")
    hops: list[tuple[GraphLink, bool]] = []
    node = dst
    while node != src:
        parent, link = prev[node]
        hops.append((link, link.a == parent))
        node = parent
    return list(reversed(hops))


def expected_rtt_ms(graph: NetworkGraph, src: str, dst: str) -> float:
    """Configured round-trip delay between two nodes (sum of one-way delays both ways)."""
    total = 0.0
    for link, up in path_links(graph, src, dst):
        there, back = (link.spec.up, link.spec.down) if up else (link.spec.down, link.spec.up)
        total += there.delay_ms + back.delay_ms
    return total
