"""Apply, rotate and remove the relay's ruleset: the operations behind `cfr apply`,
`cfr rotate`, `cfr teardown` and the daemon loop.

All kernel changes happen under the state-dir lock and as single nft transactions.
Nothing here ever touches conntrack: established flows keep their mapping across apply,
reload, rotation and restart because the NAT binding lives in the conntrack entry.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from relay import epoch as ep
from relay import nft
from relay.config import Config
from relay.policies import EpochPlan, plan
from relay.ruleset import full_ruleset, rotation, timeout_objects, timeout_prelude
from relay.state import StateDir, remember_applied


@dataclass(frozen=True)
class Applied:
    epoch: int
    seconds: float
    changed: bool


def state_for(cfg: Config) -> StateDir:
    return StateDir(cfg.state_dir, cfg.key_file)


def current_epoch(cfg: Config, sd: StateDir, now: float | None = None) -> int:
    return ep.epoch_number(time.time() if now is None else now, cfg.epoch_length,
                           sd.forced_rotations())


def current_plan(cfg: Config, sd: StateDir, now: float | None = None) -> EpochPlan:
    return plan(cfg, sd.key(), current_epoch(cfg, sd, now))


def _digest(tx: dict) -> str:
    return hashlib.sha256(json.dumps(tx, sort_keys=True).encode()).hexdigest()


def apply(cfg: Config, now: float | None = None) -> Applied:
    """Apply the whole ruleset for the current epoch, atomically and idempotently."""
    sd = state_for(cfg)
    with sd.lock():
        p = current_plan(cfg, sd, now)
        items = nft.list_table(cfg.table) or []
        existing = frozenset(it["set"]["name"] for it in items if "set" in it)
        have_timeouts = frozenset(it["ct timeout"]["name"] for it in items if "ct timeout" in it)
        tx = full_ruleset(cfg, p, existing)
        t0 = time.perf_counter()
        prelude = timeout_prelude(cfg, have_timeouts)
        if prelude:
            nft.run(["-f", "-"], prelude)
        nft.apply(tx)
        dt = time.perf_counter() - t0
        prev = sd.read_json(sd.applied_file, {})
        digest = _digest(tx)
        sd.write_json(sd.applied_file, {
            "config": cfg.source, "table": cfg.table, "policy": cfg.policy,
            "epoch": p.epoch, "epoch_length": cfg.epoch_length, "applied_at": time.time(),
            "ruleset_sha256": digest, "apply_seconds": dt,
        })
        if Path(cfg.source).is_file():
            remember_applied(cfg.source, cfg.state_dir, cfg.table)
    _remove_stale_timeouts(cfg)
    return Applied(p.epoch, dt, prev.get("ruleset_sha256") != digest)


def rotate_to_current(cfg: Config, force: bool = False) -> Applied:
    """Replace the alias chains for the current epoch (after `force`, the next one).

    Only `alias_v4`/`alias_v6` change, in one transaction; new flows get the new mapping,
    flows already in conntrack keep theirs.
    """
    sd = state_for(cfg)
    with sd.lock():
        if force:
            sd.bump_rotations()
        p = current_plan(cfg, sd)
        tx = rotation(cfg, p)
        t0 = time.perf_counter()
        nft.apply(tx)
        dt = time.perf_counter() - t0
        rec = sd.read_json(sd.applied_file, {})
        changed = rec.get("epoch") != p.epoch
        rec.update({"epoch": p.epoch, "rotated_at": time.time(), "rotate_seconds": dt})
        sd.write_json(sd.applied_file, rec)
    return Applied(p.epoch, dt, changed)


def teardown(cfg_table: str) -> bool:
    return nft.delete_table(cfg_table)


def _remove_stale_timeouts(cfg: Config) -> None:
    items = nft.list_table(cfg.table)
    if not items:
        return
    stale = nft.stale_timeouts(items, set(timeout_objects(cfg)))
    nft.delete_objects(cfg.table, "ct timeout", stale)
