"""Fixtures for integration tests (root, network namespaces).

`default_network`
    The default ISP-to-CDN topology (4 subscriber hosts, 200-subscriber population host),
    brought up once per module and torn down after it. Yields a `testbed.network.Network`;
    index it by node name, taken from the topology's roles
    (`net[net.roles.client].run([...])`).

`make_network`
    A factory: `make_network(scenario)` brings up a network for one test; every network it
    made is torn down at the end of the test, whatever happened.

Both resolve the scenario's topology the way the application does
(`topologies.load_topology`) and pass it to `Network(..., topology=)`.
"""

from __future__ import annotations

import pytest

from testbed.network import Network
from testbed.scenario import Scenario
from tests.conftest import require_root
from topologies import load_topology


@pytest.fixture(scope="module")
def default_network():
    require_root()
    scenario = Scenario()
    with Network(scenario, topology=load_topology(scenario.topology)) as net:
        yield net


@pytest.fixture()
def make_network():
    require_root()
    made: list[Network] = []

    def _make(scenario: Scenario) -> Network:
        net = Network(scenario, topology=load_topology(scenario.topology))
        made.append(net)
        return net.start()

    yield _make
    for net in reversed(made):
        net.stop()
