"""A small namespace network to exercise the relay on its own (relay integration tests,
labs/relay_lab.py).

Not part of the deployed relay: the testbed's Mininet topology replaces it. It exists so
the relay can be tested and measured alone, with a far side that has a smaller-MTU link
(PMTUD) and a spoofing host.

    sub1 --a1--\\                                      (MTU 1400)
    sub2 --a2--- edge --upl/dnl-- tr --frl/trl-- fr --fdl/eth0-- fd
    spoof --a3-/  (relay)          (transit)       (far router)   (front-door stand-in)

Every namespace is `<prefix>-<role>`, with the run prefix of a `testbed.lifecycle`
RunRegistry, and is recorded in the run state *before* it is created; so are the temp dir
and the processes started here (which also die with their controller, PR_SET_PDEATHSIG).
`down()` removes exactly these; after a kill -9 of the lab, `cfrbench clean` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed.lifecycle import RunRegistry
from testbed.waiting import WaitTimeout, wait_until

ROLES = ("sub1", "sub2", "spoof", "edge", "tr", "fr", "fd")
ROUTERS = ("edge", "tr", "fr")
FAR_MTU = 1400  # tr <-> fr
SUB2_MTU = 1280  # sub2's access link: the edge itself must send PTB upstream-wards


@dataclass(frozen=True)
class Plan:
    """The address plan (198.18.252/24 access, 198.19.252/24 far side, 198.19.253.0/28 pool,
    2001:db8:1000::/40 subscriber /56s, 2001:2:0:a000::/52 alias prefix, links from
    2001:db8:fe97::/64)."""

    sub1_v4: str = "198.18.252.2"
    sub2_v4: str = "198.18.252.6"
    spoof_link_v4: str = "198.18.252.10"
    spoof_own_v4: str = "198.18.252.65"
    sub1_v6: str = "2001:db8:1000:100::2"
    sub2_v6: str = "2001:db8:1000:200::2"
    spoof_link_v6: str = "2001:db8:fe97::3:2"
    spoof_own_v6: str = "2001:db8:1000:300::1"
    fd_v4: str = "198.19.252.18"
    fd_v6: str = "2001:db8:fe97::2:2"
    tr_v4: str = "198.19.252.1"
    tr_v6: str = "2001:db8:fe97::1"
    edge_up_v4: str = "198.19.252.2"
    edge_up_v6: str = "2001:db8:fe97::2"
    pool_v4: str = "198.19.253.0/28"
    alias_v6: str = "2001:2:0:a000::/52"
    sub1_p6: str = "2001:db8:1000:100::/56"
    sub2_p6: str = "2001:db8:1000:200::/56"
    spoof_p6: str = "2001:db8:1000:300::/56"
    sub1_p4: str = "198.18.252.0/30"
    sub2_p4: str = "198.18.252.4/30"
    spoof_p4: str = "198.18.252.64/26"


PLAN = Plan()


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec hook: SIGKILL when the lab's controller exits, and a process group of its own
    (so `stop` can signal the whole group)."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgrp()


class LabNet:
    """The lab network. Without a `registry` it makes its own run (kind `lab`) and closes it
    in `down()`; with one, it records into it and releases only its own parts."""

    def __init__(self, registry: RunRegistry | None = None) -> None:
        self.owns_registry = registry is None
        self.registry = registry if registry is not None else RunRegistry("lab")
        self.prefix = self.registry.prefix
        self.plan = PLAN
        self.created: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self._down = False
        self.tmp = self.registry.make_tmpdir("lab")
        # `cfr` notes the last applied config per namespace; keep those notes in our tmp dir
        self.env = {**os.environ, "CFR_RUN_DIR": str(self.tmp / "run")}

    def ns(self, role: str) -> str:
        return self.registry.name(role)

    # -- command helpers -------------------------------------------------------------
    def cmd(self, role: str | None, *argv: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        full = list(argv) if role is None else ["ip", "netns", "exec", self.ns(role), *argv]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              input=input, check=False, env=self.env)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(full)} -> {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def popen(self, role: str, *argv: str, **kw: object) -> subprocess.Popen:
        """Start a process in `role`'s namespace, recorded in the run state."""
        kw.setdefault("env", self.env)
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv],
                             preexec_fn=_die_with_parent, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        self.registry.record_process(p.pid, f"{role}:{Path(argv[0]).name}", self.ns(role))
        return p

    def py(self, role: str, *args: str, timeout: float = 120) -> str:
        """Run `python -m labs.labtools ARGS` inside a namespace; return stdout."""
        return self.cmd(role, sys.executable, "-m", "labs.labtools", *args,
                        timeout=timeout).stdout

    def py_popen(self, role: str, *args: str, cpus: str | None = None,
                 **kw: object) -> subprocess.Popen:
        """Start `python -m labs.labtools ARGS`; `cpus` pins it (taskset list, e.g. "0")."""
        pin = ["taskset", "-c", cpus] if cpus is not None else []
        return self.popen(role, *pin, sys.executable, "-m", "labs.labtools", *args, **kw)

    def cfr(self, *args: str, check: bool = False, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        return self.cmd("edge", sys.executable, "-m", "relay.cli", *args, check=check,
                        timeout=timeout)

    # -- build / tear down -----------------------------------------------------------
    def up(self) -> LabNet:
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        p = self.plan
        for role in ROLES:
            self.created.append(self.ns(role))
            self.registry.record_netns(self.ns(role))  # recorded before it exists
            self.cmd(None, "ip", "netns", "add", self.ns(role))
            self.cmd(role, "ip", "link", "set", "lo", "up")
            self.cmd(role, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                     "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_ra=0",
                     "net.ipv6.conf.default.accept_ra=0")
        for role in ROUTERS:
            self.cmd(role, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                     "net.ipv6.conf.all.forwarding=1")
        self._link("sub1", "eth0", "edge", "a1")
        self._link("sub2", "eth0", "edge", "a2", mtu=SUB2_MTU)
        self._link("spoof", "eth0", "edge", "a3")
        self._link("edge", "upl", "tr", "dnl")
        self._link("tr", "frl", "fr", "trl", mtu=FAR_MTU)
        self._link("fr", "fdl", "fd", "eth0")
        a = self._addr
        a("sub1", "eth0", "198.18.252.2/30", "2001:db8:1000:100::2/64")
        a("edge", "a1", "198.18.252.1/30", "2001:db8:1000:100::1/64")
        a("sub2", "eth0", "198.18.252.6/30", "2001:db8:1000:200::2/64")
        a("edge", "a2", "198.18.252.5/30", "2001:db8:1000:200::1/64")
        a("spoof", "eth0", "198.18.252.10/30", "2001:db8:fe97::3:2/112")
        a("edge", "a3", "198.18.252.9/30", "2001:db8:fe97::3:1/112")
        a("spoof", "lo", f"{p.spoof_own_v4}/32", f"{p.spoof_own_v6}/128")
        a("edge", "upl", "198.19.252.2/29", "2001:db8:fe97::2/112")
        a("tr", "dnl", "198.19.252.1/29", "2001:db8:fe97::1/112")
        a("tr", "frl", "198.19.252.9/29", "2001:db8:fe97::1:1/112")
        a("fr", "trl", "198.19.252.10/29", "2001:db8:fe97::1:2/112")
        a("fr", "fdl", "198.19.252.17/29", "2001:db8:fe97::2:1/112")
        a("fd", "eth0", "198.19.252.18/29", "2001:db8:fe97::2:2/112")
        r = self._route
        r("sub1", "default", "198.18.252.1", "2001:db8:1000:100::1")
        r("sub2", "default", "198.18.252.5", "2001:db8:1000:200::1")
        r("spoof", "default", "198.18.252.9", "2001:db8:fe97::3:1")
        r("edge", "default", "198.19.252.1", "2001:db8:fe97::1")
        r("edge", p.spoof_p4, "198.18.252.10", None)
        self.cmd("edge", "ip", "-6", "route", "add", p.spoof_p6, "via", "2001:db8:fe97::3:2")
        self.cmd("edge", "ip", "-6", "route", "add", p.sub1_p6, "via", "2001:db8:1000:100::2")
        self.cmd("edge", "ip", "-6", "route", "add", p.sub2_p6, "via", "2001:db8:1000:200::2")
        for dst in ("198.18.252.0/24", p.pool_v4):
            self.cmd("tr", "ip", "route", "add", dst, "via", "198.19.252.2")
        for dst in ("2001:db8:1000::/40", "2001:2::/48"):
            self.cmd("tr", "ip", "-6", "route", "add", dst, "via", "2001:db8:fe97::2")
        self.cmd("tr", "ip", "route", "add", "198.19.252.16/29", "via", "198.19.252.10")
        self.cmd("tr", "ip", "-6", "route", "add", "2001:db8:fe97::2:0/112", "via",
                 "2001:db8:fe97::1:2")
        r("fr", "default", "198.19.252.9", "2001:db8:fe97::1:1")
        r("fd", "default", "198.19.252.17", "2001:db8:fe97::2:1")

    def _link(self, a: str, an: str, b: str, bn: str, mtu: int | None = None) -> None:
        self.cmd(None, "ip", "link", "add", an, "netns", self.ns(a), "type", "veth", "peer",
                 "name", bn, "netns", self.ns(b))
        for role, name in ((a, an), (b, bn)):
            if mtu:
                self.cmd(role, "ip", "link", "set", name, "mtu", str(mtu))
            self.cmd(role, "ip", "link", "set", name, "up")

    def _addr(self, role: str, dev: str, v4: str, v6: str) -> None:
        self.cmd(role, "ip", "addr", "add", v4, "dev", dev)
        self.cmd(role, "ip", "-6", "addr", "add", v6, "dev", dev, "nodad")

    def _route(self, role: str, dst: str, v4: str | None, v6: str | None) -> None:
        if v4:
            self.cmd(role, "ip", "route", "add", dst, "via", v4)
        if v6:
            self.cmd(role, "ip", "-6", "route", "add", dst, "via", v6)

    @contextlib.contextmanager
    def capture(self, role: str, iface: str, name: str) -> Iterator[Path]:
        """tcpdump on `iface` in `role` for the duration of the block; yields the pcap path
        (complete once the block has exited)."""
        path = self.tmp / name
        p = self.popen(role, "tcpdump", "-i", iface, "-s", "0", "-U", "-n",
                       "--immediate-mode", "-w", str(path), stderr=subprocess.PIPE, text=True)
        line = p.stderr.readline() if p.stderr else ""
        if "listening" not in line:
            self.stop(p)
            raise RuntimeError(f"tcpdump did not start in {role}: {line!r}")
        try:
            yield path
        finally:
            time.sleep(0.3)
            self.stop(p, signal.SIGINT)

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 5) -> None:
        """Signal `proc`'s process group, SIGKILL it if it outlives `wait`, forget it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.registry.forget_process(proc.pid)

    def down(self) -> list[str]:
        """Kill what we started, then delete exactly our namespaces (their nft tables and
        conntrack state go with them) and temp dir, newest first. Returns problems.

        Only once: a second call would write the run state again after it was removed."""
        if self._down:
            return []
        self._down = True
        for p in reversed(self.procs):
            self.stop(p, wait=2)
        self.procs.clear()
        problems = self.registry.release_netns(self.created)
        self.created.clear()
        self.registry.release_tmpdir(self.tmp)
        if self.owns_registry:
            problems += self.registry.close()
        return problems

    def __enter__(self) -> LabNet:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- relay config --------------------------------------------------------------------
    def config_text(self, policy: str, state_dir: Path, **over: object) -> str:
        """A relay config for this network; keyword overrides are 'section.key' = value."""
        p = self.plan
        vals: dict[str, object] = {
            "relay.table": "cfr", "relay.policy": policy,
            "alias.v4": [p.pool_v4], "alias.v6_prefixes": [p.alias_v6],
            "alias.v6_pool_size": 16, "epoch.length": "1h",
            "limits.flows_per_subscriber": 1000, "mapping_log.retention": "1h",
        }
        vals.update({k.replace("__", "."): v for k, v in over.items()})
        sections: dict[str, dict[str, object]] = {}
        for k, v in vals.items():
            sec, key = k.split(".", 1)
            sections.setdefault(sec, {})[key] = v
        lines = [f'[relay]\nstate_dir = "{state_dir}"\negress_interfaces = ["upl"]']
        for key, v in sections.pop("relay").items():
            lines.append(f"{key} = {_toml(v)}")
        for ifname, p4, p6 in (("a1", p.sub1_p4, p.sub1_p6), ("a2", p.sub2_p4, p.sub2_p6),
                               ("a3", p.spoof_p4, p.spoof_p6)):
            lines.append(f'[[subscribers]]\ninterfaces = ["{ifname}"]\n'
                         f'prefixes = ["{p4}", "{p6}"]')
        for sec, kv in sections.items():
            lines.append(f"[{sec}]")
            lines += [f"{k} = {_toml(v)}" for k, v in kv.items()]
        lines.append('[[nptv6.map]]\nsubscriber = "2001:db8:1000:100::/56"\n'
                     'alias = "2001:2:0:a100::/56"')
        lines.append('[[nptv6.map]]\nsubscriber = "2001:db8:1000:200::/56"\n'
                     'alias = "2001:2:0:a200::/56"')
        lines.append('[[nptv6.map]]\nsubscriber = "2001:db8:1000:300::/56"\n'
                     'alias = "2001:2:0:a300::/56"')
        return "\n".join(lines) + "\n"

    def write_config(self, policy: str, name: str = "relay.toml", **over: object) -> Path:
        path = self.tmp / name
        path.write_text(self.config_text(policy, self.tmp / "state", **over))
        return path


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise TypeError(v)


@contextlib.contextmanager
def labnet(registry: RunRegistry | None = None) -> Iterator[LabNet]:
    net = LabNet(registry)
    try:
        yield net.up()
    finally:
        net.down()


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll `pred` until it is true or `timeout` passes; the final answer either way (the
    labs' boolean form of `testbed.waiting.wait_until`, for asserting on)."""
    try:
        wait_until(pred, timeout, interval, "a lab condition")
    except WaitTimeout:
        return False
    return True
