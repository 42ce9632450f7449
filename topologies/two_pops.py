"""Two CDN points of presence and a relay provider that can host a CFR off the access path.

    s1..sN ─┐ access (2 ms)
    crowd  ─┴─ acc ── edge ══ WAN (10 ms) ══ core ─┬─ cdn ─┬─ fd, o1.., dns   (PoP a)
                                                   ├══ WAN (10 ms) ══ cdn2 ─┬─ fd2, ob1..,
                                                   │                        └─ dns2 (PoP b)
                                                   ├─ detour ─ p1, p2   (proxy providers)
                                                   └─ detour ─ rp       (CFR host, off path)

PoP a is where the default topology's PoP is (same node names and addresses, so anything
that runs on `isp_cdn` runs here); PoP b is one WAN link farther, with its own front door,
origins and DNS server on the plan's second PoP block (`cdn2_*`). `rp` is a router on a
detour leaf: subscriber traffic steered to it (a policy route at `core` keyed on the
interface from the edge, see `steer_rules`) is forwarded on from there, and the off-path
alias pools (`offpath_pool_*`) are routed to it, so a CFR deployed on `rp` gets its replies
back. The relay on the access path (`edge`) stays where it is in `isp_cdn`.

Runs under cfrbench (`--topology two_pops`) and under Mininet directly:
    .venv/bin/python /usr/bin/mn --custom topologies/two_pops.py --topo two_pops \\
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
                      if a.endswith("two_pops.py")), Path.cwd() / "topologies")
    sys.path.insert(0, str(_here.parent))

from testbed.graph import NetworkGraph, intf_name  # noqa: E402
from testbed.roles import Roles  # noqa: E402
from testbed.scenario import Scenario  # noqa: E402
from topologies.base import (  # noqa: E402
    GraphTopo,
    add_access,
    add_pop,
    add_providers,
    add_relay_edge,
    link_spec,
    plan_of,
    used_link_classes,
)

#: routing table number used at `core` to steer subscriber traffic through `rp`
STEER_TABLE = 100


def describe(scenario: Scenario) -> tuple[NetworkGraph, Roles]:
    g = NetworkGraph(plan_of(scenario))
    hosts, population, interfaces = add_access(g, scenario, "acc")
    edge = add_relay_edge(g, scenario, "acc")
    g.add_node("core", "transit", router=True)
    g.add_link(edge, "core", "wan", link_spec(scenario, "wan"))
    pop_a = add_pop(g, scenario, "core", "cdn", router="cdn")
    pop_b = add_pop(g, scenario, "core", "wan", router="cdn2", suffix="2", origin_prefix="ob",
                    plan_index=1)
    providers = add_providers(g, scenario, "core")
    g.add_node("rp", "cfr-host", router=True)
    g.add_link("core", "rp", "detour", link_spec(scenario, "detour"))
    g.add_service_address("rp", *g.plan.cfr_host(0))
    g.own("rp", g.plan.nets["offpath_pool_v4"])
    g.own("rp", g.plan.nets["offpath_pool_v6"])
    g.compute_routes()
    roles = Roles(
        subscribers=tuple(hosts), population=population, access_router="acc", relay=edge,
        relay_access=(intf_name(edge, "acc"),), relay_upstream=(intf_name(edge, "core"),),
        transit="core", pops=(pop_a, pop_b), providers=tuple(providers), cfr_hosts=("rp",),
        link_classes=used_link_classes(g), host_interfaces=interfaces,
    )
    return g, roles


def steer_rules(graph: NetworkGraph, roles: Roles, cfr_host: str, table: int = STEER_TABLE,
                action: str = "add") -> list[tuple[str, list[str]]]:
    """`ip` commands (node, argv) that send subscriber traffic arriving at the transit
    router from the relay through `cfr_host`; traffic coming back from `cfr_host` enters on
    another interface, so it goes on to its destination without looping. `action="del"`
    undoes them."""
    plan = graph.plan
    transit = roles.transit
    from_edge = intf_name(transit, roles.relay)
    link = next(lk for lk in graph.links if {lk.a, lk.b} == {transit, cfr_host})
    cmds = []
    for family, gw, subs in ((4, link.addrs.b4 if link.b == cfr_host else link.addrs.a4,
                              plan.nets["subscribers_v4"]),
                             (6, link.addrs.b6 if link.b == cfr_host else link.addrs.a6,
                              plan.nets["subscribers_v6"])):
        default = "0.0.0.0/0" if family == 4 else "::/0"
        cmds.append((transit, ["ip", f"-{family}", "route", action, default, "via", str(gw),
                               "table", str(table)]))
        cmds.append((transit, ["ip", f"-{family}", "rule", action, "iif", from_edge, "from",
                               str(subs), "lookup", str(table), "priority", "100"]))
    return cmds


class TwoPopsTopo(GraphTopo):
    """Mininet Topo of two CDN PoPs and an off-path CFR host (see module docstring)."""

    def describe(self, scenario: Scenario) -> tuple[NetworkGraph, Roles]:
        return describe(scenario)


topos = {"two_pops": TwoPopsTopo}
