"""Fixtures for integration tests (root, network namespaces).

`default_network`
    The default ISP-to-CDN topology (4 subscriber hosts, 200-subscriber population host),
    brought up once per module and torn down after it. Yields a `testbed.network.Network`;
    index it by node name (`net["s1"].run([...])`).

`make_network`
    A factory: `make_network(scenario)` brings up a network for one test; every network it
    made is torn down at the end of the test, whatever happened.
"""

from __future__ import annotations

import pytest

from testbed.network import Network
from testbed.scenario import Scenario
from tests.conftest import require_root


@pytest.fixture(scope="module")
def default_network():
    require_root()
    with Network(Scenario()) as net:
        yield net


@pytest.fixture()
def make_network():
    require_root()
    made: list[Network] = []

    def _make(scenario: Scenario) -> Network:
        net = Network(scenario)
        made.append(net)
        return net.start()

    yield _make
    for net in reversed(made):
        net.stop()
