"""Config validation: every bad input is refused with an error naming the key."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

from relay import config
from relay.errors import ConfigError, PoolTooSmall

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parents[2] / "relay" / "examples" / "edge.toml"


def base() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def with_(path: str, value: object, data: dict | None = None) -> dict:
    """Copy of the example with `path` (dotted; a number is a list index) set; the value
    DELETE removes the key."""
    d = copy.deepcopy(data or base())
    cur: Any = d
    parts = path.split(".")
    for part in parts[:-1]:
        cur = cur[int(part)] if part.isdigit() else cur.setdefault(part, {})
    last = parts[-1]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE:
        del cur[key]
    else:
        cur[key] = value
    return d


DELETE = object()


def test_example_is_valid() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.policy == "cfr-epoch"
    assert cfg.access_interfaces == ("a1", "a2")
    assert len(cfg.alias_v4) == 16
    assert cfg.tcp_established == 7440 and cfg.epoch_length == 300
    assert cfg.modes == ("epoch", "epoch")


@pytest.mark.parametrize("policy,modes", [
    ("route", ("route", "route")), ("cgn", ("cgn", "route")), ("nptv6", ("cgn", "nptv6")),
    ("cfr-flow", ("flow", "flow")), ("cfr-epoch", ("epoch", "epoch")),
])
def test_policy_modes(policy: str, modes: tuple) -> None:
    assert config.from_dict(with_("relay.policy", policy)).modes == modes


def test_nptv6_v4_route() -> None:
    d = with_("relay.policy", "nptv6")
    assert config.from_dict(with_("nptv6.v4", "route", d)).modes == ("route", "nptv6")


BAD = [
    # (path, value, key named in the error, words expected in the message)
    ("relay.policy", "nat", "relay.policy", "route, cgn, nptv6, cfr-flow, cfr-epoch"),
    ("relay.policy", DELETE, "relay.policy", "required"),
    ("relay.policy", 3, "relay.policy", "string"),
    ("relay.table", "my table", "relay.table", "letters"),
    ("relay.egress_interfaces", [], "relay.egress_interfaces", "at least one"),
    ("relay.egress_interfaces", "upl", "relay.egress_interfaces", "list"),
    ("relay.egress_interfaces", ["a-very-long-interface-name"], "relay.egress_interfaces[0]",
     "interface name"),
    ("relay.egress_interfaces", ["a1"], "subscribers[0].interfaces[0]", "egress"),
    ("relay.bogus", 1, "relay.bogus", "unknown key"),
    ("bogus", {}, "bogus", "unknown key"),
    ("subscribers", [], "subscribers", "at least one"),
    ("subscribers.0.prefixes", ["198.18.252.1/30"], "subscribers[0].prefixes[0]",
     "host bits zero"),
    ("subscribers.0.prefixes", ["banana"], "subscribers[0].prefixes[0]", "prefix"),
    ("subscribers.0.prefixes", [], "subscribers[0].prefixes", "at least one"),
    ("subscribers.0.interfaces", [], "subscribers[0].interfaces", "at least one"),
    ("subscribers.0.vlan", 7, "subscribers[0].vlan", "unknown key"),
    ("alias.v4", ["2001:2::/64"], "alias.v4[0]", "IPv4"),
    ("alias.v4", ["198.19.253.0/28", "198.19.253.8/29"], "alias.v4", "overlap"),
    ("alias.v4", ["198.18.252.0/30"], "alias.v4[0]", "overlaps a subscriber prefix"),
    ("alias.v4", ["198.19.0.0/16"], "alias.v4[0]", "at most 4096"),
    ("alias.v6_prefixes", ["198.19.253.0/28"], "alias.v6_prefixes[0]", "IPv6"),
    ("alias.v6_prefixes", ["2001:2:0:a000::/124"], "alias.v6_prefixes[0]", "/120"),
    ("alias.v6_prefixes", ["2001:db8:1000::/40"], "alias.v6_prefixes[0]",
     "overlaps a subscriber prefix"),
    ("alias.v6_pool_size", 0, "alias.v6_pool_size", "integer from 1"),
    ("alias.v6_pool_size", "16", "alias.v6_pool_size", "integer"),
    ("alias.port_min", 0, "alias.port_min", "integer from 1 to 65535"),
    ("alias.port_max", 70000, "alias.port_max", "integer from 1 to 65535"),
    ("alias.port_max", 1000, "alias.port_max", ">= alias.port_min"),
    ("epoch.length", "soon", "epoch.length", "duration"),
    ("epoch.length", 0, "epoch.length", "duration"),
    ("epoch.length", True, "epoch.length", "duration"),
    ("epoch.key_file", 5, "epoch.key_file", "path"),
    ("limits.flows_per_subscriber", 0, "limits.flows_per_subscriber", "integer"),
    ("limits.flows_per_subscriber", 1.5, "limits.flows_per_subscriber", "integer"),
    ("limits.v6_subscriber_prefix_len", 129, "limits.v6_subscriber_prefix_len", "32 to 128"),
    ("timeouts.tcp_established", "2", "timeouts.tcp_established", "duration from 10"),
    ("timeouts.udp_replied", -1, "timeouts.udp_replied", "duration"),
    ("mapping_log.retention", "forever", "mapping_log.retention", "duration"),
    ("mapping_log.enabled", "yes", "mapping_log.enabled", "true or false"),
    ("safety.forward_other", "reject", "safety.forward_other", "drop, accept"),
    ("safety.allow_inbound", 1, "safety.allow_inbound", "true or false"),
    ("nptv6.v4", "cfr-flow", "nptv6.v4", "cgn, route"),
    ("nptv6.map.0.alias", "2001:2:0:a100::/64", "nptv6.map[0].alias", "same length"),
    ("nptv6.map.0.subscriber", DELETE, "nptv6.map[0].subscriber", "required"),
    ("nptv6.map.1.alias", "2001:2:0:a100::/56", "nptv6.map[1].alias", "1:1"),
]


@pytest.mark.parametrize("path,value,key,words", BAD, ids=[b[0] + "=" + repr(b[1])[:20]
                                                           for b in BAD])
def test_bad_input_is_refused_naming_the_key(path, value, key, words) -> None:
    with pytest.raises(ConfigError) as ei:
        config.from_dict(with_(path, value))
    err = ei.value
    assert err.key == key, str(err)
    assert words in str(err), str(err)
    assert ei.value.exit_code == 2


POOL = [
    ("cfr-flow", "alias.v4", ["198.19.253.1/32"], "alias.v4"),
    ("cfr-epoch", "alias.v4", [], "alias.v4"),
    ("cgn", "alias.v4", [], "alias.v4"),
    ("cfr-flow", "alias.v6_prefixes", [], "alias.v6_prefixes"),
    ("cfr-flow", "alias.v6_pool_size", 1, "alias.v6_pool_size"),
    ("cfr-epoch", "alias.v6_prefixes", ["2001:2:0:a000::/127"], "alias.v6_prefixes[0]"),
    ("nptv6", "nptv6.map", [], "nptv6.map"),
]


@pytest.mark.parametrize("policy,path,value,key", POOL)
def test_pool_too_small_for_policy(policy, path, value, key) -> None:
    d = with_("relay.policy", policy)
    with pytest.raises(ConfigError) as ei:
        config.from_dict(with_(path, value, d))
    assert ei.value.key == key, str(ei.value)


def test_pool_too_small_is_typed() -> None:
    d = with_("relay.policy", "cfr-flow")
    with pytest.raises(PoolTooSmall, match="needs at least 2 IPv4 alias"):
        config.from_dict(with_("alias.v4", ["198.19.253.1/32"], d))


def test_flow_limit_must_fit_an_alias_port_range() -> None:
    d = with_("alias.port_min", 60000)
    d = with_("limits.flows_per_subscriber", 6000, d)
    with pytest.raises(PoolTooSmall, match="could exhaust an alias"):
        config.from_dict(d)


def test_route_needs_no_pool() -> None:
    d = with_("relay.policy", "route")
    d = with_("alias.v4", DELETE, d)
    assert config.from_dict(d).alias_v4 == ()


@pytest.mark.parametrize("text,seconds", [
    ("2s", 2), ("500ms", 0.5), ("5m", 300), ("2h4m", 7440), ("1d", 86400), (90, 90),
    ("1.5s", 1.5), ("3d2h", 266400),
])
def test_durations(text, seconds) -> None:
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["x", "", "5 parsecs", "-1s", True, None, [1]])
def test_bad_durations(text) -> None:
    assert config.parse_duration(text) is None


def test_unreadable_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay\npolicy=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)


def test_state_dir_override(tmp_path) -> None:
    cfg = config.load(EXAMPLE, state_dir=tmp_path)
    assert cfg.state_dir == tmp_path and cfg.key_path == tmp_path / "epoch.key"
