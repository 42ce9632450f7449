"""The leak check that is part of every benchmark run.

For each aliasing policy the run used, it captures on the front door's link while the
subscriber makes every kind of traffic that could carry its address upstream: TLS with ECH
over IPv4 and IPv6, ICMP echo, UDP to a closed port (the front door's port-unreachable
quotes the subscriber's packet), a reply to a subscriber port that has closed (the
subscriber's own kernel sends a port-unreachable quoting its real address, which the relay
must translate), and a reply whose TTL runs out at the relay's node (that node's own
time-exceeded quotes the reply after de-aliasing, and must be translated back). Any hit
fails the run. Which nodes play the client, the front door and the relay comes from the
topology's roles (`net.roles`), so the check runs on any topology.

Positive control: the same traffic is first sent under `route`, where the front door sees
subscribers. It must produce hits in every category the check relies on (IPv4 outer, IPv6
outer, ICMP-quoted IPv4, ICMP-quoted IPv6): a category with no control hit proves nothing
for that category, and the check reports itself invalid (and failed).

Flows that existed before the switch to an aliasing policy: their sockets (at the front
door and at the subscribers) are ended before the switch, so nothing of them should remain.
A peer may still retransmit a FIN or answer with a RST; only such payload-free FIN/RST/ACK
segments of those exact 4-tuples are set aside (testbed/leaks.py), everything else of them
is scanned, and more than SET_ASIDE_LIMIT set aside per capture fails the check.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import paths as path_table
from benchmarks.environment import BenchEnv
from benchmarks.tools import https_request
from relay.policies import CFR_POLICIES
from testbed.addressing import AddressPlan
from testbed.graph import path_links
from testbed.leaks import CONTROL_CATEGORIES, FlowKey, LeakScanner, flow_key, on_wire
from testbed.netns import NetnsNode
from testbed.network import Network

#: Policies checked: the CFR's own, which alias subscribers in both families (cgn and
#: nptv6 route or map one family 1:1 by design, so the front door may see them there).
ALIASING_POLICIES = CFR_POLICIES
CONTROL_POLICY = "route"  # the front door sees subscribers: the scanner must find them
ECHO_PORT = 9797  # the front door's delayed UDP responder
CLOSED_PORT = 9
#: Set-aside packets allowed per capture. The sockets of earlier flows are ended before the
#: switch, so on a lossless network none remain (measured: 0). The limit allows one flow
#: whose closing RST was lost: its peer retransmits the FIN with a doubling RTO (at 0.2,
#: 0.6, 1.4 and 3.0 s of a ~5 s capture) and each is answered by a RST: 4 x 2 = 8. More
#: than that means packets other than the close of one connection are being excused.
SET_ASIDE_LIMIT = 8
SETTLE_S = 0.3  # after a switch or ending sockets, before the capture starts
# Bound to the service addresses, so replies leave from the address the flow was sent to
# (the relay's conntrack entry matches them, as it would for a real server). Each request
# gets two replies: a normal one and one whose TTL runs out at the relay's node.
_RESPONDER = """
import socket, sys, threading, time
def serve(family, addr):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr, {port}))
    ttl = (socket.IPPROTO_IP, socket.IP_TTL) if family == socket.AF_INET else \\
        (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
    while True:
        data, peer = s.recvfrom(2048)
        time.sleep(0.3)  # the subscriber's socket is closed by now
        s.sendto(data, peer)
        s.setsockopt(*ttl, {ttl})
        s.sendto(data, peer)
        s.setsockopt(*ttl, 64)
threading.Thread(target=serve, args=(socket.AF_INET, "{v4}"), daemon=True).start()
serve(socket.AF_INET6, "{v6}")
"""


def _udp_and_close(src: str, dst: str, port: int) -> list[str]:
    family = "AF_INET6" if ":" in dst else "AF_INET"
    code = (f"import socket; s = socket.socket(socket.{family}, socket.SOCK_DGRAM); "
            f"s.bind(('{src}', 0)); s.sendto(b'leak-check', ('{dst}', {port})); s.close()")
    return ["python3", "-c", code]


def subscriber_nodes(net: Network) -> list[str]:
    """Every host carrying subscriber addresses (the roles' subscribers and population)."""
    return list(net.roles.subscriber_hosts)


def path_of(policy: str) -> str:
    """The benchmark path that runs under a relay policy (the first IPv4 one of the path
    table, benchmarks/paths.py); its IPv6 twin carries the IPv6 traffic."""
    found = path_table.paths_of_policy(policy, family=4)
    if not found:
        raise KeyError(f"no benchmark path runs under relay policy {policy!r}")
    return found[0]


def ttl_to_relay(net: Network) -> int:
    """The TTL with which a reply from the front door expires at the relay's node: one per
    link from the front door to it (each router on the way decrements it; delay lines are
    bridges and do not). The node answers with a time-exceeded towards the front door
    quoting the reply (module doc); the control's quoted-header hits check the count."""
    return len(path_links(net.graph, net.roles.front_door, net.roles.relay))


def configured_subscriber_addresses(net: Network) -> list[str]:
    """Global addresses configured on the subscriber hosts, as the network built them."""
    out = []
    for name in subscriber_nodes(net):
        for addrs in net.info[name].addresses.values():
            out += [a.split("/")[0] for a in addrs if not a.lower().startswith("fe80")]
    return out


def scanner_for(env: BenchEnv) -> LeakScanner:
    """Every subscriber's addresses: from the plan (IPv4, /56, access-segment address) and
    whatever the network configured on subscriber hosts."""
    plan, sc = env.net.graph.plan, env.net.scenario
    subs = plan.subscribers(sc.subscribers + sc.population)
    return LeakScanner.for_subscribers(subs, configured_subscriber_addresses(env.net))


def _split_endpoint(text: str) -> tuple[str, int] | None:
    """'198.19.0.10:443' / '[2001:db8::1]:443' / '*:*' -> (address, port) or None."""
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]").split("%", 1)[0]
    if not addr or not port.isdigit() or addr in ("*", "0.0.0.0", "::"):
        return None
    return addr, int(port)


def _sockets(node: NetnsNode, keep: Callable[[str, str], bool]) -> set[FlowKey]:
    """TCP/UDP sockets of `node`, in any state, whose (local, peer) `keep` accepts (both
    as packets carry them: a dual-stack socket's ::ffff:a.b.c.d is a.b.c.d)."""
    flows: set[FlowKey] = set()
    for proto in ("tcp", "udp"):
        out = node.run(["ss", "-H", "-n", "-a", f"--{proto}"], check=False).stdout
        for line in out.splitlines():
            cols = line.split()
            if len(cols) < 5:
                continue
            local, peer = _split_endpoint(cols[3]), _split_endpoint(cols[4])
            if local and peer and keep(on_wire(local[0]), on_wire(peer[0])):
                flows.add(flow_key(proto, *local, *peer))
    return flows


def preexisting_flows(env: BenchEnv, scanner: LeakScanner) -> set[FlowKey]:
    """Flows between a subscriber and the front door, seen from both ends: the front door's
    sockets with a subscriber peer and the subscribers' sockets with a front-door peer."""
    fds = {env.front_door(4), env.front_door(6)}
    flows = _sockets(env.net[env.net.roles.front_door],
                     lambda _local, peer: scanner.is_subscriber(peer))
    for name in subscriber_nodes(env.net):
        flows |= _sockets(env.net[name], lambda local, peer: peer in fds
                          and scanner.is_subscriber(local))
    return flows


def ss_peer_filters(plan: AddressPlan, fd4: str, fd6: str) -> dict[str, list[str]]:
    """`ss` destination filters, by side: the front door's sockets towards any subscriber
    address (IPv4, IPv6, and IPv4 as a dual-stack socket lists it, ::ffff:a.b.c.d), the
    subscribers' sockets towards the front door. ss syntax: a prefix without brackets, a
    single IPv6 address in brackets (unbracketed, its last group would read as a port)."""
    nets = [plan.nets[n] for n in ("subscribers_v4", "subscribers_v6", "access_segment_v6")]
    v4 = [n for n in nets if n.version == 4]
    mapped = [f"::ffff:{n.network_address}/{96 + n.prefixlen}" for n in v4]
    return {"front_door": [*map(str, nets), *mapped], "subscribers": [fd4, f"[{fd6}]"]}


def end_subscriber_sockets(env: BenchEnv) -> int:
    """`ss -K` every TCP socket between a subscriber and the front door, at both ends
    (the kernel sends the RST now, before the capture); returns how many were ended."""
    filters = ss_peer_filters(env.net.graph.plan, env.front_door(4), env.front_door(6))
    jobs = [(env.net.roles.front_door, filters["front_door"])]
    jobs += [(name, filters["subscribers"]) for name in subscriber_nodes(env.net)]
    ended = 0
    for name, peers in jobs:
        for peer in peers:
            out = env.net[name].run(["ss", "-K", "-H", "-n", "-t", "-a", "dst", peer],
                                    check=False).stdout
            ended += sum(1 for line in out.splitlines() if line.strip())
    return ended


def _traffic(env: BenchEnv, path: str) -> None:
    """Every kind of traffic the module doc lists, over IPv4 and IPv6."""
    node = env.net[env.net.roles.client]
    for family in path_table.FAMILIES:
        https_request(env, path_table.twin(path, family), {})
        src, dst = env.client_source(family), env.front_door(family)
        node.run(["ping", f"-{family}", "-n", "-c2", "-i", "0.2", "-I", src, dst], check=False)
        node.run(_udp_and_close(src, dst, CLOSED_PORT), check=False)
        node.run(_udp_and_close(src, dst, ECHO_PORT), check=False)


def run_leak_check(env: BenchEnv, policies: list[str], out_dir: Path, tag: str = "") -> dict:
    """Capture and scan per aliasing policy; returns the results.json `leak_check` block.

    `tag` keeps the captures of several networks in one run apart (`leakcheck-<tag>-...`).
    Passed means: the control hit every category (valid), no hit under any aliasing
    policy, and no capture set aside more than SET_ASIDE_LIMIT packets.
    """
    roles = env.net.roles
    fd = env.net[roles.front_door]
    capture_if = roles.pops[0].front_door_interface
    code = _RESPONDER.format(port=ECHO_PORT, v4=env.front_door(4), v6=env.front_door(6),
                             ttl=ttl_to_relay(env.net))
    responder = fd.spawn(["python3", "-c", code], label="leak-responder")
    scanner = scanner_for(env)
    result: dict = {"capture_point": f"front door link ({capture_if})", "policies": {},
                    "hits": 0, "set_aside": 0, "set_aside_limit": SET_ASIDE_LIMIT}
    try:
        for policy in [CONTROL_POLICY, *policies]:
            earlier: set[FlowKey] = set()
            ended = 0
            if policy != CONTROL_POLICY:
                earlier = preexisting_flows(env, scanner)
                ended = end_subscriber_sockets(env)
            env.relay.switch(policy)
            time.sleep(SETTLE_S)
            if policy != CONTROL_POLICY:
                earlier |= preexisting_flows(env, scanner)  # e.g. TIME_WAIT that outlived -K
            stem = f"leakcheck-{tag}-{policy}" if tag else f"leakcheck-{policy}"
            pcap = out_dir / f"{stem}.pcap"
            cap = fd.spawn(["tcpdump", "-n", "-i", capture_if, "-s", "256", "-U", "-w",
                            str(pcap)],
                           label="tcpdump", log=out_dir / f"{stem}.tcpdump.log")
            time.sleep(0.5)
            _traffic(env, path_of(policy))
            time.sleep(2.0)  # the delayed replies (and neighbour discovery) and ICMP errors
            cap.stop(sig=signal.SIGINT)
            report = scanner.scan_pcap(pcap, preexisting=earlier)
            if policy == CONTROL_POLICY:
                result["control"] = {"policy": policy, **report.as_dict()}
                continue
            result["policies"][policy] = {
                **report.as_dict(), "preexisting_flows": len(earlier), "sockets_ended": ended,
                "set_aside_within_limit": report.set_aside <= SET_ASIDE_LIMIT}
            result["hits"] += len(report.hits)
            result["set_aside"] += report.set_aside
    finally:
        responder.stop()
    return {**result, **verdict(result)}


def verdict(result: dict) -> dict:
    """valid / passed of a leak-check block (module doc), with what made it so."""
    control = result.get("control", {}).get("hits_by_category", {})
    per_category = {c: int(control.get(c, 0)) for c in CONTROL_CATEGORIES}
    missing = [c for c, n in per_category.items() if n == 0]
    over = [p for p, r in result.get("policies", {}).items()
            if r.get("set_aside", 0) > result.get("set_aside_limit", SET_ASIDE_LIMIT)]
    valid = not missing
    return {"control_categories": per_category, "control_missing": missing,
            "set_aside_over_limit": over, "valid": valid,
            "passed": valid and result.get("hits", 0) == 0 and not over}
