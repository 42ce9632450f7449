"""Mininet topology scripts, one file per scenario. Each also runs under `mn --custom`."""

from __future__ import annotations

from testbed.errors import ParameterError
from testbed.scenario import TOPOLOGIES as TOPOLOGY_NAMES


def topology_class(name: str) -> type:
    """The Topo class of a named topology (imported lazily: Mininet is only needed here)."""
    if name not in TOPOLOGY_NAMES:
        raise ParameterError("topology", name, "one of " + ", ".join(TOPOLOGY_NAMES))
    from topologies.isp_cdn import IspCdnTopo

    return {"isp_cdn": IspCdnTopo}[name]
