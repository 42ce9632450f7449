"""The mapping log: accountability without profiling.

For abuse response an operator must answer "who used alias A, port P, at time T?". The
log keeps exactly that: (alias, alias port, protocol, time window) -> (subscriber address,
subscriber port). It deliberately does *not* keep destinations (that would be a browsing
history), stays in the relay's local state directory, and records are deleted
`mapping_log.retention` after the mapping ended.

File format (JSON lines, append-only between purges):
  {"ev": "open",  "id": 7, "start": 1.0, "proto": "tcp", "family": 4, "alias": "...",
   "alias_port": 40001, "subscriber": "...", "subscriber_port": 51000, "start_known": true}
  {"ev": "close", "id": 7, "end": 9.5, "end_known": true}
A purge rewrites the file atomically with only the records still within retention.
`start_known`/`end_known` are false when the relay was not watching at that moment (it
then records the time it first/last saw the mapping, a bound, not the exact instant).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from relay.conntrack import DESTROY, NEW, Flow

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class MappingLog:
    def __init__(self, path: Path, retention: float, subscriber_nets: Iterable[Net]) -> None:
        self.path = Path(path)
        self.retention = retention
        self.nets = tuple(subscriber_nets)
        self.open: dict[int, dict[str, Any]] = {}
        self.closed: list[dict[str, Any]] = []
        self._fh: Any = None

    # -- persistence -----------------------------------------------------------------
    def load(self) -> None:
        """Rebuild state from the file (after a restart)."""
        self.open.clear()
        self.closed.clear()
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if rec.get("ev") == "open":
                r = {k: v for k, v in rec.items() if k != "ev"}
                r.setdefault("end", None)
                self.open[int(r["id"])] = r
            elif rec.get("ev") == "close":
                r2 = self.open.pop(int(rec["id"]), None)
                if r2 is not None:
                    r2["end"] = rec["end"]
                    r2["end_known"] = rec.get("end_known", True)
                    self.closed.append(r2)

    def _write(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            self._fh = os.fdopen(fd, "a")
        self._fh.write("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines))
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -- events ----------------------------------------------------------------------
    def relevant(self, f: Flow) -> bool:
        """A translated flow from a subscriber: there is a mapping to remember."""
        if not f.aliased:
            return False
        addr = ipaddress.ip_address(f.src)
        return any(addr in n for n in self.nets if n.version == addr.version)

    def _open_record(self, f: Flow, now: float, known: bool) -> dict[str, Any]:
        return {"id": f.ct_id, "start": round(now, 3), "start_known": known, "proto": f.proto,
                "family": f.family, "alias": f.reply_dst, "alias_port": f.reply_dport,
                "subscriber": f.src, "subscriber_port": f.sport, "end": None}

    def on_events(self, events: Iterable[tuple[str, Flow]], now: float) -> int:
        out: list[dict[str, Any]] = []
        for kind, f in events:
            if kind == NEW:
                if not self.relevant(f) or f.ct_id in self.open:
                    continue
                rec = self._open_record(f, now, True)
                self.open[f.ct_id] = rec
                out.append({"ev": "open", **{k: v for k, v in rec.items() if k != "end"}})
            elif kind == DESTROY:
                rec = self.open.pop(f.ct_id, None)
                if rec is None:
                    continue
                rec["end"] = round(now, 3)
                rec["end_known"] = True
                self.closed.append(rec)
                out.append({"ev": "close", "id": f.ct_id, "end": rec["end"], "end_known": True})
        self._write(out)
        return len(out)

    def sync(self, flows: Iterable[Flow], now: float) -> None:
        """Reconcile with a conntrack dump: add mappings we never saw open, close the ones
        that vanished while we were not listening (restart, event overflow)."""
        live = {}
        for f in flows:
            if self.relevant(f):
                live[f.ct_id] = f
        out: list[dict[str, Any]] = []
        for ct_id in list(self.open):
            rec = self.open[ct_id]
            f = live.get(ct_id)
            if f is None or f.reply_dst != rec["alias"] or f.reply_dport != rec["alias_port"]:
                self.open.pop(ct_id)
                rec["end"] = round(now, 3)
                rec["end_known"] = False
                self.closed.append(rec)
                out.append({"ev": "close", "id": ct_id, "end": rec["end"], "end_known": False})
        for ct_id, f in live.items():
            if ct_id not in self.open:
                rec = self._open_record(f, now, False)
                self.open[ct_id] = rec
                out.append({"ev": "open", **{k: v for k, v in rec.items() if k != "end"}})
        self._write(out)

    # -- retention ---------------------------------------------------------------------
    def purge(self, now: float) -> int:
        """Forget mappings that ended more than `retention` ago; rewrite the file."""
        cutoff = now - self.retention
        keep = [r for r in self.closed if r["end"] >= cutoff]
        removed = len(self.closed) - len(keep)
        if removed == 0 and self.path.exists():
            return 0
        self.closed = keep
        self.close()
        lines = []
        for r in sorted(list(self.open.values()) + keep, key=lambda r: (r["start"], r["id"])):
            lines.append({"ev": "open", **{k: v for k, v in r.items()
                                            if k not in ("end", "end_known")}})
            if r["end"] is not None:
                lines.append({"ev": "close", "id": r["id"], "end": r["end"],
                              "end_known": r.get("end_known", True)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines))
        os.replace(tmp, self.path)
        return removed

    # -- queries -----------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        return sorted(list(self.open.values()) + self.closed, key=lambda r: (r["start"], r["id"]))

    def __len__(self) -> int:
        return len(self.open) + len(self.closed)

    def lookup(self, alias: str, port: int | None = None, at: float | None = None,
               proto: str | None = None) -> list[dict[str, Any]]:
        """Mappings of `alias` (and `port`) that were live at time `at`."""
        a = str(ipaddress.ip_address(alias))
        out = []
        for r in self.records():
            if r["alias"] != a or (port is not None and r["alias_port"] != port):
                continue
            if proto is not None and r["proto"] != proto:
                continue
            if at is not None:
                # An unknown start is an upper bound: the mapping may be older.
                if r.get("start_known", True) and at < r["start"]:
                    continue
                if r["end"] is not None and at > r["end"]:
                    continue
            out.append(r)
        return out
