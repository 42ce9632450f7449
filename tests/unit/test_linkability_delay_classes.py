"""Per-line delay classes in the workload (benchmarks/linkability/workload.py) and their
grid in the testbed (testbed/devices.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.linkability.workload import WorkloadParams, delay_class_rtts, generate_workload
from testbed.devices import delay_class_rtts as devices_grid

BASE = WorkloadParams(households=60, duration_s=120, sites=50)


def test_grid_matches_the_testbed_and_spans_the_range() -> None:
    for k in (1, 2, 4, 7):
        assert delay_class_rtts(k, 2.0, 30.0) == devices_grid(k, 2.0, 30.0)
    g = delay_class_rtts(4, 2.0, 30.0)
    assert g[0] == 2.0 and g[-1] == pytest.approx(30.0) and g == sorted(g)


def test_households_draw_a_class_recorded_in_table_and_records() -> None:
    w = generate_workload(replace(BASE, delay_classes=4))
    rtts = delay_class_rtts(4, 2.0, 30.0)
    table = {h["household"]: h for h in w.household_table()["households"]}
    classes = {h.delay_class for h in w.households}
    assert classes == {0, 1, 2, 3}  # 60 households over 4 classes: all used
    for h in w.households:
        assert table[h.household]["delay_class"] == h.delay_class
        assert table[h.household]["access_rtt_ms"] == rtts[h.delay_class]
    for r in w.records:
        assert r["delay_class"] == next(h.delay_class for h in w.households
                                        if h.household == r["household"])


def test_without_classes_nothing_changes_and_the_draw_moves_nothing_else() -> None:
    plain = generate_workload(BASE)
    assert all("delay_class" not in r for r in plain.records)
    assert all("delay_class" not in h for h in plain.household_table()["households"])
    with_classes = generate_workload(replace(BASE, delay_classes=3, coalesce=True))
    strip = [{k: v for k, v in r.items() if k != "delay_class"} for r in with_classes.records]
    assert strip == plain.records


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        WorkloadParams(delay_classes=-1)
    with pytest.raises(ValueError):
        WorkloadParams(access_rtt_ms=(30.0, 2.0))


def test_coalescing_without_keep_alive_is_a_usage_error_naming_both() -> None:
    from dataclasses import replace

    from benchmarks.linkability_run import LinkabilityParams
    from testbed.errors import ParameterError

    params = replace(LinkabilityParams.for_profile("quick"), coalesce=True, keep_alive_s=0.0)
    with pytest.raises(ParameterError, match="keep-alive"):
        params.validate(10_000)
    assert replace(params, keep_alive_s=20.0).validate(10_000).coalesce
