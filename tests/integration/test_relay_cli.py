"""The `cfr` CLI against a real kernel: invalid config or a too-small pool exit 2 and leave
the running ruleset exactly as it was; the relay touches no other table."""

from __future__ import annotations

import json
import signal

import pytest

from labs.labnet import wait_for
from tests.integration.relay_fixtures import lab, relay  # noqa: F401

pytestmark = pytest.mark.integration


def _snapshot(relay) -> list:  # noqa: F811
    """The table without counter values (those are live)."""
    items = json.loads(relay.table())["nftables"]
    for it in items:
        it.get("counter", {}).pop("packets", None)
        it.get("counter", {}).pop("bytes", None)
    return items


def test_invalid_config_and_small_pool_leave_ruleset_unchanged(relay, lab):  # noqa: F811
    good = relay.apply("cfr-flow")
    before = _snapshot(relay)
    bad_key = lab.tmp / "bad-key.toml"
    bad_key.write_text(good.read_text().replace("[alias]", "[alias]\nv4_pool = 3"))
    small = lab.write_config("cfr-flow", name="small.toml", alias__v4=["198.19.253.1/32"])
    bad_policy = lab.tmp / "bad-policy.toml"
    bad_policy.write_text(good.read_text().replace('policy = "cfr-flow"', 'policy = "nat"'))
    for path, needle in ((bad_key, "alias.v4_pool"), (small, "alias.v4"),
                         (bad_policy, "relay.policy")):
        for cmd in ("check", "apply"):
            r = relay.cfr(cmd, str(path))
            assert r.returncode == 2, (cmd, path.name, r.stdout, r.stderr)
            assert needle in r.stderr, r.stderr
        assert _snapshot(relay) == before, f"{path.name} changed the running ruleset"
    r = relay.cfr("check", str(good))
    assert r.returncode == 0 and r.stdout.startswith("ok:")


def test_sighup_with_invalid_config_keeps_running_ruleset(relay, lab):  # noqa: F811
    relay.start_daemon("cfr-epoch")
    before = _snapshot(relay)
    relay.config.write_text(relay.config.read_text().replace('policy = "cfr-epoch"',
                                                             'policy = "cfr-nonsense"'))
    relay.signal_daemon(signal.SIGHUP)
    status = relay.state / "status.json"
    assert wait_for(lambda: "relay.policy" in (json.loads(status.read_text())
                                               .get("last_error") or ""), timeout=10)
    assert relay.daemon.poll() is None
    assert _snapshot(relay) == before


def test_other_tables_untouched_and_teardown(relay, lab):  # noqa: F811
    lab.cmd("edge", "nft", "add table inet bystander; add chain inet bystander c "
            "{ type filter hook forward priority 5 ; } ; add rule inet bystander c counter")
    try:
        def other() -> str:
            return lab.cmd("edge", "nft", "-j", "list", "table", "inet", "bystander").stdout

        mine = other()
        cfg = relay.apply("cgn")
        relay.apply("cfr-flow")
        relay.rotate()
        assert other() == mine
        r = relay.cfr("teardown", str(cfg))
        assert r.returncode == 0 and "deleted" in r.stdout
        assert relay.table() == ""
        assert other() == mine
        r = relay.cfr("teardown", "--table", "cfr")
        assert r.returncode == 0 and "did not exist" in r.stdout
    finally:
        lab.cmd("edge", "nft", "delete", "table", "inet", "bystander", check=False)


def test_status_outputs(relay, lab):  # noqa: F811
    cfg = relay.apply("cfr-epoch")
    relay.probe("sub1", lab.plan.fd_v4, 3)
    relay.probe("sub2", lab.plan.fd_v6, 2)
    st = relay.status()
    assert st["policy"] == "cfr-epoch" and st["table_present"]
    assert 0 < st["next_rotation_in_s"] <= st["epoch_length_s"]
    assert st["flows"]["aliased_flows"] >= 5
    used4 = [a for a, v in st["occupancy"].items() if v["flows"] and "." in a]
    assert len(used4) == 1  # one subscriber, one epoch, one alias
    assert st["new_flows"]["new_flows_v4"] >= 3
    assert "198.18.252" not in json.dumps(st["occupancy"])  # counts only, no subscribers
    prom = relay.cfr("status", str(cfg), "--prometheus").stdout
    assert 'cfr_drops_total{table="cfr",reason="spoofed"}' in prom
    assert "cfr_alias_subscribers{" in prom
    text = relay.cfr("status", str(cfg)).stdout
    assert "policy     cfr-epoch" in text and "pool occupancy" in text


def test_changed_timeouts_replace_old_timeout_objects(relay, lab):  # noqa: F811
    relay.apply("cfr-flow")
    relay.probe("sub1", lab.plan.fd_v4, 2, "udp")  # entries using the old object
    relay.apply("cfr-flow", timeouts__udp_unreplied=45)
    names = {it["ct timeout"]["name"] for it in json.loads(relay.table())["nftables"]
             if "ct timeout" in it}
    assert names == {"tcp_v4_7440", "tcp_v6_7440", "udp_v4_45_180", "udp_v6_45_180"}, names
    out = lab.cmd("edge", "conntrack", "-L", "-p", "udp").stdout  # still listed, unharmed
    assert out.count("dport=7003") == 2


def test_commands_without_config_use_the_one_applied_in_this_namespace(relay, lab):  # noqa: F811
    relay.apply("cfr-epoch")
    r = relay.cfr("status", "--json", "--no-flows")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["policy"] == "cfr-epoch"
    e = json.loads(r.stdout)["epoch"]
    assert relay.cfr("rotate").returncode == 0
    assert json.loads(relay.cfr("status", "--json", "--no-flows").stdout)["epoch"] == e + 1
    assert relay.cfr("teardown").returncode == 0
    assert relay.table() == ""
    assert relay.cfr("status", "--json").returncode == 2  # nothing applied here any more
