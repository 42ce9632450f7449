"""`cfrbench`: the command line of the application (testbed, benchmarks, labs, CI gate).

It lives in the application package, above every library layer (see `.importlinter`):
it may import the benchmarks and `topologies`, none of them may import it.

Exit status: 0 success, 1 a run failed, 2 a usage error (bad parameter, unknown name,
malformed file, bad topology file, not root). Usage errors are detected before anything is
created.

`--topology` is resolved here (the application layer) with `topologies.load_topology` and
handed to `Network(..., topology=cls)`; the network never imports `topologies/`. What a node
is for comes from the topology's roles (`net.roles`, or a detached network's run record),
never from its name.

`--policy` (the relay policy the edge runs) is offered by `up` only: `run` measures each
path under the relay policy the path table gives it (`benchmarks/paths.py`), and `cli`
brings up the bare network, so there it would be parsed and have no effect. `run --family
4|6|both` chooses the address families measured (default: each definition's, IPv4 in the
quick profile, both in full).

About 550 lines on purpose: each subcommand is a thin handler (parse, call one library
function, map its errors to an exit status) and `build_parser` wires them all; splitting the
handlers from the parser would only spread the argparse wiring over more files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from benchmarks.paths import FAMILY_OPTIONS
from testbed import lifecycle, paths
from testbed.errors import CfrbenchError, EnvironmentProblem, RunStateError, UsageError
from testbed.scenario import (
    ECH_MODES,
    MECHANISMS,
    POLICIES,
    Scenario,
    load_scenario,
    with_detour_delay,
    with_link_override,
)
from testbed.waiting import WaitTimeout, wait_until
from topologies import absolute_spec, load_topology


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one clear line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"cfrbench: {message} (see '{self.prog} --help')\n")


def _console():
    from cfrbench.console import make_console

    return make_console()


# -- scenario options shared by up / cli / run -------------------------------------------------
def add_scenario_options(p: argparse.ArgumentParser, relay_policy: bool = False) -> None:
    """The scenario options; `relay_policy` adds --policy (only where it takes effect)."""
    g = p.add_argument_group("scenario (defaults < --scenario file < these options)")
    g.add_argument("--scenario", metavar="FILE", help="TOML scenario file")
    g.add_argument("--topology", metavar="NAME|FILE.py[:Class]",
                   help="built-in topology (isp_cdn, two_pops) or path/to/file.py[:Class], "
                        "like mn --custom (default isp_cdn)")
    g.add_argument("--subscribers", type=int, help="subscriber hosts (namespaces), 1-250")
    g.add_argument("--population", type=int,
                   help="subscribers carried by the population host, 0-30000")
    g.add_argument("--access-delay", type=float, metavar="MS", help="one-way access delay")
    g.add_argument("--wan-delay", type=float, metavar="MS", help="one-way edge-to-CDN delay")
    g.add_argument("--detour-delay", type=float, metavar="MS",
                   help="extra one-way delay of a path through a relay provider "
                        "(split over the detour link's two crossings)")
    g.add_argument("--link-emulation", choices=MECHANISMS, help="delay mechanism")
    g.add_argument("--ech-mode", choices=ECH_MODES, help="front door mode")
    if relay_policy:
        g.add_argument("--policy", choices=POLICIES, help="relay policy on the relay node")


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The scenario the options describe, validated, its topology loaded once (a bad
    topology file exits 2 here, before the root check and before any run record). A
    topology file is made absolute, so a detached controller finds it."""
    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    if args.topology is not None:
        scenario = replace(scenario, topology=absolute_spec(args.topology))
    if args.subscribers is not None:
        scenario = replace(scenario, subscribers=args.subscribers)
    if args.population is not None:
        scenario = replace(scenario, population=args.population)
    if args.access_delay is not None:
        scenario = with_link_override(scenario, "access", delay_ms=args.access_delay)
    if args.wan_delay is not None:
        scenario = with_link_override(scenario, "wan", delay_ms=args.wan_delay)
    if args.detour_delay is not None:
        scenario = with_detour_delay(scenario, args.detour_delay, "detour-delay")
    if args.link_emulation:
        scenario = replace(scenario, mechanism=args.link_emulation)
    if args.ech_mode:
        scenario = replace(scenario, ech_mode=args.ech_mode)
    if getattr(args, "policy", None):
        scenario = replace(scenario, policy=args.policy)
    scenario = scenario.validate()
    load_topology(scenario.topology)
    return scenario


