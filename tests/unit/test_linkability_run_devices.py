"""linkability_run's device set-up and defaults (no root: no namespaces are made here)."""

from __future__ import annotations

from benchmarks.linkability.workload import WorkloadParams, example_address_plan, generate_workload
from benchmarks.linkability_run import (
    LinkabilityParams,
    device_class_of,
    device_specs,
    oracle_ceilings,
)
from testbed.devices import DEVICE_CLASSES


def test_full_defaults_can_profile_and_quick_is_short() -> None:
    full, quick = LinkabilityParams(), LinkabilityParams.quick()
    assert full.duration_s >= 600
    assert full.households * full.trait_fraction >= 100
    assert quick.duration_s <= 60
    assert LinkabilityParams.for_profile("quick") == quick
    assert LinkabilityParams.for_profile("full") == full


def test_device_specs_one_namespace_per_device_with_all_its_addresses() -> None:
    p = WorkloadParams(seed=4, households=6, duration_s=600, sessions_per_device_per_hour=60,
                       temp_addr_lifetime_s=100)
    w = generate_workload(p, example_address_plan)
    classes = ("linux", "windows-like")
    specs = device_specs((w,), 4, classes)
    by_name = {s.name: s for s in specs}
    assert set(by_name) == {r["device"] for r in w.records}
    for r in w.records:
        spec = by_name[r["device"]]
        assert r["source"] in spec.addrs
        assert spec.device_class == device_class_of(r["device"], 4, classes)
        assert spec.stack is DEVICE_CLASSES[spec.device_class].stack
    # temporary addresses rotate: some device holds several IPv6 addresses
    assert max(sum(":" in a for a in s.addrs) for s in specs) > 1
    # a household's devices have disjoint port ranges
    hh: dict[str, list] = {}
    for r in w.records:
        hh.setdefault(r["household"], set()).add(r["device"])
    for devs in hh.values():
        ranges = sorted(by_name[d].port_range() for d in devs)
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    # the class assignment is stable and uses both classes
    assert {s.device_class for s in specs} == set(classes)


def test_oracle_ceilings_reads_each_policy() -> None:
    section = {"policies": {"route": {"trait_ceiling": {"auc": 0.81}},
                            "cfr-flow": {"trait_ceiling": {"auc": None}},
                            "cgn": {"error": "no joined flows"}},
               "adversary": {"route": {"trait_attack": {
                   "epoch": {"by_family": {}},
                   "strong": {"oracle": {"auc": 0.97}}, "weak": {"oracle": {"auc": None}}}}}}
    # the trait adversaries' Bayes-optimal oracle wins where it exists
    assert oracle_ceilings(section) == {"route": {"strong": 0.97, "weak": None},
                                        "cfr-flow": {"trait": None}}
