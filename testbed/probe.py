"""Capability probe: what this machine can do, each check with a verdict and a consequence.

Every check runs in a throwaway network namespace (`unshare -n`), so probing touches
nothing on the host. The same data goes into every result's provenance.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass

from testbed import paths

OK, MISSING, FALLBACK = "ok", "missing", "fallback"


@dataclass
class Check:
    name: str
    verdict: str  # ok | missing | fallback
    detail: str
    required: bool


def _in_scratch_netns(script: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-n", "sh", "-ec", script], capture_output=True,
                          text=True, timeout=timeout)


def _script_check(name: str, script: str, required: bool, ok_detail: str,
                  missing_detail: str, missing_verdict: str = MISSING) -> Check:
    try:
        proc = _in_scratch_netns(script)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(name, missing_verdict, f"{missing_detail} ({exc})", required)
    if proc.returncode == 0:
        return Check(name, OK, ok_detail, required)
    err = (proc.stderr or proc.stdout).strip().splitlines()
    return Check(name, missing_verdict, f"{missing_detail}: {err[-1] if err else 'failed'}",
                 required)


def _tool_check(name: str, argv: list[str], required: bool, consequence: str) -> Check:
    exe = shutil.which(argv[0]) if not os.path.isabs(argv[0]) else argv[0]
    if not exe or not os.path.exists(exe):
        return Check(name, MISSING, f"not installed: {consequence}", required)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return Check(name, OK, text[0][:80] if text else exe, required)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(name, MISSING, f"{exe} does not run ({exc})", required)


def run_probe() -> list[Check]:
    checks: list[Check] = []
    is_root = os.geteuid() == 0
    checks.append(Check("root", OK if is_root else MISSING,
                        "running as root" if is_root else "namespaces need root", True))
    checks.append(_script_check(
        "netns", "ip link set lo up", True, "network namespaces work",
        "cannot create a network namespace"))
    checks.append(_script_check(
        "veth", "ip link add pa type veth peer name pb", True, "veth pairs work",
        "cannot create veth pairs"))
    checks.append(_script_check(
        "netem", "tc qdisc add dev lo root netem delay 1ms", False,
        "kernel sch_netem present: link delay via netem",
        "no sch_netem: link delay via the userspace delay line", FALLBACK))
    checks.append(_script_check(
        "htb", "ip link add pa type veth peer name pb; tc qdisc add dev pa root handle 1: htb",
        False, "HTB qdisc works", "no HTB"))
    checks.append(_script_check(
        "tbf", "ip link add pa type veth peer name pb; "
               "tc qdisc add dev pa root tbf rate 10mbit burst 5k limit 20k",
        True, "TBF qdisc works (link rate limits)", "no TBF: cannot limit link rates"))
    nat = ("table {fam} t {{\n chain c {{\n type nat hook postrouting priority 100\n"
           " masquerade\n }}\n}}")
    checks.append(_script_check(
        "nft-nat-v4", f"echo '{nat.format(fam='ip')}' | nft -f -", True,
        "nftables NAT for IPv4", "no IPv4 NAT in nftables: the relay cannot alias"))
    checks.append(_script_check(
        "nft-nat-v6", f"echo '{nat.format(fam='ip6')}' | nft -f -", True,
        "nftables NAT for IPv6", "no IPv6 NAT in nftables: the relay cannot alias v6"))
    checks.append(_script_check(
        "nft-extras",
        "echo 'table inet t {\n set s { type ipv4_addr; flags dynamic; }\n"
        "chain c { type filter hook forward priority 0\n"
        "fib saddr . iif oif missing drop\n"
        "ct state new add @s { ip saddr ct count over 10 } drop\n"
        "meta l4proto tcp numgen random mod 4 vmap { 0-3 : accept }\n}\n}' | nft -f -",
        True, "fib, ct count, numgen in nftables",
        "nftables lacks fib/ct count/numgen: relay safety rules unavailable"))
    checks.append(_script_check(
        "conntrack-netlink", "conntrack -L >/dev/null 2>&1 || conntrack -S >/dev/null", True,
        "conntrack over netlink works", "no conntrack netlink: no mapping log"))
    checks.append(_script_check(
        "ipv6-forwarding", "sysctl -qw net.ipv6.conf.all.forwarding=1", True,
        "IPv6 forwarding can be enabled", "cannot enable IPv6 forwarding"))
    checks.append(_tool_check("mnexec", ["mnexec", "-v"], True, "install Debian's mininet"))
    checks.append(_tool_check("iperf3", ["iperf3", "--version"], True,
                              "throughput benchmarks unavailable"))
    checks.append(_tool_check("tcpdump", ["tcpdump", "--version"], True,
                              "no captures: leak checks unavailable"))
    checks.append(_tool_check("named", ["named", "-v"], True, "no DNS server"))
    checks.append(_tool_check("tinyproxy", ["tinyproxy", "-v"], False,
                              "no off-path proxy comparator"))
    go = paths.REPO_ROOT / ".venv" / "bin" / "go"
    checks.append(_tool_check("go", [str(go), "version"], True, "run 'make setup'"))
    for binary in ("delayline", "echd"):
        path = paths.BIN_DIR / binary
        checks.append(Check(binary, OK if path.exists() else MISSING,
                            str(path.relative_to(paths.REPO_ROOT)) if path.exists()
                            else "not built: run 'make setup'", True))
    return checks


def link_mechanism(checks: list[Check]) -> str:
    netem = next(c for c in checks if c.name == "netem")
    return "netem" if netem.verdict == OK else "delayline"


def probe_json(checks: list[Check]) -> dict:
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "link_emulation": link_mechanism(checks),
        "checks": {c.name: asdict(c) for c in checks},
        "usable": all(c.verdict != MISSING for c in checks if c.required),
    }