_SCENARIO_OPTIONS = ("topology", "subscribers", "population", "access_delay", "wan_delay",
                     "detour_delay", "link_emulation", "ech_mode", "policy")


def scenario_argv(args: argparse.Namespace) -> list[str]:
    """The scenario options as arguments, to re-invoke ourselves (detached controller)."""
    argv: list[str] = []
    if args.scenario:
        argv += ["--scenario", str(Path(args.scenario).resolve())]
    for name in _SCENARIO_OPTIONS:
        value = getattr(args, name, None)
        if name == "topology" and value is not None:
            value = absolute_spec(value)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def require_root() -> None:
    if sys.platform != "linux":
        raise EnvironmentProblem(f"cfrbench needs Linux network namespaces; this is "
                                 f"{sys.platform}")
    if os.geteuid() != 0:
        raise EnvironmentProblem("this command needs root (network namespaces); "
                                 "run it with sudo")


# -- commands ------------------------------------------------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    from testbed.probe import probe_json, run_probe

    checks = run_probe()
    data = probe_json(checks)
    if args.json:
        print(json.dumps(data, indent=1))
        return 0 if data["usable"] else 1
    from rich.table import Table

    table = Table(title=f"cfrbench probe (kernel {data['kernel']})")
    for col in ("capability", "verdict", "detail"):
        table.add_column(col)
    style = {"ok": "green", "missing": "red", "fallback": "yellow"}
    for c in checks:
        verdict = c.verdict if c.required or c.verdict == "ok" else f"{c.verdict} (optional)"
        table.add_row(c.name, f"[{style[c.verdict]}]{verdict}[/]", c.detail)
    console = _console()
    console.print(table)
    console.print(f"link emulation: [bold]{data['link_emulation']}[/]; "
                  f"testbed usable: [bold]{'yes' if data['usable'] else 'NO'}[/]")
    return 0 if data["usable"] else 1


def _print_network(net, console) -> None:
    from rich.table import Table

    table = Table(title=f"network {net.registry.prefix} ({net.mechanism} link emulation, "
                        f"up in {net.timings.get('up_s', 0):.1f} s)")
    for col in ("node", "role", "namespace", "IPv4", "IPv6"):
        table.add_column(col)
    for name, info in net.info.items():
        v4, v6 = net.primary_addresses(name)
        extra = ""
        if info.role == "population":
            n = sum(1 for a in next(iter(info.addresses.values())) if ":" not in a)
            extra = f" (+{n - 1} more)"
        table.add_row(name, info.role, info.netns, f"{v4}{extra}", str(v6))
    console.print(table)


def _start_services(net, scenario: Scenario, console, interactive: bool):
    """DNS, the ECH front door (and origin), the proxies and the relay with the scenario's
    policy (`cfr run`: epochs rotate, mapping log written), as a user of `up` expects."""
    from benchmarks.environment import BenchEnv
    from benchmarks.paths import NAMES

    env = BenchEnv(net, net.registry.make_tmpdir("services"), ech_mode=scenario.ech_mode)
    env.start(list(NAMES))
    env.relay.start_daemon(scenario.policy)
    services = {"dns": env.dns.address, "ca": str(env.ca_file),
                "front_door": [env.front_door(4), env.front_door(6)],
                "ech_mode": scenario.ech_mode, "relay_policy": scenario.policy,
                "relay_config": str(env.relay.config_path(scenario.policy)),
                "proxies": dict(env.proxy_entries)}
    net.registry.set_info(services=services)
    if interactive:
        console.print(f"services: DNS {services['dns']}, ECH front door "
                      f"{services['front_door'][0]} ({scenario.ech_mode} mode), relay policy "
                      f"[bold]{scenario.policy}[/] on {net.roles.relay}, proxies "
                      f"{', '.join(services['proxies'].values())}")
        console.print(f"  e.g. cfrbench exec {net.roles.client} -- {paths.BIN_DIR / 'echd'} load "
                      f"--dns {services['dns']} --ca {services['ca']} --site site-0001.example")
    return env


