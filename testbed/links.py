"""Links: point-to-point veth links with per-direction emulation (delay, jitter, loss, rate,
queue), built on Mininet's Link/Intf.

Two mechanisms, chosen per network and recorded in every result:
- ``netem``: the kernel qdisc, on each end's egress, where the kernel has it;
- ``delayline``: a userspace delay line (``testbed/delayline``, AF_PACKET) in a small link
  namespace inserted into the link, for kernels without netem (Mininet's TCLink would print
  an error and run with no delay at all; this never does).
A link that asks only for a rate uses TBF on the egress interfaces and no delay line, so
an unemulated link is a plain veth pair.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mininet.link import Intf, Link
from mininet.node import Node

from testbed.delayline import DirectionSpec
from testbed.delayline import command as delayline_command
from testbed.errors import EnvironmentProblem, NetworkError, ParameterError
from testbed.waiting import WaitTimeout, wait_until

MECHANISMS = ("netem", "delayline")
OFFLOADS_OFF = ("tx", "off", "tso", "off", "gso", "off", "gro", "off")


def netem_available() -> bool:
    """Whether this kernel has sch_netem; probed in a throwaway namespace, touching nothing."""
    try:
        proc = subprocess.run(
            ["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def choose_mechanism(requested: str) -> str:
    """Resolve 'auto' to netem if the kernel has it, else the userspace delay line."""
    has_netem = netem_available()
    if requested == "auto":
        return "netem" if has_netem else "delayline"
    if requested == "netem" and not has_netem:
        raise EnvironmentProblem(
            "link_emulation=netem was requested but this kernel has no sch_netem; "
            "use 'auto' or 'delayline'"
        )
    if requested not in MECHANISMS:
        raise ParameterError("link_emulation", requested, "auto, netem or delayline")
    return requested


@dataclass(frozen=True)
class LinkSpec:
    """Emulation of one link; `up` is node a -> node b (towards the Internet), `down` back."""

    up: DirectionSpec = field(default_factory=DirectionSpec)
    down: DirectionSpec = field(default_factory=DirectionSpec)

    def needs_delay(self) -> bool:
        """Delay, jitter or loss requested: needs netem or the delay line, not just a qdisc."""
        return any(
            d.delay_ms > 0 or d.jitter_ms > 0 or d.loss_pct > 0 for d in (self.up, self.down)
        )

    def is_identity(self) -> bool:
        return self.up.is_identity() and self.down.is_identity()

    def configured_rtt_ms(self) -> float:
        return self.up.delay_ms + self.down.delay_ms


def _tc_netem_args(spec: DirectionSpec) -> list[str]:
    args = ["netem", "limit", str(spec.queue_packets)]
    if spec.delay_ms or spec.jitter_ms:
        args += ["delay", f"{spec.delay_ms}ms"]
        if spec.jitter_ms:
            args += [f"{spec.jitter_ms}ms"]
    if spec.loss_pct:
        args += ["loss", f"{spec.loss_pct}%"]
    if spec.rate_mbit:
        args += ["rate", f"{spec.rate_mbit}mbit"]
    return args


def _tc_tbf_args(spec: DirectionSpec) -> list[str]:
    assert spec.rate_mbit
    rate_bytes = spec.rate_mbit * 1e6 / 8
    burst = max(int(rate_bytes / 250), 3028)  # at least one tick's worth at HZ=250
    limit = max(spec.queue_packets * 1514, burst)
    return ["tbf", "rate", f"{spec.rate_mbit}mbit", "burst", str(burst), "limit", str(limit)]


class ShapedIntf(Intf):
    """A veth end whose egress carries this direction's emulation (rate via TBF, or netem)."""

    def config(self, egress: DirectionSpec | None = None, use_netem: bool = False,
               offloads_off: bool = False, **params):  # type: ignore[override]
        result = super().config(**params)
        if offloads_off:
            self.cmd("ethtool", "-K", self.name, *OFFLOADS_OFF)
        if egress is not None and not egress.is_identity():
            if use_netem:
                args = _tc_netem_args(egress)
            elif egress.rate_mbit:
                args = _tc_tbf_args(egress)
            else:
                args = []
            if args:
                out = self.cmd("tc", "qdisc", "replace", "dev", self.name, "root", *args)
                if out.strip():
                    raise NetworkError(f"tc on {self.node.name}:{self.name} failed: {out.strip()}")
        return result


