"""Deploying the Customer-Facing Relay (`relay/`, the `cfr` command) on the ISP edge node.

Which node that is, and its access-side and upstream interfaces, come from the topology's
roles (`net.roles.relay`, `relay_access`, `relay_upstream`); a deployment may also name
another node (`node_name`, e.g. a CFR host off the access path) and its interfaces.

The relay is deployed the way an operator would: a TOML config (rendered from a jinja2
template and the address plan) and `cfr apply` inside the edge's namespace. Benchmarks that
interleave policies sample by sample switch with pre-rendered nft transactions (the same
ones `cfr apply` would apply, rendered by the relay's own library), applied atomically in
one `nft -j -f` each, so a switch costs milliseconds and never rebuilds the topology.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from relay.policies import POLICIES
from testbed.errors import NetworkError, ParameterError
from testbed.netns import ManagedProcess
from testbed.network import Network
from testbed.paths import REPO_ROOT
from testbed.waiting import wait_until

TABLE = "cfr"
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
)


def cfr_command() -> str:
    return str(REPO_ROOT / ".venv" / "bin" / "cfr")


@dataclass
class RelayDeployment:
    """The relay on the ISP edge of a running network, for any policy."""

    net: Network
    workdir: Path
    pool_size: int = 8
    epoch_s: float = 60.0
    flows_per_subscriber: int = 1000
    retention: str = "1h"
    policy: str | None = None
    daemon: ManagedProcess | None = None
    #: where to deploy; None: the topology's relay node and its interfaces (`net.roles`)
    node_name: str | None = None
    access_interfaces: tuple[str, ...] | None = None
    upstream_interfaces: tuple[str, ...] | None = None
    _transactions: dict[str, Path] = field(default_factory=dict)

    @property
    def node(self):
        return self.net[self.node_name or self.net.roles.relay]

    @property
    def interfaces(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(access-side, upstream) interfaces of the relay node."""
        roles = self.net.roles
        return (self.access_interfaces or roles.relay_access,
                self.upstream_interfaces or roles.relay_upstream)

    @property
    def state_dir(self) -> Path:
        return self.workdir / "cfr-state"

    def config_text(self, policy: str) -> str:
        if policy not in POLICIES:
            raise ParameterError("policy", policy, ", ".join(POLICIES))
        plan = self.net.graph.plan
        return _TEMPLATES.get_template("cfr.toml.j2").render(
            prefix=self.net.registry.prefix, table=TABLE, state_dir=str(self.state_dir),
            policy=policy, egress=list(self.interfaces[1]), access=list(self.interfaces[0]),
            subscriber_prefixes=[str(plan.nets["subscribers_v4"]),
                                 str(plan.nets["subscribers_v6"])],
            alias_v4=[f"{a}/32" for a in plan.alias_pool_v4(self.pool_size)],
            alias_v6_prefix=str(plan.nets["alias_pool_v6"]), pool_size=self.pool_size,
            epoch_s=self.epoch_s, nptv6_subscribers=str(plan.nets["subscribers_v6"]),
            nptv6_alias=str(plan.nets["nptv6_v6"]),
            flows_per_subscriber=self.flows_per_subscriber, retention=self.retention,
        )

    def config_path(self, policy: str) -> Path:
        path = self.workdir / f"cfr-{policy}.toml"
        path.write_text(self.config_text(policy))
        return path

    def cfr(self, *args: str, check: bool = True, timeout: float = 60):
        return self.node.run([cfr_command(), *args], check=check, timeout=timeout)

    def apply(self, policy: str) -> None:
        """`cfr apply` with this policy: the operator's way, atomic, idempotent."""
        self.cfr("apply", str(self.config_path(policy)))
        self.policy = policy

    def start_daemon(self, policy: str) -> ManagedProcess:
        """`cfr run`: epochs rotate, conntrack events feed the mapping log, status is written."""
        self.stop_daemon()
        self.daemon = self.node.spawn([cfr_command(), "run", str(self.config_path(policy))],
                                      label="cfr", log=self.workdir / "cfr-run.log")
        daemon = self.daemon

        def reports_status() -> bool:
            if not daemon.alive():
                raise NetworkError(f"cfr run exited: {daemon.log_tail()}")
            return self.cfr("status", "--json", "--no-flows", check=False).returncode == 0

        wait_until(reports_status, 20, 0.1, "cfr run to report its status")
        self.policy = policy
        return daemon

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def status(self) -> dict:
        return json.loads(self.cfr("status", "--json").stdout)

    # -- fast switching for interleaved benchmarks --------------------------------------
    def prepare_switching(self, policies: list[str]) -> None:
        """Render each policy's full transaction once (after a first `cfr apply`)."""
        from relay import config as relay_config
        from relay import engine
        from relay.ruleset import DYNAMIC_SETS, full_ruleset

        if self.policy is None:
            self.apply(policies[0])
        for policy in policies:
            cfg = relay_config.load(self.config_path(policy))
            plan = engine.current_plan(cfg, engine.state_for(cfg))
            tx = full_ruleset(cfg, plan, frozenset(DYNAMIC_SETS))
            path = self.workdir / f"cfr-{policy}.nft.json"
            path.write_text(json.dumps(tx))
            self._transactions[policy] = path

    def switch(self, policy: str) -> float:
        """Atomically replace the ruleset with `policy`'s; returns the seconds it took."""
        if policy == self.policy:
            return 0.0
        path = self._transactions.get(policy)
        if path is None:
            raise NetworkError(f"policy {policy} was not prepared for switching")
        t0 = time.perf_counter()
        self.node.run(["nft", "-j", "-f", str(path)])
        self.policy = policy
        return time.perf_counter() - t0

    def teardown(self) -> None:
        self.stop_daemon()
        self.cfr("teardown", "--table", TABLE, check=False)
        self.policy = None