def _serve_network(scenario: Scenario, prefix: str | None, ready_file: str | None,
                   interactive: bool, bare: bool = False) -> int:
    """Bring the network up and keep it until SIGTERM/SIGINT (foreground or detached)."""
    from testbed.network import Network

    console = _console()

    def _on_signal(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    # Explicitly, not Python's default: a process started from a background job of a
    # non-interactive shell (nohup, `cmd &` in a script, some CI runners) inherits SIGINT as
    # ignored, and Python then never raises KeyboardInterrupt, so Ctrl-C / SIGINT would not
    # take the network down (seen: the user-topology test hung 60 s in such a job).
    signal.signal(signal.SIGINT, _on_signal)
    topology = load_topology(scenario.topology)
    registry = lifecycle.RunRegistry("up", prefix=prefix)
    net = Network(scenario, registry, topology=topology)
    env = None
    try:
        net.start()
        if interactive:
            _print_network(net, console)
        if not bare:
            env = _start_services(net, scenario, console, interactive)
        registry.set_info(ready=True)
        if ready_file:
            Path(ready_file).write_text(registry.prefix)
        if interactive:
            console.print(f"network [bold]{registry.prefix}[/] is up; "
                          f"'cfrbench exec NODE -- CMD' runs commands in it; Ctrl-C stops it.")
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        if env is not None:
            env.stop()
        problems = net.stop() + registry.close()
        if interactive:
            console.print(f"network {registry.prefix} is down "
                          f"({net.timings.get('down_s', 0):.1f} s)")
        for p in problems:
            print(f"cfrbench: teardown: {p}", file=sys.stderr)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    require_root()
    if not args.detach:
        return _serve_network(scenario, None, None, interactive=True, bare=args.bare)
    prefix = lifecycle.new_prefix()
    paths.STATE_DIR.mkdir(parents=True, exist_ok=True)
    log = paths.STATE_DIR / f"{prefix}.log"
    ready = paths.STATE_DIR / f"{prefix}.ready"
    argv = [sys.executable, "-m", "cfrbench.cli", "_serve", "--prefix", prefix,
            "--ready-file", str(ready), *scenario_argv(args), *(["--bare"] if args.bare else [])]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(paths.REPO_ROOT))
    def network_up() -> bool:
        if proc.poll() is not None:
            sys.stderr.write(log.read_text(errors="replace")[-2000:])
            raise CfrbenchError(f"the network controller exited with {proc.returncode} "
                                f"before the network was up (log: {log})")
        return ready.exists()

    wait_until(network_up, 120, 0.05, f"the detached network to come up (log: {log})")
    ready.unlink()
    state = lifecycle.load_run(prefix)
    console = _console()
    console.print(f"network [bold]{prefix}[/] is up in the background "
                  f"(controller pid {state.controller_pid}); nodes: "
                  f"{', '.join(state.info['network']['nodes'])}")
    services = state.info.get("services")
    if services:
        console.print(f"services: DNS {services['dns']}, front door "
                      f"{services['front_door'][0]} ({services['ech_mode']}), relay policy "
                      f"{services['relay_policy']}, CA {services['ca']}")
    network = state.info["network"]
    roles = network["roles"]
    fd4 = network["nodes"][roles["front_door"]]["addresses"]["lo"][0].split("/")[0]
    console.print(f"  cfrbench exec {roles['client']} -- ping -c3 {fd4}    cfrbench cli    "
                  f"cfrbench down {prefix}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    require_root()
    return _serve_network(scenario, args.prefix, args.ready_file, interactive=False,
                          bare=args.bare)


def _running_network(prefix: str | None) -> lifecycle.RunState:
    runs = [r for r in lifecycle.list_runs()
            if r.kind == "up" and r.controller_alive() and r.info.get("ready")]
    if prefix:
        for r in runs:
            if r.prefix == prefix:
                return r
        raise RunStateError(f"no running network {prefix!r}; running: "
                            f"{', '.join(r.prefix for r in runs) or 'none'}")
    if not runs:
        raise RunStateError("no network is running; start one with 'cfrbench up --detach'")
    if len(runs) > 1:
        raise UsageError("several networks are running (" + ", ".join(r.prefix for r in runs)
                         + "); name one with --run PREFIX")
    return runs[0]


def cmd_down(args: argparse.Namespace) -> int:
    require_root()
    run = _running_network(args.prefix)
    os.kill(run.controller_pid, signal.SIGTERM)
    try:
        wait_until(lambda: not lifecycle.state_path(run.prefix).exists(), 30, 0.05,
                   f"the controller of {run.prefix} to take its network down")
    except WaitTimeout:  # the controller is stuck: remove what it recorded ourselves
        for prefix, outcome in lifecycle.clean([run.prefix], include_live=True):
            print(f"{prefix}: {outcome}")
    print(f"network {run.prefix} is down")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    require_root()
    report = lifecycle.clean(args.prefixes or None, include_live=args.all)
    if not report:
        print("nothing to clean: no runs are recorded")
    for prefix, outcome in report:
        print(f"{prefix}: {outcome}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:  # noqa: ARG001
    runs = lifecycle.list_runs()
    if not runs:
        print("no runs recorded")
    for r in runs:
        state = "running" if r.controller_alive() else "controller gone (cfrbench clean)"
        print(f"{r.prefix}  {r.kind:5}  {time.strftime('%H:%M:%S', time.localtime(r.created))}"
              f"  {len(r.netns):3} namespaces  {state}")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    require_root()
    run = _running_network(args.run)
    nodes = run.info.get("network", {}).get("nodes", {})
    if args.node not in nodes:
        raise UsageError(f"unknown node {args.node!r}; nodes: {', '.join(nodes)}")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("exec needs a command: cfrbench exec NODE -- CMD [ARGS...]")
    os.execvp("ip", ["ip", "netns", "exec", nodes[args.node]["netns"], *command])
    return 127  # not reached


def cmd_cli(args: argparse.Namespace) -> int:
    require_root()
    from mininet.cli import CLI
    from mininet.log import setLogLevel

    setLogLevel("info")
    runs = [r for r in lifecycle.list_runs()
            if r.kind == "up" and r.controller_alive() and r.info.get("ready")]
    if runs or args.run:
        from testbed.attach import attached_mininet, detach_all

        run = _running_network(args.run)
        nodes = run.info["network"]["nodes"]
        spec = {}
        for name, info in nodes.items():
            addrs = [a for k, v in info["addresses"].items() for a in v if ":" not in a]
            lo = [a for a in info["addresses"].get("lo", []) if ":" not in a]
            spec[name] = (info["netns"], (lo or addrs or [None])[0].split("/")[0]
                          if (lo or addrs) else None)
        mn = attached_mininet(spec)
        print(f"attached to network {run.prefix}; 'exit' leaves it running")
        try:
            CLI(mn)
        finally:
            detach_all(mn)
        return 0
    # No network running: bring one up for the session, like `mn`.
    from testbed.network import Network

    scenario = scenario_from_args(args)
    topology = load_topology(scenario.topology)
    with lifecycle.run_registry("up") as registry, \
            Network(scenario, registry, topology=topology) as net:
        _print_network(net, _console())
        CLI(net.mn)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    from benchmarks.linkability_run import LinkabilityParams
    from cfrbench.mainjob import run_main_job

    link = replace(LinkabilityParams.for_profile(args.profile), model=args.model)
    if args.households is not None:
        link = replace(link, households=args.households)
    if args.workload_duration is not None:
        link = replace(link, duration_s=args.workload_duration)
    if args.keep_alive is not None:
        link = replace(link, keep_alive_s=args.keep_alive)
    if args.coalesce:
        link = replace(link, coalesce=True)
    family = FAMILY_OPTIONS[args.family] if args.family is not None else None
    require_root()
    return run_main_job(scenario, profile=args.profile, benchmarks=args.benchmarks,
                        out_dir=args.out, linkability=link, family=family)


def cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.report import render_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "results.json").is_file():
        raise UsageError(f"{run_dir} is not a run directory (no results.json)")
    outputs = render_report(run_dir)
    print(f"report re-rendered from {run_dir / 'raw'}: {outputs['markdown']}, "
          f"{outputs['html']}, {len(outputs['plots'])} plots")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Hand every argument to the gate unchanged: its own parser (ci/gate.py) is the one
    definition of its options (--tolerances, --gate-on, --json, --markdown), so none can
    be dropped here again."""
    from benchmarks.gate import main_compare

    return main_compare(args.gate_args)


#: The sub-commands `cfrbench --help` lists (`_serve` is internal: the detached controller).
VISIBLE_COMMANDS = ("probe", "up", "down", "clean", "list", "exec", "cli", "run", "report",
                    "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cfrbench", description=__doc__.splitlines()[0])
    # `_serve` (the detached controller) is added without help, so no listing shows it;
    # the metavar names the visible commands (argparse would list every choice).
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{" + ",".join(VISIBLE_COMMANDS) + "}")

    p = sub.add_parser("probe", help="what this machine can do (table, or --json)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("up", help="bring a topology up (foreground, or --detach)")
    add_scenario_options(p, relay_policy=True)
    p.add_argument("--detach", action="store_true", help="keep it running until 'down'")
    p.add_argument("--bare", action="store_true",
                   help="the network only: no DNS, front door, proxies or relay")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("_serve")
    add_scenario_options(p, relay_policy=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--ready-file")
    p.add_argument("--bare", action="store_true")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("down", help="stop a network started with 'up --detach'")
    p.add_argument("prefix", nargs="?")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("clean", help="remove what crashed or killed runs left behind")
    p.add_argument("prefixes", nargs="*", metavar="PREFIX")
    p.add_argument("--all", action="store_true", help="also stop runs that are still running")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("list", help="recorded runs")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("exec", help="run a command in a node: exec NODE -- CMD...")
    p.add_argument("--run", metavar="PREFIX")
    p.add_argument("node")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("cli", help="Mininet CLI on the running network (or a new one)")
    p.add_argument("--run", metavar="PREFIX")
    add_scenario_options(p)
    p.set_defaults(func=cmd_cli)

    p = sub.add_parser("run", help="the main job: benchmarks on a topology (default isp_cdn)")
    add_scenario_options(p)
    p.add_argument("benchmarks", nargs="*", metavar="BENCHMARK")
    p.add_argument("--profile", default="quick")
    p.add_argument("--family", choices=tuple(FAMILY_OPTIONS),
                   help="address families the benchmarks measure: every path's IPv4 or IPv6 "
                        "twin, or both (default: the definitions', IPv4 in quick and tiny, "
                        "both in full)")
    p.add_argument("--out", metavar="DIR", help="results directory (default results/<run-id>)")
    g = p.add_argument_group("linkability (benchmark 'linkability')")
    g.add_argument("--households", type=int,
                   help="households replayed (2..population; default: the profile's, "
                        "200 quick, 500 full)")
    g.add_argument("--workload-duration", type=float, metavar="S",
                   help="seconds of browsing replayed per policy (5..3600; default: the "
                        "profile's, 60 quick, 600 full)")
    g.add_argument("--model", choices=("quick", "full", "none"), default="quick",
                   help="ISP-scale model: quick (10^5 subscribers), full (10^6) or none")
    g.add_argument("--keep-alive", type=float, metavar="S",
                   help="devices keep HTTP/2 connections open S seconds and reuse them "
                        "(0..29; default 0: one connection per visit)")
    g.add_argument("--coalesce", action="store_true",
                   help="with --keep-alive: visits to other sites coalesce onto an open "
                        "connection whose certificate covers them, as browsers do (the "
                        "front door then shares certificates, 10 names each)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="re-render a report from a run's raw records")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", add_help=False,
                       help="regression gate: compare BASELINE CURRENT (see 'compare --help')")
    p.add_argument("gate_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["compare"]:
        # argparse would claim the gate's options (and --help) before REMAINDER sees them
        args = argparse.Namespace(func=cmd_compare, gate_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    # Ctrl-C / SIGINT interrupts every command (teardown runs in `finally`), even when this
    # process inherited SIGINT as ignored from a background job of a script or CI runner,
    # where Python would otherwise never raise KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.func(args) or 0)
    except CfrbenchError as exc:
        print(f"cfrbench: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cfrbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
