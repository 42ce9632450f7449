"""One owner per link parameter (issue 16, item 6): the detour means a path's extra one-way
delay wherever it is written, the link limits are defined once and agree with the Go delay
line's spec.go, and a definition's link overrides say which of the user's values they
replaced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cfrbench.cli import build_parser, scenario_from_args
from testbed import delayline
from testbed.errors import ParameterError, UsageError
from testbed.scenario import (
    Scenario,
    detour_link_delay_ms,
    merge_link_overrides,
    scenario_from_mapping,
    with_detour_delay,
    with_link_override,
)

SPEC_GO = Path(delayline.__file__).with_name("spec.go")
_GO_UNITS_MS = {"time.Second": 1000.0, "time.Millisecond": 1.0, "time.Microsecond": 0.001}


def _go_constants() -> dict[str, float]:
    """The `const ( ... )` block of spec.go: `Name = <number> [* time.Unit]` per line."""
    block = re.search(r"const \((.*?)\n\)", SPEC_GO.read_text(), re.S)
    assert block, f"no const block in {SPEC_GO}"
    values: dict[str, float] = {}
    for line in block.group(1).splitlines():
        m = re.match(r"\s*(\w+)\s*=\s*([0-9_.e]+)\s*(?:\*\s*(time\.\w+))?", line)
        if m:
            number = float(m.group(2).replace("_", ""))
            values[m.group(1)] = number * _GO_UNITS_MS[m.group(3)] if m.group(3) else number
    return values


def test_python_limits_agree_with_spec_go() -> None:
    go = _go_constants()
    assert go["MaxDelay"] == delayline.MAX_DELAY_MS  # ms
    assert go["MaxJitter"] == delayline.MAX_JITTER_MS  # ms
    assert go["MinRateBps"] / 1e6 == delayline.MIN_RATE_MBIT
    assert go["MaxRateBps"] / 1e6 == delayline.MAX_RATE_MBIT
    assert go["DefaultLimit"] == delayline.DEFAULT_QUEUE_PACKETS
    assert go["MaxLimit"] == delayline.MAX_QUEUE_PACKETS


def test_the_scenario_validates_with_the_delay_lines_limits() -> None:
    """One definition: a value the delay line accepts is accepted by a scenario file and the
    first one above it is refused by both, naming the parameter."""
    limit = delayline.MAX_DELAY_MS
    scenario_from_mapping({"links": {"wan": {"delay_ms": limit}}})
    delayline.DirectionSpec(delay_ms=limit)
    with pytest.raises(ParameterError) as err:
        scenario_from_mapping({"links": {"wan": {"delay_ms": limit + 1}}})
    assert err.value.parameter == "wan.delay_ms"
    with pytest.raises(ParameterError):
        delayline.DirectionSpec(delay_ms=limit + 1)
    with pytest.raises(ParameterError) as err:
        too_long = delayline.MAX_QUEUE_PACKETS + 1
        scenario_from_mapping({"links": {"wan": {"queue_packets": too_long}}})
    assert err.value.parameter == "wan.queue_packets"


def test_detour_is_a_paths_extra_one_way_delay_in_file_cli_and_default() -> None:
    from_file = scenario_from_mapping({"links": {"detour": {"delay_ms": 30.0}}})
    args = build_parser().parse_args(["up", "--detour-delay", "30"])
    from_cli = scenario_from_args(args)
    assert from_file.detour_extra_ms == from_cli.detour_extra_ms == 30.0
    # ... emulated as half on each of the detour link's two crossings
    assert from_file.links["detour"] == from_cli.links["detour"]
    assert from_file.links["detour"].direction(True)["delay_ms"] == 15.0
    assert Scenario().detour_extra_ms == 15.0
    assert Scenario().links["detour"].delay_ms == detour_link_delay_ms(15.0) == 7.5
    assert Scenario().to_dict()["detour_extra_ms"] == 15.0


def test_detour_rejects_per_direction_delays_and_bad_values() -> None:
    with pytest.raises(UsageError, match="both directions"):
        scenario_from_mapping({"links": {"detour": {"delay_up_ms": 5.0}}})
    with pytest.raises(ParameterError) as err:
        scenario_from_mapping({"links": {"detour": {"delay_ms": -1.0}}})
    assert err.value.parameter == "detour.delay_ms"
    with pytest.raises(ParameterError) as err:
        with_detour_delay(Scenario(), -2.0, "detour-delay")
    assert err.value.parameter == "detour-delay"


def test_definition_values_apply_and_nothing_is_reported_over_defaults() -> None:
    merged, overridden = merge_link_overrides(Scenario(), {"wan": 12.0, "detour": 20.0},
                                              {"access": 1000.0}, {"access": 1700})
    assert merged.links["wan"].delay_ms == 12.0
    assert merged.detour_extra_ms == 20.0 and merged.links["detour"].delay_ms == 10.0
    assert merged.links["access"].rate_mbit == 1000.0
    assert merged.links["access"].queue_packets == 1700
    assert overridden == []  # the user set none of these: no setting of theirs was lost


def test_user_values_a_definition_replaces_are_named() -> None:
    user = with_detour_delay(with_link_override(Scenario(), "wan", delay_ms=20.0), 40.0)
    user = with_link_override(user, "access", rate_mbit=50.0, queue_packets=100)
    merged, overridden = merge_link_overrides(user, {"wan": 10.0, "detour": 15.0},
                                              {"access": 1000.0}, {"access": 1700})
    assert merged.links["wan"].delay_ms == 10.0 and merged.detour_extra_ms == 15.0
    assert merged.links["access"].queue_packets == 1700
    assert overridden == ["wan delay 20 ms -> 10 ms (definition)",
                          "detour (extra one-way) delay 40 ms -> 15 ms (definition)",
                          "access rate 50 Mbit/s -> 1000 Mbit/s (definition)",
                          "access queue 100 packets -> 1700 packets (definition)"]


def test_user_values_a_definition_does_not_touch_run_as_set() -> None:
    user = with_link_override(Scenario(), "access", delay_ms=5.0)
    merged, overridden = merge_link_overrides(user, {"wan": 10.0, "access": 5.0})
    assert merged.links["access"].delay_ms == 5.0  # set by the user, kept
    assert overridden == []  # the definition asked for the same value: nothing lost


def test_unknown_link_class_in_a_definition_is_refused() -> None:
    with pytest.raises(ParameterError) as err:
        merge_link_overrides(Scenario(), {"backbone": 1.0})
    assert err.value.parameter == "link class"


@pytest.mark.parametrize("profile", ["quick", "full", "tiny"])
def test_merging_reproduces_the_runners_scenarios_for_every_shipped_definition(
        profile: str) -> None:
    """The call benchmarks.runner.scenario_for should make (the report of issue 16, item 6)
    builds exactly the networks it builds today, at every sweep point of every definition:
    the detour halved once, in the scenario, instead of in the runner."""
    from dataclasses import replace

    from benchmarks.definitions import available_benchmarks, load_benchmarks
    from benchmarks.runner import scenario_for
    from benchmarks.schedule import plan

    user = Scenario()
    for definition in load_benchmarks(available_benchmarks(), profile):
        for step in plan(definition, 0):
            today = scenario_for(user, definition, step.sweep)
            s = replace(user, ech_mode=definition.scenario.ech_mode,
                        subscribers=max(user.subscribers, definition.scenario.subscribers))
            delays = dict(definition.scenario.link_delay_ms)
            if step.sweep and definition.sweep is not None:
                delays[definition.sweep.link] = step.sweep["delay_ms"]
            merged, overridden = merge_link_overrides(
                s, delays, definition.scenario.link_rate_mbit,
                definition.scenario.link_queue_packets)
            assert merged == today, (definition.name, step.sweep)
            assert overridden == []  # nothing set by the user: nothing to report
