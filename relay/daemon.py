"""`cfr run`: apply, then keep the relay going.

One thread, one select loop: conntrack events feed the mapping log; epoch boundaries
trigger a rotation (alias chains only); retention purges; a status file is rewritten
periodically. SIGHUP reloads the config (validated first: an invalid file keeps the running
ruleset and is reported); SIGTERM/SIGINT exit and leave every kernel object in place, so
flows keep going and a new `cfr run` re-attaches without disturbing them.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from relay import config as cfgmod
from relay import conntrack, engine
from relay import epoch as ep
from relay.config import Config
from relay.errors import RelayError
from relay.mappinglog import MappingLog

log = logging.getLogger("cfr")


class Daemon:
    def __init__(self, config_path: str | Path, state_dir: str | Path | None = None,
                 status_interval: float = 2.0) -> None:
        self.config_path = Path(config_path)
        self.state_dir_override = state_dir
        self.status_interval = status_interval
        self.cfg: Config = cfgmod.load(self.config_path, state_dir)
        self.sd = engine.state_for(self.cfg)
        self._reload = False
        self._stop = False
        self.reloads = 0
        self.rotations = 0
        self.last_error: str | None = None
        self.started = time.time()
        self.events: conntrack.EventStream | None = None
        self.mlog: MappingLog | None = None
        self._lost_seen = 0

    # -- signals ---------------------------------------------------------------------
    def _on_hup(self, _s: int, _f: FrameType | None) -> None:
        self._reload = True

    def _on_term(self, _s: int, _f: FrameType | None) -> None:
        self._stop = True

    def _install_signals(self) -> None:
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.sd.ensure()
        self.sd.pid_file.write_text(f"{os.getpid()}\n")
        res = engine.apply(self.cfg)
        log.info("applied policy %s to table inet %s (epoch %d) in %.1f ms", self.cfg.policy,
                 self.cfg.table, res.epoch, res.seconds * 1000)
        self._open_mapping_log()

    def _open_mapping_log(self) -> None:
        if self.mlog is not None:
            self.mlog.close()
            self.mlog = None
        if self.events is not None and not self.cfg.mapping_log:
            self.events.close()
            self.events = None
        if not self.cfg.mapping_log:
            return
        if self.events is None:
            self.events = conntrack.EventStream()  # subscribe before the dump: no gap
        self.mlog = MappingLog(self.sd.mapping_log, self.cfg.retention,
                               self.cfg.subscriber_v4 + self.cfg.subscriber_v6)
        self.mlog.load()
        self.mlog.sync(conntrack.dump(), time.time())
        self.mlog.purge(time.time())

    def run(self) -> int:
        self._install_signals()
        self.start()
        next_status = 0.0
        next_purge = time.time() + self._purge_interval()
        while not self._stop:
            now = time.time()
            wake = min(next_status, next_purge,
                       now + ep.seconds_to_next(now, self.cfg.epoch_length) + 0.001, now + 1.0)
            rlist = [self.events] if self.events is not None else []
            try:
                ready, _, _ = select.select(rlist, [], [], max(0.0, wake - now))
            except InterruptedError:
                ready = []
            # Rotation first: a burst of conntrack events at the boundary would otherwise
            # delay the new epoch's rules by its processing time (seen: 24-275 ms under
            # load in the model-vs-relay validation, benchmarks/linkability_points.py).
            self._maybe_rotate()
            if ready and self.events is not None and self.mlog is not None:
                self.mlog.on_events(self.events.read(), time.time())
                if self.events.lost != self._lost_seen:
                    self._lost_seen = self.events.lost
                    log.warning("conntrack events lost (socket overflow): resynchronising")
                    self.mlog.sync(conntrack.dump(), time.time())
            if self._reload:
                self._reload = False
                self._do_reload()
                self._maybe_rotate()
            now = time.time()
            if now >= next_purge and self.mlog is not None:
                n = self.mlog.purge(now)
                if n:
                    log.info("purged %d mapping records older than retention", n)
                next_purge = now + self._purge_interval()
            if now >= next_status:
                self.write_status()
                next_status = now + self.status_interval
        self.shutdown()
        return 0

    def _purge_interval(self) -> float:
        return max(0.2, min(self.cfg.retention / 4, 60.0))

    def _maybe_rotate(self) -> None:
        want = engine.current_epoch(self.cfg, self.sd)
        have = self.sd.read_json(self.sd.applied_file, {}).get("epoch")
        if want == have:
            return
        try:
            res = engine.rotate_to_current(self.cfg)
            self.rotations += 1
            log.info("epoch %s -> %d: alias chains replaced in %.1f ms", have, res.epoch,
                     res.seconds * 1000)
        except RelayError as e:
            self.last_error = str(e)
            log.error("rotation failed (previous mapping stays in force): %s", e)

    def _do_reload(self) -> None:
        try:
            new = cfgmod.load(self.config_path, self.state_dir_override)
        except RelayError as e:
            self.last_error = str(e)
            log.error("reload refused, running ruleset unchanged: %s", e)
            return
        if new.table != self.cfg.table:
            self.last_error = "relay.table cannot change on reload"
            log.error("reload refused: relay.table cannot change on reload (teardown first)")
            return
        try:
            res = engine.apply(new)
        except RelayError as e:
            self.last_error = str(e)
            log.error("reload failed, running ruleset unchanged: %s", e)
            return
        self.cfg = new
        self.sd = engine.state_for(new)
        self.reloads += 1
        log.info("reloaded %s: policy %s (epoch %d) in %.1f ms", self.config_path, new.policy,
                 res.epoch, res.seconds * 1000)
        self._open_mapping_log()

    def write_status(self) -> None:
        data: dict[str, Any] = {
            "pid": os.getpid(), "started": self.started, "updated": time.time(),
            "config": str(self.config_path), "policy": self.cfg.policy,
            "table": self.cfg.table, "reloads": self.reloads, "rotations": self.rotations,
            "events_lost": self.events.lost if self.events else 0,
            "mapping_records": len(self.mlog) if self.mlog else 0,
            "last_error": self.last_error,
        }
        self.sd.write_json(self.sd.status_file, data)

    def shutdown(self) -> None:
        """Exit without touching the kernel: the ruleset and all flows stay."""
        if self.mlog is not None:
            self.mlog.close()
        if self.events is not None:
            self.events.close()
        self.write_status()
        try:
            if self.sd.pid_file.read_text().strip() == str(os.getpid()):
                self.sd.pid_file.unlink()
        except OSError:
            pass
        log.info("exiting; kernel state left in place")