class ShapedLink(Link):
    """A veth link whose two ends shape their egress (a's egress = up, b's = down)."""

    def __init__(self, node1: Node, node2: Node, spec: LinkSpec | None = None,
                 use_netem: bool = False, offloads_off: bool = False, **params) -> None:
        spec = spec or LinkSpec()
        p1 = dict(params.pop("params1", {}) or {})
        p2 = dict(params.pop("params2", {}) or {})
        p1.update(egress=spec.up, use_netem=use_netem, offloads_off=offloads_off)
        p2.update(egress=spec.down, use_netem=use_netem, offloads_off=offloads_off)
        params.pop("intf", None)
        super().__init__(node1, node2, intf=ShapedIntf, params1=p1, params2=p2, **params)


class DelayLineNode(Node):
    """The link namespace holding a userspace delay line between interfaces `a` and `b`.

    Mininet treats it as a switch (an L2 element with no addresses), so `pingall` and host
    listings ignore it; `start` launches the delay line, `stop` ends it.
    """

    READY_TIMEOUT_S = 10.0

    def __init__(self, name: str, up: DirectionSpec | None = None,
                 down: DirectionSpec | None = None, seed: int = 1,
                 workdir: str | None = None, **params) -> None:
        self.up = up or DirectionSpec()
        self.down = down or DirectionSpec()
        self.seed = seed
        self.workdir = Path(workdir) if workdir else None
        self.process: subprocess.Popen | None = None
        params.pop("inNamespace", None)
        super().__init__(name, inNamespace=True, **params)

    @property
    def ifa(self) -> str:
        return f"{self.name}-a"

    @property
    def ifb(self) -> str:
        return f"{self.name}-b"

    @property
    def stats_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{self.name}.stats.json"

    def start(self, controllers: list | None = None) -> None:
        from testbed.netns import _die_with_parent

        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        ready = self.workdir / f"{self.name}.ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        # The link namespace is a wire: no IPv6 on its ends, so it never sends anything.
        self.cmd("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1")
        for intf in self.intfList():
            self.cmd("ip", "link", "set", intf.name, "up")
            self.cmd("ethtool", "-K", intf.name, *OFFLOADS_OFF)
        argv = delayline_command(
            self.ifa, self.ifb, self.up, self.down, seed=self.seed,
            stats_file=str(self.stats_file), ready_file=str(ready),
        )
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - lives with process
        self.process = subprocess.Popen(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        process = self.process

        def started() -> bool:
            if process.poll() is not None:
                tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-500:]
                raise NetworkError(f"delay line {self.name} exited at start: {tail.strip()}")
            return ready.exists()

        wait_until(started, self.READY_TIMEOUT_S, 0.01, f"delay line {self.name} to be ready")

    def connected(self) -> bool:
        """Mininet asks switches whether their controller connected; a delay line has none."""
        return self.process is not None and self.process.poll() is None

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803 - Mininet's signature
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if deleteIntfs:
            self.deleteIntfs()

    def stats(self) -> dict:
        """The delay line's counters (it writes them on SIGUSR1 and at exit)."""
        import json
        import signal

        if self.process and self.process.poll() is None:
            before = self.stats_file.stat().st_mtime_ns if self.stats_file.exists() else 0
            self.process.send_signal(signal.SIGUSR1)
            with contextlib.suppress(WaitTimeout):  # an old file is better than none
                wait_until(lambda: self.stats_file.exists()
                           and self.stats_file.stat().st_mtime_ns != before,
                           2, 0.01, f"delay line {self.name} to rewrite its stats")
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}
