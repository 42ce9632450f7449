"""Default scenario: subscribers behind an access router, an ISP edge (where the relay runs),
a transit core with WAN delay, a CDN PoP (ECH front door, origins, DNS) and off-path relay
providers reachable only through a detour.

    s1..sN ─┐ access (2 ms)
    crowd  ─┴─ acc ── edge ══ WAN (10 ms) ══ core ── cdn ─┬─ fd    (front door)
                                              │            ├─ o1..  (origins)
                                              │            └─ dns
                                              ├─ detour ─ p1  (relay provider)
                                              └─ detour ─ p2

`crowd` is the population host: one namespace carrying many subscribers' addresses, so
load generators can act for hundreds of subscribers without hundreds of namespaces.

Runs under cfrbench, and under Mininet directly:
    .venv/bin/python /usr/bin/mn --custom topologies/isp_cdn.py --topo isp_cdn \\
        --controller none --test pingall
"""

from __future__ import annotations

import sys
from pathlib import Path

if not globals().get("__package__"):  # loaded by `mn --custom` as a plain file
    try:
        _here = Path(__file__).resolve().parent
    except NameError:  # mn exec()s the file without __file__; find it on its command line
        _here = next((Path(a).resolve().parent for a in sys.argv[1:]
                      if a.endswith("isp_cdn.py")), Path.cwd() / "topologies")
    sys.path.insert(0, str(_here.parent))

from testbed.graph import NetworkGraph, intf_name  # noqa: E402
from testbed.roles import Roles  # noqa: E402
from testbed.scenario import Scenario  # noqa: E402
from topologies.base import (  # noqa: E402
    ACCESS_BRIDGE,
    GraphTopo,
    add_access,
    add_pop,
    add_providers,
    add_relay_edge,
    link_spec,
    plan_of,
    subscriber_host_names,
    used_link_classes,
)

__all__ = ["ACCESS_BRIDGE", "IspCdnTopo", "build_graph", "describe", "link_spec",
           "subscriber_host_names", "topos"]


def describe(scenario: Scenario) -> tuple[NetworkGraph, Roles]:
    """The default ISP-to-CDN network as a graph with addresses and routes, and its roles."""
    g = NetworkGraph(plan_of(scenario))
    hosts, population, interfaces = add_access(g, scenario, "acc")
    edge = add_relay_edge(g, scenario, "acc")
    g.add_node("core", "transit", router=True)
    g.add_link(edge, "core", "wan", link_spec(scenario, "wan"))
    pop = add_pop(g, scenario, "core", "cdn", router="cdn")
    providers = add_providers(g, scenario, "core")
    g.compute_routes()
    roles = Roles(
        subscribers=tuple(hosts), population=population, access_router="acc", relay=edge,
        relay_access=(intf_name(edge, "acc"),), relay_upstream=(intf_name(edge, "core"),),
        transit="core", pops=(pop,), providers=tuple(providers),
        link_classes=used_link_classes(g), host_interfaces=interfaces,
    )
    return g, roles


def build_graph(scenario: Scenario) -> NetworkGraph:
    """The graph alone (route and delay tests need no roles)."""
    return describe(scenario)[0]


class IspCdnTopo(GraphTopo):
    """Mininet Topo of the default scenario (see module docstring)."""

    def describe(self, scenario: Scenario) -> tuple[NetworkGraph, Roles]:
        return describe(scenario)


topos = {"isp_cdn": IspCdnTopo}
