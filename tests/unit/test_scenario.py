"""Scenario files and parameters: every bad value names itself and its allowed range."""

from __future__ import annotations

import pytest

from testbed.errors import ParameterError, UsageError
from testbed.scenario import Scenario, load_scenario, scenario_from_mapping


def test_defaults_are_valid_and_documented_values():
    s = Scenario().validate()
    assert s.subscribers == 4 and s.population == 200
    assert s.links["access"].delay_ms == 2.0
    assert s.links["wan"].delay_ms == 10.0
    assert s.detour_extra_ms == 15.0


def test_toml_overrides_and_per_direction(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[topology]\nsubscribers = 2\npopulation = 0\n'
        '[links.wan]\ndelay_ms = 20\ndelay_down_ms = 5\nrate_mbit = 100\n'
        '[relay]\npolicy = "cfr-flow"\n[ech]\nmode = "split"\n'
    )
    s = load_scenario(path)
    assert (s.subscribers, s.population, s.policy, s.ech_mode) == (2, 0, "cfr-flow", "split")
    assert s.links["wan"].direction(True)["delay_ms"] == 20
    assert s.links["wan"].direction(False)["delay_ms"] == 5
    assert s.links["wan"].direction(False)["rate_mbit"] == 100
    assert s.links["access"].delay_ms == 2.0  # untouched classes keep defaults


@pytest.mark.parametrize(
    ("doc", "parameter"),
    [
        ({"topology": {"subscribers": 0}}, "subscribers"),
        ({"topology": {"subscribers": 251}}, "subscribers"),
        ({"topology": {"population": -1}}, "population"),
        ({"topology": {"name": "mesh"}}, "topology"),
        ({"links": {"wan": {"delay_ms": -1}}}, "wan.delay_ms"),
        ({"links": {"wan": {"loss_pct": 101}}}, "wan.loss_pct"),
        ({"links": {"access": {"rate_mbit": 0}}}, "access.rate_mbit"),
        ({"links": {"access": {"delay_ms": float("nan")}}}, "access.delay_ms"),
        ({"relay": {"policy": "magic"}}, "policy"),
        ({"ech": {"mode": "tunnel"}}, "ech_mode"),
        ({"emulation": {"mechanism": "tc"}}, "link_emulation"),
        ({"topology": {"subscribers": "four"}}, "subscribers"),
    ],
)
def test_bad_values_name_the_parameter(doc, parameter):
    with pytest.raises(ParameterError) as err:
        scenario_from_mapping(doc)
    assert err.value.parameter == parameter
    assert "allowed" in str(err.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"topolgy": {}}, "unknown key"),
        ({"topology": {"subscriber": 3}}, "allowed: name, origins"),
        ({"links": {"satellite": {}}}, "unknown key"),
        ({"links": {"wan": {"delay": 3}}}, "unknown key"),
        ({"addressing": {"cdn_v4": 5}}, "must map block names"),
    ],
)
def test_unknown_keys_are_rejected(doc, message):
    with pytest.raises(UsageError, match=message):
        scenario_from_mapping(doc)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[topology\nsubscribers = ")
    with pytest.raises(UsageError, match="malformed TOML"):
        load_scenario(bad)
    with pytest.raises(UsageError, match="cannot read"):
        load_scenario(tmp_path / "absent.toml")


def test_the_documented_example_scenario_loads():
    from testbed.paths import REPO_ROOT

    s = load_scenario(REPO_ROOT / "topologies" / "scenarios" / "example.toml")
    assert s == Scenario().validate()  # the example spells out the defaults
