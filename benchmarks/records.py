"""The raw record format: `raw/measurements.jsonl`, one JSON object per sample (RECORDS.md).

Why raw records: every figure in a report must be re-computable offline from what the run
measured, with a different analysis if need be. So the runner writes one line per sample as it
goes (flushed, so a crash keeps what was measured) and all statistics start from these lines.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from benchmarks.paths import PATHS
from benchmarks.registry import METRICS, UNITS
from benchmarks.schedule import ScheduleItem
from testbed.errors import UsageError

RAW_DIR = "raw"
MEASUREMENTS_FILE = "measurements.jsonl"

#: field -> accepted Python types (bool is checked before int: JSON true is not a number here)
FIELDS: dict[str, tuple[type, ...]] = {
    "benchmark": (str,),
    "measurement": (str,),
    "path": (str,),
    "metric": (str,),
    "unit": (str,),
    "value": (int, float, type(None)),
    "rep": (int,),
    "block": (int,),
    "order": (int,),
    "warmup": (bool,),
    "ts": (int, float),
    "sweep": (dict,),
    "extra": (dict,),
}


class RecordError(UsageError):
    """A raw record (or the raw file) is malformed; names the line and the field."""


def measurements_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RAW_DIR / MEASUREMENTS_FILE


def make_record(
    benchmark: str,
    measurement: str,
    metric: str,
    value: float | None,
    item: ScheduleItem,
    sweep: Mapping[str, float] | None = None,
    *,
    unit: str | None = None,
    extra: Mapping[str, Any] | None = None,
    ts: float | None = None,
) -> dict[str, Any]:
    """Build one record for a scheduled sample. `value=None` records a failed sample (put the
    reason in extra["error"]); the unit defaults to the registered unit of the metric."""
    if unit is None:
        if metric not in METRICS:
            raise RecordError(f"metric {metric!r} is not registered: pass unit=")
        unit = METRICS[metric].unit
    rec = {
        "benchmark": benchmark,
        "measurement": measurement,
        "path": item.path,
        "metric": metric,
        "unit": unit,
        "value": None if value is None else float(value),
        "rep": item.rep,
        "block": item.block,
        "order": item.order,
        "warmup": item.warmup,
        "ts": time.time() if ts is None else float(ts),
        "sweep": dict(sweep or {}),
        "extra": dict(extra or {}),
    }
    return validate_record(rec)


def validate_record(rec: Any, where: str = "record") -> dict[str, Any]:
    """Check one record's fields, types and vocabulary; returns it unchanged."""
    if not isinstance(rec, dict):
        raise RecordError(f"{where}: expected a JSON object")
    for key in rec:
        if key not in FIELDS:
            raise RecordError(f"{where}: unknown field {key!r}; allowed: {', '.join(FIELDS)}")
    for key, types in FIELDS.items():
        if key not in rec:
            raise RecordError(f"{where}: missing field {key!r}")
        v = rec[key]
        bad_bool = isinstance(v, bool) and bool not in types
        if bad_bool or not isinstance(v, types):
            raise RecordError(f"{where}: field {key!r} has type {type(v).__name__}")
    if rec["path"] not in PATHS:
        raise RecordError(f"{where}: unknown path {rec['path']!r}; allowed: {', '.join(PATHS)}")
    if rec["unit"] not in UNITS:
        raise RecordError(f"{where}: unknown unit {rec['unit']!r}; allowed: {', '.join(UNITS)}")
    spec = METRICS.get(rec["metric"])
    if spec is not None and spec.unit != rec["unit"]:
        raise RecordError(
            f"{where}: metric {rec['metric']!r} is in {spec.unit}, not {rec['unit']!r}"
        )
    v = rec["value"]
    if v is not None and not math.isfinite(v):
        raise RecordError(f"{where}: value is not finite (use null and extra.error)")
    for key in ("rep", "block", "order"):
        if rec[key] < 0:
            raise RecordError(f"{where}: field {key!r} is negative")
    for k, sv in rec["sweep"].items():
        if isinstance(sv, bool) or not isinstance(sv, (int, float)):
            raise RecordError(f"{where}: sweep.{k} is not a number")
    return rec


def dumps(rec: Mapping[str, Any]) -> str:
    """One record as one compact JSON line (no NaN: JSON has none)."""
    return json.dumps(rec, separators=(",", ":"), allow_nan=False)


class RecordWriter:
    """Appends validated records to `RUN_DIR/raw/measurements.jsonl`, one flushed line each."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = measurements_path(run_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = self.path.open("a", encoding="utf-8")
        self.count = 0

    def write(self, rec: Mapping[str, Any]) -> None:
        if self._f is None:
            raise ValueError("RecordWriter is closed")
        self._f.write(dumps(validate_record(dict(rec))) + "\n")
        self._f.flush()
        self.count += 1

    def write_all(self, recs: Iterable[Mapping[str, Any]]) -> None:
        for rec in recs:
            self.write(rec)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve(source: str | Path) -> Path:
    p = Path(source)
    if p.is_dir():
        for cand in (p / RAW_DIR / MEASUREMENTS_FILE, p / MEASUREMENTS_FILE):
            if cand.is_file():
                return cand
        raise RecordError(f"{p}: no {RAW_DIR}/{MEASUREMENTS_FILE} in this directory")
    return p


def read_records(source: str | Path, validate: bool = True) -> list[dict[str, Any]]:
    """All records of a run directory, raw directory or .jsonl file, in file order.

    A last line cut short (the runner died mid-write) is dropped; any other bad line is an
    error naming its line number."""
    path = _resolve(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecordError(f"{path}: cannot read raw records: {e.strerror}") from e
    lines = text.split("\n")
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                break  # truncated final line
            raise RecordError(f"{path.name}:{i}: not JSON: {e.msg}") from e
        out.append(validate_record(rec, f"{path.name}:{i}") if validate else rec)
    return out
