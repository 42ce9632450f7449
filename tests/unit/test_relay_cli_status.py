"""`cfr` commands that need no kernel (check, render) and the status renderers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay import cli, status
from relay.config import load
from relay.conntrack import Flow

EXAMPLE = Path(__file__).resolve().parents[2] / "relay" / "examples" / "edge.toml"


def test_check_ok(capsys) -> None:
    assert cli.main(["check", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_check_bad_config_exits_2_naming_key(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('policy = "cfr-epoch"', 'policy = "vpn"'))
    assert cli.main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "relay.policy" in err and "cfr-flow" in err


def test_missing_config_is_usage_error(capsys) -> None:
    assert cli.main(["apply"]) == 2
    assert cli.main(["check", "/nonexistent/x.toml"]) == 2


def test_render_is_valid_json(capsys) -> None:
    assert cli.main(["render", str(EXAMPLE), "--epoch", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["transaction"]["nftables"][0] == {"add": {"table": {"family": "inet",
                                                                   "name": "cfr"}}}


def _flow(i: int, src: str, alias: str) -> Flow:
    return Flow(i, 6 if ":" in src else 4, "tcp", src, 1000 + i, "x", 443, alias, 2000 + i, 0)


def test_occupancy_counts_distinct_subscribers_by_delegated_prefix() -> None:
    cfg = load(EXAMPLE)
    flows = [
        _flow(1, "198.18.252.2", "198.19.253.1"),
        _flow(2, "198.18.252.2", "198.19.253.1"),
        _flow(3, "198.18.252.6", "198.19.253.1"),
        # two addresses of one /56 (temporary addresses) are one subscriber
        _flow(4, "2001:db8:1000:100::2", "2001:2:0:a000::9"),
        _flow(5, "2001:db8:1000:100:abcd::7", "2001:2:0:a000::9"),
        _flow(6, "198.18.252.2", "198.18.252.2"),  # not aliased: ignored
    ]
    occ = status.occupancy(cfg, flows, ["198.19.253.1", "198.19.253.2"])
    assert occ["198.19.253.1"] == {"flows": 3, "subscribers": 2}
    assert occ["198.19.253.2"] == {"flows": 0, "subscribers": 0}
    assert occ["2001:2:0:a000::9"] == {"flows": 2, "subscribers": 1}


def test_renderers() -> None:
    s = {
        "table": "cfr", "table_present": True, "policy": "cfr-flow",
        "modes": {"v4": "flow", "v6": "flow"}, "epoch": 5, "applied_epoch": 5,
        "epoch_length_s": 300.0, "next_rotation_in_s": 12.5,
        "drops": {"drop_spoofed": 3, "drop_other": 0}, "new_flows": {"new_flows_v4": 9},
        "kernel": {"nat_insert_failed": 1, "conntrack_drop": 1},
        "occupancy": {"198.19.253.1": {"flows": 2, "subscribers": 2}},
        "anonymity": {f: {"aliases_in_use": 1, "min_subscribers_per_alias": 2,
                          "median_subscribers_per_alias": 2, "max_subscribers_per_alias": 2}
                      for f in ("v4", "v6")},
        "mapping_log": {"records": 4, "open": 1, "retention_s": 60.0},
    }
    prom = status.render_prometheus(s)
    assert 'cfr_drops_total{table="cfr",reason="spoofed"} 3' in prom
    assert 'cfr_alias_subscribers{table="cfr",alias="198.19.253.1"} 2' in prom
    assert 'cfr_nat_insert_failed_total{table="cfr"} 1' in prom
    for line in prom.splitlines():
        assert line.startswith("#") or line.startswith("cfr_")
    text = status.render_text(s)
    assert "spoofed=3" in text and "next rotation in 12.5 s" in text
    assert json.loads(status.render_json(s))["epoch"] == 5


@pytest.mark.parametrize("argv", [["teardown", "--table", "bad name"], ["lookup", "--alias",
                                                                         "1.2.3.4"]])
def test_usage_errors_exit_2(argv, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CFR_RUN_DIR", str(tmp_path))  # nothing applied in "this" namespace
    assert cli.main(argv) == 2
