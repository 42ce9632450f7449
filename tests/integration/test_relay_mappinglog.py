"""Accountability without profiling: the mapping log (from conntrack events) holds alias,
alias port, protocol and time window -> subscriber address and port, nothing about the
destination, stays local, and is purged after the retention."""

from __future__ import annotations

import json
import os
import stat

import pytest

from labs.labnet import wait_for
from relay.mappinglog import MappingLog
from tests.integration.relay_fixtures import lab, relay  # noqa: F401

pytestmark = pytest.mark.integration


def _log(relay) -> MappingLog:  # noqa: F811
    ml = MappingLog(relay.state / "mappings.jsonl", 2.0, [])
    ml.load()
    return ml


def test_mapping_log_records_lookup_and_retention(relay, lab):  # noqa: F811
    p = lab.plan
    relay.start_daemon("cfr-flow", mapping_log__retention="2s", timeouts__udp_unreplied=1,
                       timeouts__udp_replied=1)
    udp = [("udp", q) for q in relay.probe("sub1", p.fd_v4, 4, "udp")
           + relay.probe("sub1", p.fd_v6, 2, "udp")]
    tcp = [("tcp", q) for q in relay.probe("sub1", p.fd_v4, 3)]  # stay in TIME_WAIT (120 s)
    assert wait_for(lambda: len(_log(relay)) >= 9, timeout=10), relay.log()
    ml = _log(relay)
    for proto, (alias, alias_port, local_port) in udp + tcp:
        hits = ml.lookup(alias, alias_port, proto=proto)
        assert len(hits) == 1, (proto, alias, alias_port, ml.records())
        rec = hits[0]
        sub = p.sub1_v4 if "." in alias else p.sub1_v6
        assert rec["subscriber"] == sub and rec["subscriber_port"] == local_port
        assert rec["start_known"] is True
    text = (relay.state / "mappings.jsonl").read_text()
    for far in (p.fd_v4, p.fd_v6):
        assert far not in text, "the mapping log must not record destinations"
    assert all(set(r) <= {"id", "start", "start_known", "end", "end_known", "proto", "family",
                          "alias", "alias_port", "subscriber", "subscriber_port"}
               for r in ml.records())
    assert stat.S_IMODE(os.stat(relay.state / "mappings.jsonl").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(relay.state).st_mode) == 0o700
    # the abuse-desk query through the CLI
    alias, alias_port, local_port = tcp[0][1]
    r = relay.cfr("lookup", str(relay.config), "--alias", alias, "--port", str(alias_port))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["subscriber_port"] == local_port
    r = relay.cfr("lookup", str(relay.config), "--alias", alias, "--port", "1")
    assert r.returncode == 3 and r.stdout == ""
    st = relay.status()
    assert st["mapping_log"]["records"] >= 9

    # UDP mappings expire after 1 s, then are purged 2 s later; TCP ones are still open
    def udp_gone() -> bool:
        relay.status()  # a conntrack dump also evicts expired entries promptly
        return not any(r["proto"] == "udp" for r in _log(relay).records())

    assert wait_for(udp_gone, timeout=20, interval=0.3), _log(relay).records()
    left = _log(relay).records()
    assert {r["proto"] for r in left} == {"tcp"} and len(left) == 3, left


def test_mapping_log_survives_restart(relay, lab):  # noqa: F811
    p = lab.plan
    relay.start_daemon("cfr-epoch")
    peers = relay.probe("sub1", p.fd_v4, 2)
    assert wait_for(lambda: len(_log(relay)) >= 2, timeout=10)
    assert relay.stop_daemon() == 0
    more = relay.probe("sub2", p.fd_v4, 1)  # made while no daemon was watching
    relay.start_daemon()
    ml = _log(relay)
    for alias, port, _local in peers:
        assert ml.lookup(alias, port), (alias, port)
    late = ml.lookup(more[0][0], more[0][1])
    assert late and late[0]["start_known"] is False and late[0]["subscriber"] == p.sub2_v4
