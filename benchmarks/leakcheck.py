"""The leak check that is part of every benchmark run.

For each aliasing policy the run used, it captures on the front door's link while the
subscriber makes every kind of traffic that could carry its address upstream: TLS with ECH
over IPv4 and IPv6, ICMP echo, UDP to a closed port, and the case that catches relays that
forget the quoted header: a reply to a subscriber port that has closed, so the subscriber's
own kernel sends an ICMP/ICMPv6 port-unreachable quoting its real address, which the relay
must translate. Any hit fails the run.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from benchmarks.environment import CLIENT, BenchEnv
from benchmarks.tools import https_request
from testbed.leaks import FlowKey, LeakScanner, flow_key
from testbed.node import NetnsNode

ALIASING_POLICIES = ("cfr-flow", "cfr-epoch")
ECHO_PORT = 9797  # the front door's delayed UDP responder
CLOSED_PORT = 9
# Bound to the service addresses, so replies leave from the address the flow was sent to
# (the relay's conntrack entry matches them, as it would for a real server).
_RESPONDER = """
import socket, sys, threading, time
def serve(family, addr):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr, {port}))
    while True:
        data, peer = s.recvfrom(2048)
        time.sleep(0.3)  # the subscriber's socket is closed by now
        s.sendto(data, peer)
threading.Thread(target=serve, args=(socket.AF_INET, "{v4}"), daemon=True).start()
serve(socket.AF_INET6, "{v6}")
"""


def _udp_and_close(src: str, dst: str, port: int) -> list[str]:
    family = "AF_INET6" if ":" in dst else "AF_INET"
    code = (f"import socket; s = socket.socket(socket.{family}, socket.SOCK_DGRAM); "
            f"s.bind(('{src}', 0)); s.sendto(b'leak-check', ('{dst}', {port})); s.close()")
    return ["python3", "-c", code]


def scanner_for(env: BenchEnv) -> LeakScanner:
    plan = env.net.graph.plan
    subs = plan.subscribers(env.net.scenario.subscribers + env.net.scenario.population)
    return LeakScanner([s.v4 for s in subs], [s.v6_prefix for s in subs])


def _split_endpoint(text: str) -> tuple[str, int] | None:
    """'198.19.0.10:443' / '[2001:db8::1]:443' / '*:*' -> (address, port) or None."""
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]").split("%", 1)[0]
    if not addr or not port.isdigit() or addr in ("*", "0.0.0.0", "::"):
        return None
    return addr, int(port)


def preexisting_subscriber_flows(node: NetnsNode, scanner: LeakScanner) -> set[FlowKey]:
    """The front door's TCP/UDP sockets, in any state, whose peer is a subscriber address.

    Taken right before a capture under an aliasing policy: those flows began earlier (under
    `route`, or on the direct path of a benchmark) and may still send a retransmitted FIN
    to the subscriber; the scan sets exactly these 4-tuples aside and counts them."""
    flows: set[FlowKey] = set()
    for proto in ("tcp", "udp"):
        out = node.run(["ss", "-H", "-n", "-a", f"--{proto}"], check=False).stdout
        for line in out.splitlines():
            cols = line.split()
            if len(cols) < 5:
                continue
            local, peer = _split_endpoint(cols[3]), _split_endpoint(cols[4])
            if local and peer and scanner.is_subscriber(peer[0]):
                flows.add(flow_key(proto, *local, *peer))
    return flows


CONTROL_POLICY = "route"  # the front door sees subscribers: the scanner must find them


def run_leak_check(env: BenchEnv, policies: list[str], out_dir: Path, tag: str = "") -> dict:
    """Capture and scan per aliasing policy; returns the results.json `leak_check` block.

    `tag` keeps the captures of several networks in one run apart (`leakcheck-<tag>-...`).

    The same traffic is first sent under `route`, where subscriber addresses must show up:
    a scanner that finds nothing there proves nothing, and the check reports itself invalid.
    """
    fd = env.net["fd"]
    code = _RESPONDER.format(port=ECHO_PORT, v4=env.front_door(4), v6=env.front_door(6))
    responder = fd.spawn(["python3", "-c", code], label="leak-responder")
    scanner = scanner_for(env)
    result: dict = {"capture_point": "front door link (fd-cdn)", "policies": {}, "hits": 0}
    try:
        for policy in [CONTROL_POLICY, *policies]:
            env.relay.switch(policy)
            time.sleep(0.3)
            earlier = (set() if policy == CONTROL_POLICY
                       else preexisting_subscriber_flows(fd, scanner))
            stem = f"leakcheck-{tag}-{policy}" if tag else f"leakcheck-{policy}"
            pcap = out_dir / f"{stem}.pcap"
            cap = fd.spawn(["tcpdump", "-n", "-i", "fd-cdn", "-s", "256", "-U", "-w", str(pcap)],
                           label="tcpdump", log=out_dir / f"{stem}.tcpdump.log")
            time.sleep(0.5)
            path = {"route": "direct", "cfr-flow": "cfr-flow", "cfr-epoch": "cfr-epoch"}[policy]
            for family in (4, 6):
                https_request(env, path, {"family": f"ipv{family}"})
                src, dst = env.client_source(family), env.front_door(family)
                node = env.net[CLIENT]
                node.run(["ping", f"-{family}", "-n", "-c2", "-i", "0.2", "-I", src, dst],
                         check=False)
                node.run(_udp_and_close(src, dst, CLOSED_PORT), check=False)
                node.run(_udp_and_close(src, dst, ECHO_PORT), check=False)
            time.sleep(2.0)  # the delayed replies (and neighbour discovery) and ICMP errors
            cap.stop(sig=signal.SIGINT)
            report = scanner.scan_pcap(pcap, exclude=earlier)
            if policy == CONTROL_POLICY:
                result["control"] = {"policy": policy, **report.as_dict()}
                continue
            result["policies"][policy] = {**report.as_dict(),
                                          "preexisting_flows": len(earlier)}
            result["hits"] += len(report.hits)
    finally:
        responder.stop()
    result["valid"] = result["control"]["hits"] > 0
    result["passed"] = result["valid"] and result["hits"] == 0
    return result
