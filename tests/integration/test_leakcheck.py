"""The leak check on the real testbed: it passes a correct relay and fails a broken one.

Why both on one network: a leak check that always passes is worthless, and one that fails
for reasons other than a leak (an empty control category, set-aside stragglers) would be
switched off by its users. So the same network runs the check twice: against the relay as
built (it must pass, with a hit in every control category and a connection that was open
across the switch ended rather than excused), then with the relay deliberately leaving one
flow unaliased (it must fail, on exactly that flow's address).
"""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.environment import BenchEnv
from benchmarks.leakcheck import CLOSED_PORT, SET_ASIDE_LIMIT, run_leak_check
from testbed.leaks import CONTROL_CATEGORIES
from testbed.lifecycle import RunRegistry
from testbed.network import Network
from testbed.scenario import Scenario
from testbed.services.relay import TABLE
from tests.conftest import require_root
from topologies import load_topology

pytestmark = pytest.mark.integration

HOLD_PORT = 9798  # a TCP sink on the front door for a connection held across the switch
_SINK = """
import socket, threading
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{addr}", {port})); s.listen(8)
def drain(c):
    while c.recv(4096):
        pass
while True:
    threading.Thread(target=drain, args=(s.accept()[0],), daemon=True).start()
"""
# Connects under `route` and keeps sending: without the sockets being ended before the
# switch, its data would reach the front door unaliased under the aliasing policy.
_HOLDER = """
import socket, time
s = socket.create_connection(("{addr}", {port}), source_address=("{src}", 0))
for _ in range(600):
    s.send(b"still here")
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    require_root()
    scenario = replace(Scenario(), population=4)
    with RunRegistry("leakcheck-test") as reg, \
            Network(scenario, reg, topology=load_topology(scenario.topology)) as net:
        bench = BenchEnv(net, reg.make_tmpdir("bench")).start(["direct", "cfr-flow",
                                                                "cfr-epoch"])
        try:
            yield bench
        finally:
            bench.stop()


def test_leak_check_passes_a_correct_relay(env: BenchEnv, tmp_path: Path) -> None:
    env.relay.switch("route")
    fd4, src4 = env.front_door(4), env.client_source(4)
    roles = env.net.roles
    sink = env.net[roles.front_door].spawn(
        ["python3", "-c", _SINK.format(addr=fd4, port=HOLD_PORT)], label="hold-sink")
    env._wait_port(roles.front_door, HOLD_PORT)
    holder = env.net[roles.client].spawn(
        ["python3", "-c", _HOLDER.format(addr=fd4, port=HOLD_PORT, src=src4)],
        label="holder", log=tmp_path / "holder.log")
    try:
        result = run_leak_check(env, ["cfr-flow", "cfr-epoch"], tmp_path, tag="ok")
        (tmp_path / "leak_check.json").write_text(json.dumps(result, indent=1))
    finally:
        holder.stop(sig=signal.SIGKILL)
        sink.stop()
    assert result["valid"] and result["passed"], result
    assert result["hits"] == 0
    assert all(result["control_categories"][c] > 0 for c in CONTROL_CATEGORIES), result
    flow = result["policies"]["cfr-flow"]
    # the held connection was ended before the switch, not excused packet by packet
    assert flow["sockets_ended"] >= 1, flow
    assert flow["set_aside"] <= SET_ASIDE_LIMIT and result["set_aside"] <= 2 * SET_ASIDE_LIMIT
    assert flow["packets"] > 20 and result["policies"]["cfr-epoch"]["packets"] > 20


def test_leak_check_fails_when_one_flow_is_left_unaliased(env: BenchEnv, tmp_path: Path
                                                          ) -> None:
    """The relay skips source NAT (and its leak guard) for one flow: the subscriber's UDP
    probe to the closed port. Rules are re-inserted after each switch, which replaces the
    relay's chains."""
    src4 = env.client_source(4)
    match = f"ip saddr {src4} udp dport {CLOSED_PORT}"
    original = env.relay.switch

    def leaky_switch(policy: str) -> float:
        seconds = original(policy)
        if policy != "route":
            for chain in ("postrouting_nat", "postrouting_guard"):
                env.relay.node.run(["nft", f"insert rule inet {TABLE} {chain} {match} accept"])
        return seconds

    env.relay.switch = leaky_switch  # type: ignore[method-assign]
    try:
        result = run_leak_check(env, ["cfr-flow"], tmp_path, tag="leaky")
        (tmp_path / "leak_check.json").write_text(json.dumps(result, indent=1))
    finally:
        env.relay.switch = original  # type: ignore[method-assign]
        env.relay.policy = None  # force the next switch to replace the leaky ruleset
        original("route")
    assert result["valid"], result  # the control is fine: the failure is the leak
    assert not result["passed"]
    flow = result["policies"]["cfr-flow"]
    assert flow["hits"] > 0 and flow["hits_by_category"]["ipv4-outer"] > 0, flow
    assert {h["address"] for h in flow["examples"]} == {src4}, flow["examples"]
    assert flow["hits_by_category"]["ipv6-outer"] == 0  # only the one IPv4 flow leaked
