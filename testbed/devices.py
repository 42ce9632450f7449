"""Client devices in namespaces of their own, with their own network stack settings.

Why: the linkability suite asks which signals still tie a subscriber's flows together once
the relay hides the address. Transport fingerprints (TTL, TCP options, timestamps, window)
come from the sender's kernel settings, which are per network namespace; one population
namespace gives every subscriber the same stack and hides the question. Here each device
(or each device class) gets a namespace whose sysctls and route options differ the way real
device stacks do (``STACK_PROFILES``), hanging off the population host (``crowd``), which
acts as the devices' home router.

Layout, per device namespace ``<prefix>-dv<k>`` (k = 0, 1, ...):

    device ns: eth0 (the device's own addresses, /32 and /128) ── veth ── crowd: <prefix>v<k>

* No ARP or neighbour discovery on the veth: both ends get fixed MAC addresses and
  permanent neighbour entries, so the device's addresses, which crowd also holds (a
  household's IPv4 address is shared by its devices), never confuse address resolution.
* Device -> network: the device's default route points at crowd, which forwards
  (``accept_local`` on the veth, since the source is also one of crowd's addresses).
* Network -> device: crowd marks each connection with the veth it came from (nftables
  ``ct mark``) and routes replies by that mark (one ``ip rule`` + table per device, before
  the local table), so a reply reaches the namespace that opened the connection even when
  crowd owns the same address. Devices of one household get disjoint local port ranges, so
  two of them can never produce one 5-tuple.

**Per-line access delays** (``delay_rtts_ms``, optional): real access lines differ in
delay (2-30 ms of round trip is a common spread from fibre to DSL and cable), and the front
door sees it in the handshake RTT. The kernel has no netem, so delay comes from the userspace
delay line (``testbed/delayline``), one process per delayed link; one per device would be
hundreds of processes on a 2-core machine. Instead devices are grouped into K delay classes
(a household's devices share its class: it is the line's delay). Class c gets a router
namespace ``<prefix>-dc<c>`` that takes the devices' veths in place of the parent, and a
link namespace ``<prefix>-dl<c>`` holding one delay line between the router and the parent:

    device ns ── veth ── class router dc<c> ── dcup ══ delay line dl<c> ══ <prefix>c<c> ── parent

The class router does for its devices what the parent does without classes (fixed MACs,
permanent neighbours, replies routed back by connection mark), and the parent does the same
per class interface: it marks connections by the class interface and routes replies to
the class router's MAC. The delay line adds half the class's round-trip time each way.

Bring-up is batched: one ``ip -batch`` creates every namespace and veth pair, one forked
worker enters each namespace in turn (setns) and configures it over netlink and
``/proc/sys`` (no process per namespace), and one ``ip -batch`` plus one ``nft -f`` configure
crowd. ``BringUp`` reports each phase's time; 500 devices is the target (<= 60 s).

Over 400 lines on purpose: device namespaces, their per-class stack settings and the per-
line delay classes are one bring-up, parallelised and recorded in the run registry together;
splitting them would scatter the order of creation that teardown reverses.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from testbed.delayline import DirectionSpec
from testbed.delayline import command as delayline_command
from testbed.errors import NetworkError, ParameterError
from testbed.lifecycle import RunRegistry
from testbed.netns import NetnsNode

CLONE_NEWNET = 0x40000000
RULE_PREF = 50  # before the local table, which moves to LOCAL_PREF
LOCAL_PREF = 100
TABLE_BASE = 2000
MARK_BASE = 0x7d000
GATEWAY_V6 = "fe80::1"
UPLINK = "dcup"  # class router's interface towards its delay line
GATEWAY_V6_UP = "fe80::2"  # class router -> parent next hop (a permanent neighbour)
CLASS_TABLE_BASE = 1900
CLASS_MARK_BASE = 0x7c000
OFFLOADS_OFF = ("tx", "off", "tso", "off", "gso", "off", "gro", "off")
TEMPLATES = Path(__file__).parent / "templates"


def delay_class_rtts(classes: int, lo_ms: float = 2.0, hi_ms: float = 30.0) -> list[float]:
    """Round-trip access delays of ``classes`` delay classes, geometrically spaced from
    ``lo_ms`` to ``hi_ms`` (access delay spreads over an order of magnitude, fibre to DSL,
    so equal ratios rather than equal steps); one class gets ``lo_ms``."""
    if classes < 1 or not 0 <= lo_ms <= hi_ms:
        raise ParameterError("delay classes", (classes, lo_ms, hi_ms),
                             ">= 1 class and 0 <= lo_ms <= hi_ms")
    if classes == 1:
        return [float(lo_ms)]
    if lo_ms == 0:
        return [hi_ms * i / (classes - 1) for i in range(classes)]
    ratio = (hi_ms / lo_ms) ** (1 / (classes - 1))
    return [round(lo_ms * ratio**i, 3) for i in range(classes)]


@dataclass(frozen=True)
class StackProfile:
    """One device stack: the per-namespace settings a front door can see in a SYN.

    ``tcp_timestamps``: 0 off, 1 on with a random offset per connection (Linux default), 2
    on without random offsets (TSval is the machine's clock: on this one-kernel testbed all
    such devices share it, so the offset then names the profile, not a device).
    ``initrwnd``: the route's initial receive window (packets), which sets the SYN window.
    """

    name: str
    ttl: int = 64
    hop_limit: int = 64
    tcp_timestamps: int = 1
    tcp_sack: int = 1
    tcp_window_scaling: int = 1
    initrwnd: int | None = None

    def sysctls(self) -> dict[str, str]:
        return {
            "net/ipv4/ip_default_ttl": str(self.ttl),
            "net/ipv6/conf/all/hop_limit": str(self.hop_limit),
            "net/ipv6/conf/default/hop_limit": str(self.hop_limit),
            "net/ipv6/conf/eth0/hop_limit": str(self.hop_limit),
            "net/ipv4/tcp_timestamps": str(self.tcp_timestamps),
            "net/ipv4/tcp_sack": str(self.tcp_sack),
            "net/ipv4/tcp_window_scaling": str(self.tcp_window_scaling),
        }


# Device classes whose stack defaults differ the way common client systems' do (TTL 64 vs
# 128, timestamps off on Windows, SACK off on some embedded stacks, different initial
# windows). They are approximations made with Linux knobs, not copies of those systems.
STACK_PROFILES: dict[str, StackProfile] = {
    p.name: p
    for p in (
        StackProfile("linux"),
        StackProfile("windows-like", ttl=128, hop_limit=128, tcp_timestamps=0),
        StackProfile("macos-like", tcp_timestamps=2, initrwnd=22),
        StackProfile("embedded-like", ttl=255, hop_limit=255, tcp_sack=0,
                     tcp_window_scaling=0, initrwnd=4),
    )
}


@dataclass(frozen=True)
class DeviceClass:
    """A kind of device: its stack (namespace sysctls) and its client, as an ``echd load
    --profiles`` entry without the namespace (``client``: alpn, curves, no_tickets, and the
    per-socket knobs such as rcvbuf; see ech/internal/loadgen/profile.go)."""

    name: str
    stack: StackProfile
    client: dict = field(default_factory=dict)

    def echd_profile(self, netns_path: str | None) -> dict:
        out = dict(self.client)
        if netns_path:
            out["netns"] = netns_path
        return out


# Under ECH, crypto/tls offers TLS 1.3 only, so classes differ in ALPN, key-exchange groups
# and whether they ask for tickets (see ech/internal/loadgen/profile.go for what Go allows);
# the SYN window differs through the route's initrwnd (smaller) or SO_RCVBUF (larger); the
# HTTP/2 SETTINGS through the h2_* fields (values in the style of common browsers).
DEVICE_CLASSES: dict[str, DeviceClass] = {
    c.name: c
    for c in (
        DeviceClass("linux", STACK_PROFILES["linux"], {"alpn": ["h2", "http/1.1"]}),
        DeviceClass("windows-like", STACK_PROFILES["windows-like"],
                    {"alpn": ["h2", "http/1.1"], "curves": ["X25519", "P256", "P384"],
                     "rcvbuf": 262144, "h2_header_table": 65536, "h2_stream_window": 6291456,
                     "h2_conn_window": 15728640}),
        DeviceClass("macos-like", STACK_PROFILES["macos-like"],
                    {"alpn": ["h2", "http/1.1"], "curves": ["X25519MLKEM768", "X25519", "P256"],
                     "h2_stream_window": 2097152, "h2_conn_window": 10485760}),
        DeviceClass("embedded-like", STACK_PROFILES["embedded-like"],
                    {"alpn": ["http/1.1"], "curves": ["P256"], "no_tickets": True}),
    )
}


@dataclass(frozen=True)
class DeviceSpec:
    """A device namespace: its stack, its addresses, and its slot in the household's port
    space (``port_slot`` of ``port_slots`` disjoint ranges)."""

    name: str
    stack: StackProfile
    addrs: tuple[str, ...]
    port_slot: int = 0
    port_slots: int = 1
    device_class: str = ""
    delay_class: int = -1  # index into DeviceNamespaces' delay_rtts_ms; -1: no delay classes

    def port_range(self) -> tuple[int, int]:
        lo, hi = 20000, 60999
        width = (hi - lo + 1) // max(self.port_slots, 1)
        start = lo + self.port_slot * width
        return start, start + width - 1


@dataclass
class BringUp:
    """Seconds per phase of one bring-up (wall clock, shared machine: noisy)."""

    devices: int
    create_s: float = 0.0
    configure_s: float = 0.0
    parent_s: float = 0.0
    delay_s: float = 0.0  # class routers and delay lines (0 without delay classes)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.create_s + self.configure_s + self.parent_s + self.delay_s


def _mac(kind: int, k: int) -> str:
    """Locally administered unicast MAC: 02:cf:<kind>:<k as 3 bytes>."""
    return f"02:cf:{kind:02x}:{(k >> 16) & 0xff:02x}:{(k >> 8) & 0xff:02x}:{k & 0xff:02x}"


def _is6(addr: str) -> bool:
    return ":" in addr


class DeviceNamespaces:
    """Device namespaces behind a parent node (the population host); see module docstring."""

    def __init__(self, parent: NetnsNode, registry: RunRegistry, gateway_v4: str,
                 delay_rtts_ms: Sequence[float] = (), delay_seed: int = 1) -> None:
        self.parent = parent
        self.registry = registry
        self.gateway_v4 = gateway_v4
        self.delay_rtts_ms = tuple(float(r) for r in delay_rtts_ms)
        for r in self.delay_rtts_ms:
            DirectionSpec(delay_ms=r / 2)  # rejects a bad value before anything exists
        self.delay_seed = delay_seed
        self.devices: list[DeviceSpec] = []
        self._ns: list[str] = []
        self._lines: list[subprocess.Popen] = []

    @property
    def classes(self) -> int:
        """Number of delay classes (0: devices hang off the parent directly)."""
        return len(self.delay_rtts_ms)

    def router_ns(self, c: int) -> str:
        return self.registry.name(f"dc{c}")

    def line_ns(self, c: int) -> str:
        return self.registry.name(f"dl{c}")

    def class_veth(self, c: int) -> str:
        """The parent's interface towards delay class c."""
        return f"{self.registry.prefix}c{c}"[:15]

    def attach_ns(self, d: DeviceSpec) -> str:
        """The namespace holding the device's veth peer: its class router, else the parent."""
        return self.router_ns(d.delay_class) if self.classes else self.parent.netns

    def ns_name(self, k: int) -> str:
        return self.registry.name(f"dv{k}")

    def veth_name(self, k: int) -> str:
        return f"{self.registry.prefix}v{k}"[:15]

    def netns_path(self, k: int) -> str:
        return f"/run/netns/{self.ns_name(k)}"

    def create_lines(self, devices: Sequence[DeviceSpec]) -> list[str]:
        """The root-namespace `ip -batch` lines: namespaces, then veth pairs made directly in
        their final namespaces, with fixed MAC addresses."""
        lines = [f"netns add {self.ns_name(k)}" for k in range(len(devices))]
        for c in range(self.classes):
            lines += [f"netns add {self.router_ns(c)}", f"netns add {self.line_ns(c)}"]
        for k, d in enumerate(devices):
            lines.append(
                f"link add {self.veth_name(k)} address {_mac(1, k)} netns {self.attach_ns(d)} "
                f"type veth peer name eth0 address {_mac(2, k)} netns {self.ns_name(k)}")
        for c in range(self.classes):
            lines.append(f"link add {UPLINK} address {_mac(3, c)} netns {self.router_ns(c)} "
                         f"type veth peer name dla address {_mac(4, c)} netns {self.line_ns(c)}")
            lines.append(f"link add dlb address {_mac(5, c)} netns {self.line_ns(c)} "
                         f"type veth peer name {self.class_veth(c)} address {_mac(6, c)} "
                         f"netns {self.parent.netns}")
        return lines

    def parent_lines(self, devices: Sequence[DeviceSpec], family: int) -> list[str]:
        """The parent's `ip -batch` lines for one family: veth up, the device's addresses
        on-link with permanent neighbours, a gateway neighbour, one table and mark rule.
        With delay classes the parent's veths are the class interfaces, and the neighbours
        of a class's device addresses are its class router (``class_lines``)."""
        if self.classes:
            lines = self.class_lines(devices, family)
        else:
            lines = self.attach_lines(list(enumerate(devices)), family)
        if devices:
            lines.append(f"rule add pref {LOCAL_PREF} lookup local")
            lines.append("rule del pref 0 lookup local")
        return lines

    def class_lines(self, devices: Sequence[DeviceSpec], family: int) -> list[str]:
        """The parent's lines towards the class routers (see ``parent_lines``)."""
        lines: list[str] = []
        for c in range(self.classes):
            veth, table, mark = self.class_veth(c), CLASS_TABLE_BASE + c, CLASS_MARK_BASE + c
            if family == 4:
                lines.append(f"link set {veth} up")
            for d in devices:
                if d.delay_class != c:
                    continue
                for a in d.addrs:
                    if _is6(a) == (family == 6):
                        lines.append(f"neigh replace {a} lladdr {_mac(3, c)} dev {veth} "
                                     "nud permanent")
            default = "::/0" if family == 6 else "0.0.0.0/0"
            lines.append(f"route replace {default} dev {veth} table {table}")
            lines.append(f"rule add pref {RULE_PREF} fwmark {mark:#x} lookup {table}")
        return lines

    def router_lines(self, c: int, devices: Sequence[DeviceSpec], family: int) -> list[str]:
        """Class router c's lines: its devices as the parent would attach them, and its
        uplink (through the delay line) as the default route towards the parent."""
        pairs = [(k, d) for k, d in enumerate(devices) if d.delay_class == c]
        lines = self.attach_lines(pairs, family)
        gw = self.gateway_v4 if family == 4 else GATEWAY_V6_UP
        if family == 4:
            lines += ["link set lo up", f"link set dev {UPLINK} up"]
        lines += [f"neigh replace {gw} lladdr {_mac(6, c)} dev {UPLINK} nud permanent",
                  f"route replace default via {gw} dev {UPLINK}" + (" onlink" if family == 4
                                                                     else "")]
        return lines

    def attach_lines(self, pairs: Sequence[tuple[int, DeviceSpec]], family: int) -> list[str]:
        """Lines attaching devices (global index k, spec) to the namespace holding their
        veths: veth up, device addresses as permanent neighbours, one table and mark rule
        per device."""
        lines: list[str] = []
        for k, d in pairs:
            veth, table, mark = self.veth_name(k), TABLE_BASE + k, MARK_BASE + k
            if family == 4:
                lines.append(f"link set {veth} up")
            if family == 6:
                lines.append(f"addr add {GATEWAY_V6}/64 dev {veth} nodad")
            for a in d.addrs:
                if _is6(a) != (family == 6):
                    continue
                lines.append(f"neigh replace {a} lladdr {_mac(2, k)} dev {veth} nud permanent")
            default = "::/0" if family == 6 else "0.0.0.0/0"
            lines.append(f"route replace {default} dev {veth} table {table}")
            lines.append(f"rule add pref {RULE_PREF} fwmark {mark:#x} lookup {table}")
        return lines

    def nft_ruleset(self, devices: Sequence[DeviceSpec], delay_class: int | None = None) -> str:
        """The connection-marking ruleset of the parent (``delay_class`` None) or of one
        class router; the parent's marks are per class interface when there are classes."""
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        if delay_class is None and self.classes:
            marks = [(self.class_veth(c), CLASS_MARK_BASE + c) for c in range(self.classes)]
        else:
            marks = [(self.veth_name(k), MARK_BASE + k) for k, d in enumerate(devices)
                     if delay_class is None or d.delay_class == delay_class]
        return env.get_template("devices.nft.j2").render(
            table=f"{self.registry.prefix.replace('-', '_')}_devices", marks=marks)

    def parent_sysctls(self, devices: Sequence[DeviceSpec]) -> dict[str, str]:
        out = {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"}
        if self.classes:
            veths = [self.class_veth(c) for c in range(self.classes)]
        else:
            veths = [self.veth_name(k) for k in range(len(devices))]
        for v in veths:
            out[f"net/ipv4/conf/{v}/accept_local"] = "1"
            out[f"net/ipv4/conf/{v}/rp_filter"] = "0"
        return out

    def up(self, devices: Sequence[DeviceSpec]) -> BringUp:
        """Create and configure every device namespace and the parent's side."""
        if self.devices:
            raise ParameterError("devices", len(self.devices), "up() once per DeviceNamespaces")
        if not devices:
            raise ParameterError("devices", 0, "at least one device")
        if self.classes and any(not 0 <= d.delay_class < self.classes for d in devices):
            bad = next(d for d in devices if not 0 <= d.delay_class < self.classes)
            raise ParameterError(f"delay class of {bad.name}", bad.delay_class,
                                 f"0..{self.classes - 1} (one per delay_rtts_ms entry)")
        self.devices = list(devices)
        rep = BringUp(len(devices))
        names = [self.ns_name(k) for k in range(len(devices))]
        for c in range(self.classes):
            names += [self.router_ns(c), self.line_ns(c)]
        t0 = time.monotonic()
        self._ns = names
        # recorded before creation, so that a crash half-way is still cleaned up
        self.registry.state.netns.extend(n for n in names if n not in self.registry.state.netns)
        self.registry.save()
        _ip_batch(self.create_lines(devices), where="root namespace")
        rep.create_s = time.monotonic() - t0
        t0 = time.monotonic()
        _configure_in_namespaces(self, devices)
        rep.configure_s = time.monotonic() - t0
        t0 = time.monotonic()
        _sysctls_in(self.parent.netns, self.parent_sysctls(devices))
        _ip_batch(self.parent_lines(devices, 4), where=self.parent.name, netns=self.parent.netns)
        _ip_batch(self.parent_lines(devices, 6), where=self.parent.name, netns=self.parent.netns,
                  family=6)
        self.parent.run(["nft", "-f", "-"], input=self.nft_ruleset(devices))
        rep.parent_s = time.monotonic() - t0
        if self.classes:
            t0 = time.monotonic()
            self._up_classes(devices)
            rep.delay_s = time.monotonic() - t0
        return rep

    def _up_classes(self, devices: Sequence[DeviceSpec]) -> None:
        """Class routers (sysctls, links, routes, marks), then one delay line per class."""
        sysctls = {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
                   "net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/default/rp_filter": "0",
                   "net/ipv6/conf/all/accept_dad": "0", "net/ipv6/conf/default/accept_dad": "0"}
        wire = {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"}
        for c in range(self.classes):
            rns, lns = self.router_ns(c), self.line_ns(c)
            _sysctls_in(rns, sysctls)
            _ip_batch(self.router_lines(c, devices, 4), where=rns, netns=rns)
            _ip_batch(self.router_lines(c, devices, 6), where=rns, netns=rns, family=6)
            _run_in(rns, ["nft", "-f", "-"], self.nft_ruleset(devices, c))
            _sysctls_in(lns, wire)
            _ip_batch(["link set dla up", "link set dlb up"], where=lns, netns=lns)
            # a userspace packet path: no partial checksums or merged frames on its veths
            _run_in(lns, ["ethtool", "-K", "dla", *OFFLOADS_OFF])
            _run_in(lns, ["ethtool", "-K", "dlb", *OFFLOADS_OFF])
            _run_in(rns, ["ethtool", "-K", UPLINK, *OFFLOADS_OFF])
        for c in range(self.classes):
            self.parent.run(["ethtool", "-K", self.class_veth(c), *OFFLOADS_OFF])
        for c in range(self.classes):
            self._start_line(c)

    def _start_line(self, c: int) -> None:
        """Delay line c: half the class's round trip each way, ready file awaited."""
        from testbed.netns import _die_with_parent

        lns = self.line_ns(c)
        work = self.registry.make_tmpdir(f"delay-class-{c}")
        ready = work / "ready"
        half = DirectionSpec(delay_ms=self.delay_rtts_ms[c] / 2)
        argv = delayline_command("dla", "dlb", half, half, seed=self.delay_seed + c,
                                 stats_file=str(work / "stats.json"), ready_file=str(ready))
        log = open(work / "delayline.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(["ip", "netns", "exec", lns, *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        log.close()
        self.registry.record_process(proc.pid, f"delay line class {c}", netns=lns)
        self.registry.save()
        self._lines.append(proc)
        deadline = time.monotonic() + 10.0
        while not ready.exists():
            if proc.poll() is not None:
                tail = (work / "delayline.log").read_text(errors="replace")[-400:]
                raise NetworkError(f"delay line of class {c} ({lns}) exited: {tail.strip()}")
            if time.monotonic() > deadline:
                raise NetworkError(f"delay line of class {c} ({lns}) not ready after 10 s")
            time.sleep(0.01)

    def delay_classes(self) -> list[dict]:
        """Per class: its round trip, delay line namespace and device count (for results)."""
        return [{"class": c, "rtt_ms": r, "netns": self.line_ns(c),
                 "devices": sum(1 for d in self.devices if d.delay_class == c)}
                for c, r in enumerate(self.delay_rtts_ms)]

    def down(self) -> list[str]:
        """Delete the namespaces (their veths go with them) and undo the parent's rules."""
        if not self._ns:
            return []
        problems: list[str] = []
        for proc in self._lines:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.registry.forget_process(proc.pid)
        self._lines = []
        try:
            table = f"{self.registry.prefix.replace('-', '_')}_devices"
            self.parent.run(["nft", "delete", "table", "inet", table], check=False)
            for fam in ("-4", "-6"):
                self.parent.run(["ip", fam, "rule", "flush", "pref", str(RULE_PREF)], check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"device rules in {self.parent.name}: {exc}")
        try:
            _ip_batch([f"netns del {n}" for n in self._ns], where="root namespace")
        except NetworkError as exc:
            problems.append(str(exc))
        problems += self.registry.release_netns(self._ns)
        self._ns = []
        self.devices = []
        return problems

    def __enter__(self) -> DeviceNamespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _ip_batch(lines: list[str], *, where: str, netns: str | None = None, family: int = 4) -> None:
    argv = ["ip"] + (["-6"] if family == 6 else []) + (["-n", netns] if netns else [])
    proc = subprocess.run([*argv, "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetworkError(f"[{where}] ip -batch failed: {proc.stderr.strip()[:500]}")


def _run_in(netns: str, argv: list[str], input: str | None = None) -> None:
    """Run a command in a named namespace; a failure raises NetworkError with its stderr."""
    proc = subprocess.run(["ip", "netns", "exec", netns, *argv], input=input,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetworkError(f"[{netns}] {' '.join(argv[:3])} failed: {proc.stderr.strip()[:500]}")


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        with open(f"/proc/sys/{key}", "w") as fh:
            fh.write(value)


def _sysctls_in(netns: str, values: dict[str, str]) -> None:
    """Write sysctls in one namespace from a forked child (the controller stays put)."""
    _in_child(lambda: (_setns(f"/run/netns/{netns}"), _write_sysctls(values)), where=netns)


def _configure_one(dn: DeviceNamespaces, k: int, d: DeviceSpec) -> None:
    """Inside device namespace k (after setns): sysctls, then links, addresses, routes and
    neighbours over one netlink socket."""
    from pyroute2 import IPRoute  # imported in the worker only: netlink in its namespace

    lo, hi = d.port_range()
    sysctls = dict(d.stack.sysctls())
    sysctls["net/ipv4/ip_local_port_range"] = f"{lo} {hi}"
    sysctls["net/ipv6/conf/all/accept_dad"] = "0"
    sysctls["net/ipv6/conf/eth0/accept_dad"] = "0"
    _write_sysctls(sysctls)
    kw = {"metrics": {"initrwnd": d.stack.initrwnd}} if d.stack.initrwnd else {}
    with IPRoute() as ipr:
        lo_idx = ipr.link_lookup(ifname="lo")[0]
        eth = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=lo_idx, state="up")
        ipr.link("set", index=eth, state="up")
        for a in d.addrs:
            if _is6(a):
                ipr.addr("add", index=eth, address=a, prefixlen=128, flags=0x02)  # NODAD
            else:
                ipr.addr("add", index=eth, address=a, prefixlen=32)
        gw4, gw6 = dn.gateway_v4, GATEWAY_V6
        ipr.neigh("replace", dst=gw4, lladdr=_mac(1, k), ifindex=eth, state=0x80)  # PERMANENT
        ipr.neigh("replace", dst=gw6, lladdr=_mac(1, k), ifindex=eth, state=0x80, family=10)
        src4 = next((a for a in d.addrs if not _is6(a)), None)
        src6 = next((a for a in d.addrs if _is6(a)), None)
        if src4:
            ipr.route("add", dst="0.0.0.0/0", gateway=gw4, oif=eth, flags=0x04, prefsrc=src4,
                      **kw)  # RTNH_F_ONLINK
        if src6:
            ipr.route("add", dst="::/0", gateway=gw6, oif=eth, family=10, **kw)


def _configure_in_namespaces(dn: DeviceNamespaces, devices: Sequence[DeviceSpec]) -> None:
    def work() -> None:
        for k, d in enumerate(devices):
            _setns(dn.netns_path(k))
            try:
                _configure_one(dn, k, d)
            except Exception as exc:
                raise RuntimeError(f"device {d.name} ({dn.ns_name(k)}): {exc}") from exc

    _in_child(work, where="device namespaces")


def _in_child(work, *, where: str) -> None:
    """Run ``work`` in a forked child: setns there changes only the child. The child's
    error (one line) comes back over a pipe and is raised as NetworkError here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no return from here
        os.close(r)
        code = 0
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
            os.write(w, str(exc).replace("\n", " ")[:2000].encode())
            code = 1
        finally:
            os.close(w)
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        msg = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise NetworkError(f"[{where}] configuration failed: {msg or 'worker died'}")


def bench(count: int, registry: RunRegistry, delay_classes: int = 0) -> BringUp:
    """Bring ``count`` devices up behind a scratch parent namespace (no network around it)
    and tear them down again; returns the bring-up times. Profiles cycle through
    ``STACK_PROFILES``; each device gets its subscriber's IPv4 and one IPv6 address; with
    ``delay_classes`` K, device k is in class k mod K (RTTs ``delay_class_rtts(K)``)."""
    from testbed.addressing import AddressPlan

    plan = AddressPlan()
    parent_ns = registry.name("dvparent")
    registry.record_netns(parent_ns)
    _ip_batch([f"netns add {parent_ns}"], where="root namespace")
    parent = NetnsNode("dvparent", parent_ns, registry)
    profiles = list(STACK_PROFILES.values())
    devices = [DeviceSpec(f"dev{k}", profiles[k % len(profiles)],
                          (str(plan.subscriber(k).v4), str(plan.subscriber(k).v6)),
                          delay_class=k % delay_classes if delay_classes else -1)
               for k in range(count)]
    rtts = delay_class_rtts(delay_classes) if delay_classes else ()
    dn = DeviceNamespaces(parent, registry, str(plan.access_gateway_v4), delay_rtts_ms=rtts)
    try:
        return dn.up(devices)
    finally:
        dn.down()
        registry.release_netns([parent_ns])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testbed.devices --bench N``: measure the bring-up of N device namespaces."""
    import argparse
    import json

    from testbed.lifecycle import run_registry

    ap = argparse.ArgumentParser(prog="python -m testbed.devices", description=main.__doc__)
    ap.add_argument("--bench", type=int, required=True, metavar="N")
    ap.add_argument("--delay-classes", type=int, default=0, metavar="K",
                    help="K delay classes (one delay line each), RTTs 2..30 ms")
    args = ap.parse_args(argv)
    if args.bench < 1:
        raise ParameterError("--bench", args.bench, ">= 1")
    if args.delay_classes < 0:
        raise ParameterError("--delay-classes", args.delay_classes, ">= 0")
    with run_registry("devices-bench") as reg:
        rep = bench(args.bench, reg, args.delay_classes)
    print(json.dumps({"devices": rep.devices, "delay_classes": args.delay_classes,
                      "create_s": round(rep.create_s, 3),
                      "configure_s": round(rep.configure_s, 3),
                      "parent_s": round(rep.parent_s, 3), "delay_s": round(rep.delay_s, 3),
                      "total_s": round(rep.total_s, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
