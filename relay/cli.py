"""`cfr`: the relay's command line.

  cfr check    CONFIG                 validate only (no root needed, touches nothing)
  cfr apply    CONFIG                 apply the ruleset once, atomically
  cfr run      CONFIG                 apply, then rotate epochs / log mappings / write status
  cfr status   [CONFIG] [--json|--prometheus]
  cfr rotate   [CONFIG]               force an epoch rotation now
  cfr teardown [CONFIG | --table T]   remove the relay's table (and nothing else)
  cfr lookup   [CONFIG] --alias A [--port P] [--at T]   mapping log query (abuse desk)
  cfr render   CONFIG [--epoch N]     print the nft JSON transaction (debugging)

CONFIG may be given positionally or as --config. Without it, status/rotate/lookup/teardown
use the config recorded by the last apply in --state-dir, or else the one last applied in
this network namespace (noted in /run/cfr/netns-<inode>.json). Exit status: 0 ok,
2 invalid config or usage (nothing was changed), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from relay import config as cfgmod
from relay import engine, nft, ruleset
from relay.errors import RelayError, UsageError
from relay.state import StateDir, forget_applied, recall_applied


def _add_common(p: argparse.ArgumentParser, config_required: bool) -> None:
    p.add_argument("config_pos", nargs="?", metavar="CONFIG", help="TOML config file")
    p.add_argument("--config", "-c", dest="config_opt", metavar="CONFIG",
                   help="TOML config file (same as the positional argument)")
    p.add_argument("--state-dir", "-s", help="state directory (overrides relay.state_dir)")
    p.set_defaults(config_required=config_required)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cfr", description="Customer-Facing Relay control plane")
    ap.add_argument("--verbose", "-v", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check", help="validate a config, change nothing")
    _add_common(p, True)
    p = sub.add_parser("apply", help="apply the ruleset once (atomic)")
    _add_common(p, True)
    p = sub.add_parser("run", help="apply and keep running (rotation, mapping log, status)")
    _add_common(p, True)
    p.add_argument("--status-interval", type=float, default=2.0)
    p = sub.add_parser("status", help="show policy, epoch, occupancy, drops")
    _add_common(p, False)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--prometheus", action="store_true")
    p.add_argument("--no-flows", action="store_true", help="skip the conntrack dump")
    p = sub.add_parser("rotate", help="force an epoch rotation now")
    _add_common(p, False)
    p = sub.add_parser("teardown", help="delete the relay's nft table")
    _add_common(p, False)
    p.add_argument("--table", help="table name when no config is given")
    p = sub.add_parser("lookup", help="who held alias A (port P) at time T")
    _add_common(p, False)
    p.add_argument("--alias", required=True)
    p.add_argument("--port", type=int)
    p.add_argument("--at", type=float, help="unix time (default: any time in the log)")
    p.add_argument("--proto", choices=["tcp", "udp", "icmp", "icmpv6"])
    p = sub.add_parser("render", help="print the nft JSON transaction for a config")
    _add_common(p, True)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--key-hex", default="00" * 32, help="epoch key (hex) used for rendering")
    return ap


def _config_path(args: argparse.Namespace) -> str | None:
    if args.config_pos and args.config_opt and args.config_pos != args.config_opt:
        raise UsageError("give the config either positionally or with --config, not both")
    path = args.config_opt or args.config_pos
    if path is None and args.state_dir:
        rec = StateDir(args.state_dir).read_json(Path(args.state_dir) / "applied.json", {})
        path = rec.get("config")
    if path is None and not args.config_required:
        rec = recall_applied()  # the config last applied in this network namespace
        path = rec.get("config")
        if path is not None and not args.state_dir:
            args.state_dir = rec.get("state_dir")
    if path is None and args.config_required:
        raise UsageError(f"cfr {args.cmd}: a config file is required")
    return path


def _load(args: argparse.Namespace) -> cfgmod.Config:
    path = _config_path(args)
    if path is None:
        raise UsageError(f"cfr {args.cmd}: give CONFIG (nothing was applied in this network "
                         "namespace, and no --state-dir)")
    return cfgmod.load(path, args.state_dir)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args)
    v4, v6 = cfg.modes
    print(f"ok: {cfg.source}: policy {cfg.policy} (v4 {v4}, v6 {v6}), table inet {cfg.table}, "
          f"{len(cfg.access_interfaces)} access interface(s), {len(cfg.alias_v4)} IPv4 "
          f"alias(es), {cfg.v6_pool_size if v6 in ('flow', 'epoch') else 0} IPv6 alias(es)")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    cfg = _load(args)
    res = engine.apply(cfg)
    print(f"applied policy {cfg.policy} to table inet {cfg.table}: epoch {res.epoch}, "
          f"{res.seconds * 1000:.1f} ms{'' if res.changed else ' (no change)'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from relay.daemon import Daemon

    path = _config_path(args)
    assert path is not None
    return Daemon(path, args.state_dir, args.status_interval).run()


def cmd_status(args: argparse.Namespace) -> int:
    from relay import status

    cfg = _load(args)
    s = status.collect(cfg, with_flows=not args.no_flows)
    if args.json:
        sys.stdout.write(status.render_json(s))
    elif args.prometheus:
        sys.stdout.write(status.render_prometheus(s))
    else:
        sys.stdout.write(status.render_text(s))
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if not nft.table_exists(cfg.table):
        raise UsageError(f"table inet {cfg.table} does not exist: run 'cfr apply' first")
    res = engine.rotate_to_current(cfg, force=True)
    print(f"rotated to epoch {res.epoch} in {res.seconds * 1000:.1f} ms")
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    if args.table:
        table = args.table
        if not cfgmod.TABLE_RE.match(table):
            raise UsageError(f"invalid table name {table!r}")
    else:
        table = _load(args).table
    print(f"deleted table inet {table}" if engine.teardown(table)
          else f"table inet {table} did not exist")
    forget_applied(table)
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    from relay.mappinglog import MappingLog

    cfg = _load(args)
    sd = engine.state_for(cfg)
    ml = MappingLog(sd.mapping_log, cfg.retention, cfg.subscriber_v4 + cfg.subscriber_v6)
    ml.load()
    try:
        hits = ml.lookup(args.alias, args.port, args.at, args.proto)
    except ValueError:
        raise UsageError(f"--alias {args.alias!r} is not an IP address") from None
    for r in hits:
        print(json.dumps(r, sort_keys=True))
    return 0 if hits else 3


def cmd_render(args: argparse.Namespace) -> int:
    from relay.policies import plan

    cfg = _load(args)
    try:
        key = bytes.fromhex(args.key_hex)
    except ValueError:
        raise UsageError("--key-hex must be hexadecimal") from None
    p = plan(cfg, key, args.epoch)
    out = {"timeouts_nft": ruleset.timeout_prelude(cfg).splitlines(),
           "transaction": ruleset.full_ruleset(cfg, p)}
    print(json.dumps(out, indent=1))
    return 0


COMMANDS = {"check": cmd_check, "apply": cmd_apply, "run": cmd_run, "status": cmd_status,
            "rotate": cmd_rotate, "teardown": cmd_teardown, "lookup": cmd_lookup,
            "render": cmd_render}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s cfr[%(process)d] %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.Formatter.converter = time.gmtime
    try:
        return COMMANDS[args.cmd](args)
    except RelayError as e:
        print(f"cfr: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
