"""Raw record format: records are validated on write and read; a crash-truncated last line is
tolerated, anything else malformed is an error naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.records import (
    RecordError,
    RecordWriter,
    make_record,
    measurements_path,
    read_records,
    validate_record,
)
from benchmarks.schedule import ScheduleItem

ITEM = ScheduleItem("cfr-flow", rep=2, block=5, order=1, warmup=False)


def test_make_record_fills_unit_and_fields() -> None:
    r = make_record("latency", "tls_handshake", "handshake_time", 44.5, ITEM,
                    {"delay_ms": 5.0}, ts=1.5, extra={"ech": True})
    assert r == {"benchmark": "latency", "measurement": "tls_handshake", "path": "cfr-flow",
                 "metric": "handshake_time", "unit": "ms", "value": 44.5, "rep": 2,
                 "block": 5, "order": 1, "warmup": False, "ts": 1.5,
                 "sweep": {"delay_ms": 5.0}, "extra": {"ech": True}}
    assert make_record("t", "m", "throughput", 9.0, ITEM)["unit"] == "Mbit/s"
    failed = make_record("t", "m", "ttfb", None, ITEM, extra={"error": "timeout"})
    assert failed["value"] is None


def test_validation_rejects_bad_records() -> None:
    good = make_record("latency", "ttfb", "ttfb", 1.0, ITEM)
    for change, needle in [
        ({"unit": "s"}, "unknown unit"),
        ({"unit": "Mbit/s"}, "is in ms"),
        ({"path": "vpn"}, "unknown path"),
        ({"value": float("nan")}, "not finite"),
        ({"warmup": 0}, "warmup"),
        ({"rep": True}, "rep"),
        ({"rep": -1}, "negative"),
        ({"sweep": {"delay_ms": "5"}}, "sweep.delay_ms"),
        ({"colour": "red"}, "unknown field"),
    ]:
        with pytest.raises(RecordError, match=needle):
            validate_record({**good, **change})
    bad = dict(good)
    del bad["ts"]
    with pytest.raises(RecordError, match="missing field 'ts'"):
        validate_record(bad)


def test_write_read_round_trip(tmp_path: Path) -> None:
    recs = [make_record("latency", "ttfb", "ttfb", float(i), ITEM, ts=float(i))
            for i in range(5)]
    with RecordWriter(tmp_path) as w:
        w.write_all(recs)
    assert w.count == 5
    assert read_records(tmp_path) == recs
    assert read_records(measurements_path(tmp_path)) == recs
    assert read_records(tmp_path / "raw") == recs


def test_truncated_last_line_is_dropped_but_bad_middle_line_fails(tmp_path: Path) -> None:
    line = json.dumps(make_record("latency", "ttfb", "ttfb", 1.0, ITEM, ts=1.0))
    p = measurements_path(tmp_path)
    p.parent.mkdir(parents=True)
    p.write_text(line + "\n" + line[:40])
    assert len(read_records(tmp_path)) == 1
    p.write_text(line + "\n" + line[:40] + "\n" + line + "\n")
    with pytest.raises(RecordError, match="measurements.jsonl:2"):
        read_records(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordError, match="no raw/measurements.jsonl"):
        read_records(empty)
