"""ECH front door, origins and load generator: Python launchers around `echd`.

`echd` (Go standard library, `ech/`) does the TLS; this module starts it in the right
node with the lifecycle rules (recorded, dies with the controller, stopped in teardown)
and turns its outputs (front-door log, ground truth, summary) into Python objects.

Shared vs split mode is a parameter (`mode=`), so a scenario picks it without a CLI:
`CdnDeployment(front_node, origin_node, mode="split", ...)`.

About 450 lines on purpose: the launchers of one binary (`echd`) in its roles (keys, front
door, origin, deployment, load generator) share one service base class (`_EchdService`) and
one set of output readers, so they change together when `echd`'s flags or logs do.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from testbed import paths
from testbed.errors import NetworkError, ParameterError, UsageError
from testbed.lifecycle import RunRegistry
from testbed.netns import ManagedProcess, NetnsNode
from testbed.services import join_hostport, probe_host, split_hostport, wait_tcp
from testbed.services.dns import DnsServer
from testbed.waiting import wait_until

MODES = ("shared", "split")
PUBLIC_NAME = "cdn.example"


def _echd() -> str:
    return str(paths.binary("echd"))


def _run_echd(args: Sequence[str]) -> str:
    """Run an echd helper command in the controller; one-line errors become UsageError."""
    res = subprocess.run([_echd(), *args], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise UsageError(msg[0] if msg else f"echd {args[0]} exited {res.returncode}")
    return res.stdout


def make_ca(directory: Path | str) -> Path:
    """Create the per-run testbed CA in `directory`; returns the CA certificate (ca.pem).

    Leaf certificates are not written: the servers issue them on demand from ca.key."""
    directory = Path(directory)
    _run_echd(["ca", "--dir", str(directory)])
    return directory / "ca.pem"


def generate_ech_keys(
    directory: Path | str, public_name: str = PUBLIC_NAME, count: int = 1
) -> list[Path]:
    """Add `count` new ECH keys (X25519, HKDF-SHA256, AES-128-GCM + ChaCha20-Poly1305) to a
    key directory; the newest key is advertised first. Returns the new key files."""
    out = _run_echd(["keygen", "--dir", str(directory), "--public-name", public_name,
                     "--count", str(count)])
    return [Path(line.split()[0]) for line in out.splitlines() if line.strip()]


def ech_config_list(key_dir: Path | str) -> str:
    """The advertised ECHConfigList of a key directory, base64 (the HTTPS RR `ech=` value)."""
    return _run_echd(["configlist", "--keys", str(key_dir)]).strip()


def rotate_ech_keys(key_dir: Path | str, public_name: str = PUBLIC_NAME, *,
                    keep_old: bool = False) -> Path:
    """Rotate: add a new key; old keys are removed (clients holding them get retry configs)
    or, with keep_old, renamed *.ech.retired (still accepted, no longer advertised)."""
    key_dir = Path(key_dir)
    old = sorted(key_dir.glob("*.ech"))
    new = generate_ech_keys(key_dir, public_name, 1)[0]
    for p in old:
        if keep_old:
            p.rename(p.with_name(p.name + ".retired"))
        else:
            p.unlink()
    return new


def rotate_and_publish(key_dir: Path | str, front_doors: Sequence[_EchdService],
                       dns: DnsServer | None = None, *, public_name: str = PUBLIC_NAME,
                       keep_old: bool = False) -> str:
    """One ECH key rotation as an operator does it: new key, front doors reload (SIGHUP),
    then DNS publishes the new ECHConfigList. Clients still holding the old config in the
    meantime are rejected with retry configs. Returns the new ECHConfigList (base64)."""
    rotate_ech_keys(key_dir, public_name, keep_old=keep_old)
    for fd in front_doors:
        fd.reload_keys()
    new = ech_config_list(key_dir)
    if dns is not None:
        dns.reload(replace(dns.zone_data, ech_config_list=new))
    return new


def read_jsonl(path: Path) -> list[dict]:
    """Parse a JSON-lines file, ignoring a torn last line (the writer may still be running)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class _EchdService:
    """Common lifecycle of the long-running echd commands (serve, front, origin)."""

    command = ""
    label = ""

    def __init__(self, node: NetnsNode, *, listen: Sequence[str], workdir: Path | None,
                 log_path: Path | None) -> None:
        self.node = node
        self.listen = list(listen)
        self.registry: RunRegistry | None = node.registry
        if workdir is None:
            if self.registry is None:
                raise UsageError(f"{type(self).__name__} needs a workdir or a node with a registry")
            workdir = self.registry.make_tmpdir(f"{self.label}-{node.name}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path or self.workdir / f"{self.label}.jsonl"
        self.stderr_path = self.workdir / f"{self.label}.stderr"
        self.proc: ManagedProcess | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> _EchdService:
        """Start, then poll every listen port from inside the node until it accepts."""
        argv = self.argv()
        self.proc = self.node.spawn(argv, label=self.label, log=self.stderr_path)
        for addr in self.listen:
            host, port = split_hostport(addr)
            wait_tcp(self.node, probe_host(host), port, timeout=timeout, proc=self.proc,
                     what=f"echd {self.command}")
        return self

    def stop(self) -> int | None:
        """SIGTERM: echd closes every connection (each gets its log line) and exits."""
        if self.proc is None:
            return None
        rc = self.proc.stop()
        self.proc = None
        return rc

    def _reload_events(self) -> list[str]:
        if not self.stderr_path.exists():
            return []
        return [ln for ln in self.stderr_path.read_text(errors="replace").splitlines()
                if "reloaded" in ln or "key reload failed" in ln]

    def reload_keys(self, timeout: float = 5.0) -> None:
        """SIGHUP: re-read the key directory (rotation). Returns once echd reports the
        reload; raises NetworkError if it kept its old keys (the message says why)."""
        if self.proc is None or not self.proc.alive():
            raise NetworkError(f"echd {self.command} is not running")
        before = len(self._reload_events())
        self.proc.popen.send_signal(signal.SIGHUP)

        def new_events() -> list[str]:
            return self._reload_events()[before:]

        events = wait_until(new_events, timeout, 0.02,
                            f"echd {self.command} to report the key reload")
        if "failed" in events[-1]:
            raise NetworkError(events[-1])

    def records(self) -> list[dict]:
        """The log so far: one dict per connection (fields: see ech/README.md)."""
        return read_jsonl(self.log_path)

    def stderr_tail(self, lines: int = 20) -> str:
        return self.proc.log_tail(lines) if self.proc else ""

    def __enter__(self) -> _EchdService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FrontDoor(_EchdService):
    """The ECH client-facing server: `echd serve` (shared) or `echd front` (split)."""

    label = "frontdoor"

    def __init__(
        self,
        node: NetnsNode,
        *,
        mode: str = "shared",
        ca_dir: Path | str,
        key_dir: Path | str,
        listen: Sequence[str] = ("[::]:443",),
        public_name: str = PUBLIC_NAME,
        sites: int = 1000,
        named_sites: Sequence[str] = (),
        resumption: bool = True,
        routes: Mapping[str, str] | None = None,
        default_route: str | None = None,
        log_path: Path | None = None,
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if mode not in MODES:
            raise ParameterError("mode", mode, " or ".join(MODES))
        if mode == "split" and not routes and not default_route:
            raise UsageError("split mode needs routes or a default_route to an origin")
        super().__init__(node, listen=listen, workdir=workdir, log_path=log_path)
        self.mode = mode
        self.command = "serve" if mode == "shared" else "front"
        self.ca_dir, self.key_dir = Path(ca_dir), Path(key_dir)
        self.public_name = public_name
        self.sites, self.named_sites = sites, list(named_sites)
        self.resumption = resumption
        self.routes = dict(routes or {})
        self.default_route = default_route
        self.extra_args = list(extra_args)

    def argv(self) -> list[str]:
        argv = [_echd(), self.command, "--ca-dir", str(self.ca_dir), "--keys", str(self.key_dir),
                "--public-name", self.public_name, "--sites", str(self.sites),
                f"--resumption={'true' if self.resumption else 'false'}",
                "--log", str(self.log_path)]
        for a in self.listen:
            argv += ["--listen", a]
        for s in self.named_sites:
            argv += ["--site", s]
        if self.mode == "split":
            for suffix, dest in self.routes.items():
                argv += ["--route", f"{suffix}={dest}"]
            if self.default_route:
                argv += ["--default-route", self.default_route]
        return argv + self.extra_args

    def ech_config_list(self) -> str:
        """The ECHConfigList this front door advertises now (what DNS must publish)."""
        return ech_config_list(self.key_dir)


class Origin(_EchdService):
    """A split-mode backend (`echd origin`): terminates TLS for ClientHelloInner."""

    label = "origin"
    command = "origin"

    def __init__(
        self,
        node: NetnsNode,
        *,
        ca_dir: Path | str,
        listen: Sequence[str] = ("[::]:8443",),
        sites: int = 1000,
        named_sites: Sequence[str] = (),
        resumption: bool = True,
        log_path: Path | None = None,
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(node, listen=listen, workdir=workdir, log_path=log_path)
        self.ca_dir = Path(ca_dir)
        self.sites, self.named_sites = sites, list(named_sites)
        self.resumption = resumption
        self.extra_args = list(extra_args)

    def argv(self) -> list[str]:
        argv = [_echd(), "origin", "--ca-dir", str(self.ca_dir), "--sites", str(self.sites),
                f"--resumption={'true' if self.resumption else 'false'}",
                "--log", str(self.log_path)]
        for a in self.listen:
            argv += ["--listen", a]
        for s in self.named_sites:
            argv += ["--site", s]
        return argv + self.extra_args


@dataclass
class CdnDeployment:
    """A whole CDN side for one scenario: the front door, plus an origin in split mode.

    `mode` is the only switch between shared and split mode; the origin listens on
    `origin_listen` in `origin_node` (defaults to the front node) and the front routes
    every inner name to it."""

    front_node: NetnsNode
    ca_dir: Path
    key_dir: Path
    mode: str = "shared"
    origin_node: NetnsNode | None = None
    listen: Sequence[str] = ("[::]:443",)
    origin_listen: str = "[::]:8443"
    origin_connect: str | None = None  # address the front dials; default derived from listen
    public_name: str = PUBLIC_NAME
    sites: int = 1000
    named_sites: Sequence[str] = ()
    resumption: bool = True
    workdir: Path | None = None  # default: temp dirs from the node's run registry
    #: shared mode: numbered sites share certificates, this many names each (echd serve
    #: --cert-group), so clients can coalesce connections; 0 = one certificate per name
    cert_group: int = 0
    front: FrontDoor | None = field(default=None, init=False)
    origin: Origin | None = field(default=None, init=False)

    def start(self, timeout: float = 15.0) -> CdnDeployment:
        if self.mode not in MODES:
            raise ParameterError("mode", self.mode, " or ".join(MODES))
        default_route = None
        if self.mode == "split":
            onode = self.origin_node or self.front_node
            self.origin = Origin(onode, ca_dir=self.ca_dir, listen=[self.origin_listen],
                                 sites=self.sites, named_sites=self.named_sites,
                                 resumption=self.resumption,
                                 workdir=self._sub("origin")).start(timeout)
            if self.origin_connect:
                default_route = self.origin_connect
            else:
                host, port = split_hostport(self.origin_listen)
                default_route = join_hostport(probe_host(host), port)
        self.front = FrontDoor(self.front_node, mode=self.mode, ca_dir=self.ca_dir,
                               key_dir=self.key_dir, listen=self.listen,
                               public_name=self.public_name, sites=self.sites,
                               named_sites=self.named_sites, resumption=self.resumption,
                               default_route=default_route, workdir=self._sub("front"),
                               extra_args=(["--cert-group", str(self.cert_group)]
                                           if self.cert_group and self.mode == "shared"
                                           else []))
        self.front.start(timeout)
        return self

    def _sub(self, name: str) -> Path | None:
        return None if self.workdir is None else Path(self.workdir) / name

    def stop(self) -> None:
        if self.front:
            self.front.stop()
        if self.origin:
            self.origin.stop()

    def __enter__(self) -> CdnDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class LoadResult:
    """Ground truth (one dict per connection) and the summary of one `echd load` run."""

    records: list[dict]
    summary: dict
    returncode: int
    stderr: str
    argv: list[str]


class LoadGenerator:
    """`echd load` in a node: ECH client and load generator, one process for many subscribers."""

    def __init__(self, node: NetnsNode, *, dns: str, ca_file: Path | str,
                 workdir: Path | None = None) -> None:
        self.node = node
        self.dns = dns
        self.ca_file = Path(ca_file)
        if workdir is None:
            if node.registry is None:
                raise UsageError("LoadGenerator needs a workdir or a node with a registry")
            workdir = node.registry.make_tmpdir(f"load-{node.name}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def argv(
        self,
        *,
        sites: Sequence[str] = (),
        site_count: int = 0,
        count: int = 1,
        concurrency: int = 1,
        rate: float | None = None,
        duration: float | None = None,
        sources: Sequence[tuple[str, str]] = (),
        source: str | None = None,
        family: int | None = None,
        resumption: bool = False,
        session: bool = False,
        page_resources: int = 10,
        path: str = "/",
        workload: Sequence[Mapping] | None = None,
        proxies: Sequence[str] = (),
        no_ech: bool = False,
        extra: Sequence[str] = (),
    ) -> tuple[list[str], Path]:
        """Build the echd load command line; returns it and the ground-truth path."""
        self._n += 1
        tag = f"run{self._n}"
        out = self.workdir / f"{tag}.truth.jsonl"
        argv = [_echd(), "load", "--dns", self.dns, "--ca", str(self.ca_file), "--out", str(out),
                "--summary-json", "--resumption", "on" if resumption else "off",
                "--path", path, "--run-id", tag]
        for s in sites:
            argv += ["--site", s]
        if site_count:
            argv += ["--sites", str(site_count)]
        if workload is not None:
            wl = self.workdir / f"{tag}.workload.jsonl"
            wl.write_text("".join(json.dumps(dict(item)) + "\n" for item in workload))
            argv += ["--workload", str(wl)]
        elif rate is not None:
            argv += ["--rate", str(rate), "--duration", f"{duration or 10}s"]
        else:
            argv += ["--count", str(count), "--concurrency", str(concurrency)]
        if sources:
            sf = self.workdir / f"{tag}.sources"
            sf.write_text("".join(f"{sub} {addr}\n" for sub, addr in sources))
            argv += ["--sources", str(sf)]
        elif source:
            argv += ["--source", source]
        if family:
            argv += ["--family", str(family)]
        if session:
            argv += ["--session", "--page-resources", str(page_resources)]
        for p in proxies:
            argv += ["--proxy", p]
        if no_ech:
            argv.append("--no-ech")
        return argv + list(extra), out

    def run(self, *, timeout: float = 300.0, check: bool = True, **kwargs) -> LoadResult:
        """Run to completion. With check, a non-zero exit raises NetworkError (exit 2:
        UsageError) carrying echd's one-line message."""
        argv, out = self.argv(**kwargs)
        res = self.node.run(argv, check=False, timeout=timeout)
        summary: dict = {}
        for line in reversed(res.stdout.strip().splitlines()):
            try:
                summary = json.loads(line)
                break
            except ValueError:
                continue
        if check and res.returncode != 0:
            msg = res.stderr.strip().splitlines()
            text = msg[-1] if msg else f"exit {res.returncode}"
            if res.returncode == 2:
                raise UsageError(text)
            raise NetworkError(f"[{self.node.name}] {shlex.join(argv[:2])}: {text}")
        return LoadResult(read_jsonl(out), summary, res.returncode, res.stderr, argv)
