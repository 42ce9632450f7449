"""Mapping log bookkeeping from conntrack events, without a kernel."""

from __future__ import annotations

import ipaddress
import json

from relay.conntrack import DESTROY, NEW, Flow
from relay.mappinglog import MappingLog

NETS = [ipaddress.ip_network("198.18.252.0/24"), ipaddress.ip_network("2001:db8:1000::/40")]


def flow(i: int, src: str = "198.18.252.2", alias: str = "198.19.253.3", port: int = 4000,
         proto: str = "tcp") -> Flow:
    return Flow(ct_id=i, family=6 if ":" in src else 4, proto=proto, src=src, sport=50000 + i,
                dst="198.19.252.18", dport=443, reply_dst=alias, reply_dport=port + i, status=0)


def test_records_open_close_and_never_the_destination(tmp_path) -> None:
    ml = MappingLog(tmp_path / "m.jsonl", 10, NETS)
    ml.on_events([(NEW, flow(1)), (NEW, flow(2)), (NEW, flow(3, src="203.0.113.9"))], 100.0)
    ml.on_events([(DESTROY, flow(1))], 105.0)
    assert len(ml) == 2  # the non-subscriber flow is ignored
    text = (tmp_path / "m.jsonl").read_text()
    assert "198.19.252.18" not in text and "443" not in text
    back = MappingLog(tmp_path / "m.jsonl", 10, NETS)
    back.load()
    assert [r["end"] for r in back.records()] == [105.0, None]
    hit = back.lookup("198.19.253.3", 4001, at=103.0)
    assert hit and hit[0]["subscriber"] == "198.18.252.2" and hit[0]["subscriber_port"] == 50001
    assert back.lookup("198.19.253.3", 4001, at=106.0) == []
    assert back.lookup("198.19.253.3", 4001, at=99.0) == []


def test_unaliased_flows_are_not_logged(tmp_path) -> None:
    ml = MappingLog(tmp_path / "m.jsonl", 10, NETS)
    f = Flow(1, 4, "udp", "198.18.252.2", 5000, "198.19.252.18", 53, "198.18.252.2", 5000, 0)
    ml.on_events([(NEW, f)], 1.0)
    assert len(ml) == 0


def test_purge_after_retention(tmp_path) -> None:
    ml = MappingLog(tmp_path / "m.jsonl", 2.0, NETS)
    ml.on_events([(NEW, flow(1)), (NEW, flow(2))], 100.0)
    ml.on_events([(DESTROY, flow(1))], 101.0)
    assert ml.purge(102.5) == 0  # ended 1.5 s ago: kept
    assert ml.purge(103.5) == 1
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [2]
    again = MappingLog(tmp_path / "m.jsonl", 2.0, NETS)
    again.load()
    assert len(again) == 1 and again.open


def test_sync_closes_vanished_and_adopts_unseen(tmp_path) -> None:
    ml = MappingLog(tmp_path / "m.jsonl", 60, NETS)
    ml.on_events([(NEW, flow(1)), (NEW, flow(2))], 10.0)
    ml.sync([flow(2), flow(7, src="2001:db8:1000:100::2", alias="2001:2:0:a000::5")], 20.0)
    recs = {r["id"]: r for r in ml.records()}
    assert recs[1]["end"] == 20.0 and recs[1]["end_known"] is False
    assert recs[2]["end"] is None
    assert recs[7]["start_known"] is False and recs[7]["family"] == 6
