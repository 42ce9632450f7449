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
from testbed.leaks import LeakScanner

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


CONTROL_POLICY = "route"  # the front door sees subscribers: the scanner must find them


def run_leak_check(env: BenchEnv, policies: list[str], out_dir: Path) -> dict:
    """Capture and scan per aliasing policy; returns the results.json `leak_check` block.

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
            pcap = out_dir / f"leakcheck-{policy}.pcap"
            cap = fd.spawn(["tcpdump", "-n", "-i", "fd-cdn", "-s", "256", "-U", "-w", str(pcap)],
                           label="tcpdump", log=out_dir / f"leakcheck-{policy}.tcpdump.log")
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
            report = scanner.scan_pcap(pcap)
            if policy == CONTROL_POLICY:
                result["control"] = {"policy": policy, **report.as_dict()}
                continue
            result["policies"][policy] = report.as_dict()
            result["hits"] += len(report.hits)
    finally:
        responder.stop()
    result["valid"] = result["control"]["hits"] > 0
    result["passed"] = result["valid"] and result["hits"] == 0
    return result
