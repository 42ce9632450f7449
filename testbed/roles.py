"""What each node of a topology is for: the one vocabulary code outside `topologies/` uses.

A topology file names its nodes (`s1`, `fd`, `edge` in the default one); everything else
(services, the relay deployment, benchmarks, checks) asks the topology's `Roles` which node
plays which part, so a second topology, or a user's own file, works without touching them.

The network (this layer) never imports `topologies/`: it receives a topology class from the
layer above (`Network(scenario, registry, topology=...)`), and reads `topo.graph` and
`topo.roles` from the built instance. `TopologyClass` is the shape it relies on. Stdlib only
(topology files run under the system Python with `mn --custom`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from testbed.errors import UsageError


@dataclass(frozen=True)
class PointOfPresence:
    """One CDN point of presence: its router, ECH front door, DNS server and origins."""

    name: str
    router: str
    front_door: str
    dns: str
    origins: tuple[str, ...]
    #: the front door's interface towards the network (where its traffic is captured)
    front_door_interface: str
    #: index of the PoP's service block in the address plan (`AddressPlan.front_door(pop)`)
    plan_index: int = 0


@dataclass(frozen=True)
class Roles:
    """The nodes and interfaces a topology exports, by what they do.

    `subscribers[0]` is the client measurements run from. The relay node sits on the access
    path; `relay_access` faces the subscribers, `relay_upstream` the Internet. `transit` is
    the router right behind the relay on an undelayed link (a sink there measures the
    relay's forwarding without any delay line in the path). `providers` are off-path relay
    providers (proxies run there); `cfr_hosts` are nodes off the access path on which a CFR
    can be deployed (subscriber traffic reaches them through a route or tunnel)."""

    subscribers: tuple[str, ...]
    population: str | None
    access_router: str
    relay: str
    relay_access: tuple[str, ...]
    relay_upstream: tuple[str, ...]
    transit: str
    pops: tuple[PointOfPresence, ...]
    providers: tuple[str, ...] = ()
    cfr_hosts: tuple[str, ...] = ()
    link_classes: tuple[str, ...] = ()
    #: each subscriber / population host's interface on the access segment
    host_interfaces: dict[str, str] = field(default_factory=dict)

    # -- the common case: the first subscriber and the first PoP ----------------------------
    @property
    def client(self) -> str:
        return self.subscribers[0]

    @property
    def front_door(self) -> str:
        return self.pops[0].front_door

    @property
    def dns(self) -> str:
        return self.pops[0].dns

    @property
    def origins(self) -> tuple[str, ...]:
        return self.pops[0].origins

    @property
    def front_doors(self) -> tuple[str, ...]:
        return tuple(p.front_door for p in self.pops)

    @property
    def dns_servers(self) -> tuple[str, ...]:
        return tuple(p.dns for p in self.pops)

    @property
    def subscriber_hosts(self) -> tuple[str, ...]:
        """Every host carrying subscriber addresses: the subscriber hosts and the population."""
        return self.subscribers + ((self.population,) if self.population else ())

    def pop(self, name: str) -> PointOfPresence:
        for p in self.pops:
            if p.name == name:
                return p
        raise UsageError(f"no point of presence {name!r}; this topology has "
                         f"{', '.join(p.name for p in self.pops)}")

    def interface(self, host: str) -> str:
        """A subscriber or population host's interface on the access segment."""
        try:
            return self.host_interfaces[host]
        except KeyError:
            raise UsageError(f"{host!r} is not a subscriber or population host; those are "
                             f"{', '.join(self.host_interfaces)}") from None

    def to_dict(self) -> dict[str, Any]:
        """For the run registry (a detached network's roles, read by `cfrbench exec`/`cli`),
        with the common-case names spelled out."""
        out = asdict(self)
        out.update(client=self.client, front_door=self.front_door, dns=self.dns)
        return out

    def check(self, nodes: set[str], link_classes: set[str] | None = None) -> Roles:
        """Every node a role names exists (a topology file's mistake, reported by name)."""
        named: list[tuple[str, str]] = [("subscriber", s) for s in self.subscribers]
        named += [("access router", self.access_router), ("relay", self.relay),
                  ("transit", self.transit)]
        if self.population:
            named.append(("population", self.population))
        for p in self.pops:
            named += [(f"{p.name} router", p.router), (f"{p.name} front door", p.front_door),
                      (f"{p.name} dns", p.dns)] + [(f"{p.name} origin", o) for o in p.origins]
        named += [("provider", p) for p in self.providers]
        named += [("cfr host", c) for c in self.cfr_hosts]
        missing = [f"{what} {name!r}" for what, name in named if name not in nodes]
        if missing:
            raise UsageError(f"topology roles name nodes it does not have: {', '.join(missing)}")
        if not self.subscribers or not self.pops:
            raise UsageError("topology roles need at least one subscriber host and one PoP")
        if link_classes is not None:
            extra = set(self.link_classes) - link_classes
            if extra:
                raise UsageError(f"topology roles name unknown link classes: {sorted(extra)}")
        return self


class BuiltTopology(Protocol):
    """What the network reads from a built topology (a Mininet Topo with a graph and roles)."""

    graph: Any  # testbed.graph.NetworkGraph
    roles: Roles

    def hosts(self, sort: bool = True) -> list[str]: ...

    def switches(self, sort: bool = True) -> list[str]: ...


#: A topology class: called as cls(scenario=..., mechanism=..., workdir=...).
TopologyClass = Callable[..., BuiltTopology]


# -- resolving a topology name without importing the layer above --------------------------------
_resolver: Callable[[str], TopologyClass] | None = None


def register_topology_resolver(resolver: Callable[[str], TopologyClass]) -> None:
    """Called by `topologies` when imported: how a `--topology` spec becomes a class."""
    global _resolver
    _resolver = resolver


def resolve_topology(spec: str) -> TopologyClass:
    """The topology class for `spec`, through the resolver the topologies layer registered.

    Callers should pass the class to `Network(..., topology=cls)` (the application resolves
    it with `topologies.load_topology`); this layer never imports `topologies` itself, so
    without that class a name resolves only once the topologies layer has been imported."""
    if _resolver is None:
        raise UsageError("no topology resolver: pass topology= to Network (the application "
                         "resolves --topology with topologies.load_topology)")
    return _resolver(spec)
