"""Hostile configuration: every input is accepted or refused with the project's typed error.

Why: scenario files and relay configs come from users (and, for the relay, from operators'
automation). A traceback from a TypeError or KeyError deep in the code is both a poor
error message and a sign that an unchecked value reached code that trusted it. The
contract is: `scenario_from_mapping` raises only `testbed.errors.UsageError` (subclasses
included), `relay.config.from_dict` only `relay.errors.RelayError`; anything else fails.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import config as relay_config
from relay.errors import RelayError
from testbed.errors import UsageError
from testbed.scenario import scenario_from_mapping

EXAMPLE = Path(__file__).resolve().parents[2] / "relay" / "examples" / "edge.toml"
VALID_RELAY: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())

# Leaves a hostile user might write: wrong types, edge numbers, near-miss strings.
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "0", "-1", "1e309", "nan", "inf", "5m", "2h4m", "1d", "500ms",
                     "-5s", "10x", "198.18.0.0/16", "198.18.0.1/33", "2001:db8::/56",
                     "2001:db8::/129", "::/0", "0.0.0.0/0", "eth0", "a" * 16, "lo",
                     "route", "cgn", "cfr-flow", "cfr-epoch", "nptv6", "shared", "split",
                     "auto", "isp_cdn", "drop", "accept", "\x00", "é", "../../etc/passwd"]),
    st.text(max_size=12),
)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node in a nested dict/list document."""
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict, path: tuple, value: Any, delete: bool) -> Any:
    """Replace (or delete) the node at `path`; the root itself may be replaced."""
    if not path:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


SCENARIO_DOC: dict[str, Any] = {
    "topology": {"name": "isp_cdn", "subscribers": 2, "population": 10, "origins": 1,
                 "providers": 2},
    "links": {"wan": {"delay_ms": 10.0, "loss_pct": 0.0, "rate_mbit": 100.0,
                      "queue_packets": 100, "delay_up_ms": 5.0}},
    "emulation": {"mechanism": "auto"}, "ech": {"mode": "split"},
    "relay": {"policy": "cfr-flow"}, "addressing": {}, "seed": 7,
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=VALUES, delete=st.booleans())
def test_scenario_mutations_raise_only_usage_errors(data: st.DataObject, value: Any,
                                                    delete: bool) -> None:
    paths = _paths(SCENARIO_DOC)
    path = data.draw(st.sampled_from(paths))
    doc = _mutate(SCENARIO_DOC, path, value, delete and bool(path))
    with contextlib.suppress(UsageError):
        scenario_from_mapping(doc)


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["topology", "links", "emulation", "ech", "relay",
                                            "addressing", "seed", "other"]), VALUES,
                           max_size=4))
def test_scenario_random_documents_raise_only_usage_errors(doc: dict) -> None:
    with contextlib.suppress(UsageError):
        scenario_from_mapping(doc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=VALUES, delete=st.booleans())
def test_relay_config_mutations_raise_only_relay_errors(data: st.DataObject, value: Any,
                                                        delete: bool, tmp_path_factory) -> None:
    paths = _paths(VALID_RELAY)
    path = data.draw(st.sampled_from(paths))
    doc = _mutate(VALID_RELAY, path, value, delete and bool(path))
    state = tmp_path_factory.mktemp("cfr")
    with contextlib.suppress(RelayError):
        relay_config.from_dict(doc, state_dir=state)


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["relay", "subscribers", "alias", "epoch",
                                            "limits", "timeouts", "mapping_log", "safety",
                                            "nptv6", "other"]), VALUES, max_size=5))
def test_relay_config_random_documents_raise_only_relay_errors(doc: dict,
                                                               tmp_path_factory) -> None:
    with contextlib.suppress(RelayError):
        relay_config.from_dict(doc, state_dir=tmp_path_factory.mktemp("cfr"))


def test_the_unmutated_documents_are_accepted(tmp_path: Path) -> None:
    """The mutation tests start from valid documents, or they would test nothing."""
    scenario_from_mapping(SCENARIO_DOC)
    relay_config.from_dict(VALID_RELAY, state_dir=tmp_path)
