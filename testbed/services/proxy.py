"""Off-path forward proxies (tinyproxy, HTTP CONNECT): the relays a user would otherwise
pick. A single proxy on one relay-provider node, or two chained (ingress forwards to
egress), the shape of multi-hop privacy relays. They tunnel TLS; they never terminate it.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import jinja2

from testbed.addressing import ALLOWED_V4, ALLOWED_V6
from testbed.errors import EnvironmentProblem
from testbed.netns import ManagedProcess, NetnsNode
from testbed.waiting import wait_until

PROXY_PORT = 3128
# CONNECT is allowed to HTTPS, to the proxy port (clients may chain providers) and to
# iperf3's port (throughput benchmarks tunnel iperf3 through the proxy).
CONNECT_PORTS = (443, PROXY_PORT, 5201)
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
)


def render_config(prefix: str, port: int = PROXY_PORT, upstream: str | None = None,
                  log_file: str | None = None, max_clients: int = 2000) -> str:
    """tinyproxy.conf: only addresses of the testbed's plan may use it (not an open proxy)."""
    return _TEMPLATES.get_template("tinyproxy.conf.j2").render(
        prefix=prefix, port=port, listen=None, upstream=upstream, log_file=log_file,
        log_level="Warning", max_clients=max_clients, connect_ports=CONNECT_PORTS,
        allow=[str(n) for n in (*ALLOWED_V4, *ALLOWED_V6)],
    )


@dataclass
class Proxy:
    node: NetnsNode
    address: str  # IPv4 service address clients connect to
    process: ManagedProcess

    port: int = PROXY_PORT

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


def _wait_listening(node: NetnsNode, address: str, port: int, timeout: float = 10) -> None:
    def listening() -> bool:
        return bool(node.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout.strip())

    wait_until(listening, timeout, 0.05, f"the proxy on {node.name} to listen on {address}:{port}")


def start_proxy(node: NetnsNode, address: str, workdir: Path, prefix: str,
                upstream: str | None = None, port: int = PROXY_PORT) -> Proxy:
    """Start tinyproxy in `node` on `port`; with `upstream` it forwards CONNECTs there."""
    if not shutil.which("tinyproxy"):
        raise EnvironmentProblem("tinyproxy is not installed: run 'make setup'")
    socket.inet_aton(address)  # an IPv4 literal, or a clear ValueError
    name = f"tinyproxy-{node.name}-{port}"
    conf = workdir / f"{name}.conf"
    conf.write_text(render_config(prefix, port=port, upstream=upstream,
                                  log_file=str(workdir / f"{name}.log")))
    proc = node.spawn(["tinyproxy", "-d", "-c", str(conf)], label=name,
                      log=workdir / f"{name}.out")
    _wait_listening(node, address, port)
    return Proxy(node, address, proc, port)
