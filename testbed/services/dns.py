"""Authoritative DNS for the testbed: BIND 9 serving A, AAAA and HTTPS records.

Clients learn the front door's ECHConfigList only from DNS (the HTTPS record's `ech=`
SvcParam, RFC 9848), as real browsers do. Zone files and named.conf are rendered from
jinja2 templates in `testbed/templates/`; `reload()` re-renders them (e.g. after an ECH
key rotation) and asks named to reload through its rndc control channel on the DNS node's
loopback, authenticated with a key generated per run.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import jinja2

from testbed.errors import EnvironmentProblem, NetworkError, UsageError
from testbed.lifecycle import RunRegistry
from testbed.netns import ManagedProcess, NetnsNode
from testbed.services import TEMPLATE_DIR, join_hostport
from testbed.waiting import wait_until

RNDC_KEY_NAME = "cfrbench-rndc"


def site_names(count: int, named: Sequence[str] = ()) -> list[str]:
    """The front door's default virtual sites (site-0001.example ...) plus named ones."""
    return [f"site-{i:04d}.example" for i in range(1, count + 1)] + [n.lower() for n in named]


@dataclass
class ZoneData:
    """What the zones publish: every name points at the front door and carries its ECH config.

    `names` are fully qualified without the trailing dot, under .example or .test; each
    distinct last label becomes one zone."""

    names: list[str]
    ech_config_list: str  # base64 ECHConfigList, as `echd configlist` prints it
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    ttl: int = 60
    port: int | None = None  # HTTPS record port= (None: 443 implied)
    ns_ipv4: list[str] = field(default_factory=list)
    ns_ipv6: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """Reject data BIND would refuse, with a clear message, before touching anything."""
        if not self.names:
            raise UsageError("zone data has no names")
        if not self.ipv4 and not self.ipv6:
            raise UsageError("zone data needs at least one front-door address (ipv4 or ipv6)")
        try:
            raw = base64.b64decode(self.ech_config_list, validate=True)
        except ValueError:
            raise UsageError("ech_config_list is not valid base64") from None
        if len(raw) < 2 or int.from_bytes(raw[:2], "big") != len(raw) - 2:
            raise UsageError("ech_config_list is not an ECHConfigList (bad length prefix)")
        for n in self.names:
            if n.endswith(".") or "." not in n or n.rsplit(".", 1)[1] not in ("example", "test"):
                raise UsageError(f"zone name {n!r} must be a name under .example or .test")

    def zones(self) -> dict[str, list[str]]:
        """Names grouped by zone apex (their last label)."""
        out: dict[str, list[str]] = defaultdict(list)
        for n in self.names:
            out[n.rsplit(".", 1)[1]].append(n)
        return dict(out)


class DnsServer:
    """One `named` instance on a node, authoritative for the zones of `zone_data`."""

    def __init__(
        self,
        node: NetnsNode,
        zone_data: ZoneData,
        *,
        listen_v4: Sequence[str] = (),
        listen_v6: Sequence[str] = (),
        port: int = 53,
        control_port: int = 953,
        control_addr: str = "127.0.0.1",
        workdir: Path | None = None,
        registry: RunRegistry | None = None,
    ) -> None:
        if not shutil.which("named") or not shutil.which("rndc"):
            raise EnvironmentProblem("BIND 9 (named, rndc) is not installed: run 'make setup'")
        zone_data.validate()
        self.node = node
        self.zone_data = zone_data
        self.listen_v4 = list(listen_v4) or ["127.0.0.1"]
        self.listen_v6 = list(listen_v6)
        self.port = port
        self.control_port = control_port
        self.control_addr = control_addr
        self.registry = registry or node.registry
        if workdir is None:
            if self.registry is None:
                raise UsageError("DnsServer needs a workdir or a node with a run registry")
            workdir = self.registry.make_tmpdir(f"dns-{node.name}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rndc_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.proc: ManagedProcess | None = None
        self._serial = int(time.time())
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )

    @property
    def address(self) -> str:
        """host:port clients should query (the first listen address)."""
        host = self.listen_v4[0] if self.listen_v4 else self.listen_v6[0]
        return join_hostport(host, self.port)

    @property
    def log_path(self) -> Path:
        return self.workdir / "named.log"

    def _common(self) -> dict:
        return {
            "run_label": self.registry.prefix if self.registry else "-",
            "rndc_key_name": RNDC_KEY_NAME,
            "rndc_secret": self.rndc_secret,
            "control_addr": self.control_addr,
            "control_port": self.control_port,
        }

    def render(self) -> Path:
        """Write named.conf, rndc.conf and one zone file per zone; returns named.conf."""
        zd = self.zone_data
        zd.validate()
        self._serial = max(self._serial + 1, int(time.time()))
        zones = []
        for apex, names in sorted(zd.zones().items()):
            path = self.workdir / f"db.{apex}"
            text = self._env.get_template("zone.db.j2").render(
                zone=apex, ttl=zd.ttl, serial=self._serial, names=names, ipv4=zd.ipv4,
                ipv6=zd.ipv6, alpn=",".join(zd.alpn), port=zd.port, ech=zd.ech_config_list,
                ns_ipv4=zd.ns_ipv4, ns_ipv6=zd.ns_ipv6,
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
            zones.append({"name": apex, "file": str(path)})
        conf = self.workdir / "named.conf"
        conf.write_text(self._env.get_template("named.conf.j2").render(
            workdir=str(self.workdir), port=self.port, listen_v4=self.listen_v4,
            listen_v6=self.listen_v6, zones=zones, **self._common(),
        ))
        (self.workdir / "rndc.conf").write_text(
            self._env.get_template("rndc.conf.j2").render(**self._common())
        )
        return conf

    def check(self) -> None:
        """named-checkconf -z: a malformed zone is a one-line error before named starts."""
        conf = self.workdir / "named.conf"
        res = subprocess.run(["named-checkconf", "-z", str(conf)], capture_output=True, text=True)
        if res.returncode != 0:
            lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "error" in ln.lower()]
            raise UsageError(f"generated DNS config rejected by named-checkconf: "
                             f"{(lines or [res.stdout.strip()])[0]}")

    def start(self, timeout: float = 15.0) -> DnsServer:
        """Render, check, start named in the foreground (-g) and wait until it answers."""
        self.render()
        self.check()
        self.proc = self.node.spawn(
            ["named", "-g", "-c", str(self.workdir / "named.conf")],
            label="named", log=self.log_path,
        )
        self._wait_serial(self._serial, timeout)
        return self

    def reload(self, zone_data: ZoneData | None = None, timeout: float = 15.0) -> None:
        """Re-render (optionally with new data, e.g. a rotated ECHConfigList) and `rndc reload`;
        returns once named serves the new serial."""
        if zone_data is not None:
            self.zone_data = zone_data
        self.render()
        self.check()
        self.node.run(["rndc", "-c", str(self.workdir / "rndc.conf"), "reload"], timeout=timeout)
        self._wait_serial(self._serial, timeout)

    def _wait_serial(self, serial: int, timeout: float) -> None:
        """Poll the DNS port (SOA query, from inside the node) until `serial` is served."""
        apex = sorted(self.zone_data.zones())[0]
        host = self.listen_v4[0] if self.listen_v4 else self.listen_v6[0]
        script = (
            "import sys,dns.message,dns.query,dns.rdatatype\n"
            "q=dns.message.make_query(sys.argv[1]+'.',dns.rdatatype.SOA)\n"
            "r=dns.query.udp(q,sys.argv[2],port=int(sys.argv[3]),timeout=1)\n"
            "print(r.answer[0][0].serial if r.answer else -1)\n"
        )
        last = [""]

        def serves_serial() -> bool:
            if self.proc is not None and not self.proc.alive():
                raise NetworkError(f"[{self.node.name}] named exited: {self.proc.log_tail(8)}")
            res = self.node.run([sys.executable, "-c", script, apex, host, str(self.port)],
                                check=False, timeout=5)
            last[0] = (res.stdout or res.stderr).strip()
            return res.returncode == 0 and last[0].isdigit() and int(last[0]) >= serial

        wait_until(serves_serial, timeout, 0.1,
                   f"[{self.node.name}] named to serve {apex} serial {serial}",
                   detail=lambda: f"last answer {last[0][-200:]!r}; "
                                  + (self.proc.log_tail(8) if self.proc else ""))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def query_https(self, name: str, *, timeout: float = 2.0) -> dns.message.Message:
        """Query the HTTPS record with dnspython (from the controller; host nodes only)."""
        q = dns.message.make_query(name.rstrip(".") + ".", dns.rdatatype.HTTPS)
        host = self.listen_v4[0] if self.listen_v4 else self.listen_v6[0]
        return dns.query.udp(q, host, port=self.port, timeout=timeout)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
