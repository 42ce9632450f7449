"""Linkability on the emulated network, small and fast: a seeded workload replayed through
the real relay and the real ECH front door, then attacked by the linkers.

Bound tested for cfr-flow: the same-address linker's precision may not exceed the
pool-sharing chance level computed from the ground truth (same-household pairs / all pairs,
what a linker independent of the truth achieves) by more than three binomial standard
errors of the pairs it predicted: precision <= c + 3 * sqrt(c (1 - c) / predicted_pairs).

Devices run in namespaces of their own with two device classes (``linux`` and
``windows-like``: different TTL/hop limit, TCP timestamps, initial window and TLS groups);
the fingerprint linkers must separate the classes under cfr-flow, whatever alias each flow
got. What each signal shows is printed (``-s``) for the record.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from benchmarks.environment import BenchEnv
from benchmarks.linkability import fingerprints as fp
from benchmarks.linkability import linkers
from benchmarks.linkability.metrics import chance_precision, pairwise_scores
from benchmarks.linkability.observations import join_records, trait_vector
from benchmarks.linkability.simulator import SimParams, apply_policy, trace_from_flows
from benchmarks.linkability_run import (
    LinkabilityParams,
    _add_device_addresses,
    _workloads,
    device_class_of,
    population_host,
    replay,
    setup_devices,
)
from testbed.network import Network
from testbed.scenario import Scenario
from testbed.services import ech as ech_service
from tests.conftest import require_root
from topologies import load_topology

PARAMS = LinkabilityParams(households=20, duration_s=15, pool_size=8, epoch_s=60,
                           sessions_per_device_per_hour=900, model="none",
                           device_classes=("linux", "windows-like"))


def _load(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def replays(tmp_path_factory):
    """route and cfr-flow with resumption on, cfr-flow with resumption off."""
    require_root()
    out = tmp_path_factory.mktemp("linkability")
    scenario = replace(Scenario(), subscribers=1, population=PARAMS.households)
    results = {}
    with Network(scenario, topology=load_topology(scenario.topology)) as net:
        workload, _temp = _workloads(replace(PARAMS), net, scenario.subscribers)
        # few sites, so devices come back to the same site and can present a ticket
        workload = _few_sites(workload)
        _add_device_addresses(net, (workload,))
        devices, profiles, bring_up = setup_devices(net, (workload,), PARAMS, out)
        results["bring_up"] = bring_up
        net.registry.defer(devices.down)
        for resumption, policies in ((True, ("route", "cfr-flow")), (False, ("cfr-flow",))):
            env = BenchEnv(net, net.registry.make_tmpdir("lk"), pool_size=PARAMS.pool_size,
                           epoch_s=PARAMS.epoch_s, resumption=resumption,
                           named_sites=tuple(workload.params.sensitive_sites))
            env.start(["direct"])
            try:
                loader = ech_service.LoadGenerator(net[population_host(net)],
                                                   dns=env.dns.address, ca_file=env.ca_file,
                                                   workdir=out / "load")
                for policy in policies:
                    name = f"{policy}-{'resume' if resumption else 'full'}"
                    truth, front, counts = replay(env, loader, policy, workload.records, out,
                                                  name, PARAMS.duration_s, profiles)
                    assert counts["failed"] == 0 and counts["seen"] == counts["flows"], counts
                    ft, cov = join_records(_load(truth), _load(front),
                                           workload.params.sensitive_sites)
                    results[name] = ft.labelled()
            finally:
                env.stop()
        devices.down()
    results["households"] = workload.household_table()
    return results


def _few_sites(workload):
    sites = [f"site-{i:04d}.example" for i in range(1, 6)]
    for i, rec in enumerate(workload.records):
        if not rec["site"].startswith("site-"):
            continue
        rec["site"] = sites[i % len(sites)]
    return workload


def test_route_same_address_linker_is_exact(replays):
    ft = replays["route-resume"]
    assert len(ft) >= 50
    scores = pairwise_scores(ft.household, linkers.same_address(ft))
    assert scores.precision == 1.0


def test_cfr_flow_address_linker_is_no_better_than_chance(replays):
    ft = replays["cfr-flow-resume"]
    truth = ft.household
    scores = pairwise_scores(truth, linkers.same_address(ft))
    chance = chance_precision(truth)
    assert scores.predicted_pairs > 0  # flows did share aliases: the pool is shared
    bound = chance + 3 * math.sqrt(chance * (1 - chance) / scores.predicted_pairs)
    assert scores.precision <= bound, (scores, chance)


def test_resumption_still_links_under_cfr_flow_only_when_on(replays):
    on = replays["cfr-flow-resume"]
    off = replays["cfr-flow-full"]
    with_tickets = pairwise_scores(on.household, linkers.resumption(on))
    assert with_tickets.predicted_pairs > 0 and with_tickets.precision == 1.0
    without = pairwise_scores(off.household, linkers.resumption(off))
    assert without.predicted_pairs == 0


def test_model_agrees_with_emulation_on_the_same_trace(replays):
    """The model, given the emulated trace, reproduces the emulated address linker within
    the stated tolerance (|precision difference| <= 0.1 for route)."""
    ft = replays["route-resume"]
    trait = trait_vector(ft, replays["households"])
    modelled = apply_policy(trace_from_flows(ft, trait), "route", SimParams(pool=8))
    emulated = pairwise_scores(ft.household, linkers.same_address(ft))
    model = pairwise_scores(modelled.household, linkers.same_address(modelled))
    assert abs(emulated.precision - model.precision) <= 0.1
    assert abs(emulated.recall - model.recall) <= 0.15


def _device_classes(ft) -> np.ndarray:
    names = ft.names["device"]
    return np.array([PARAMS.device_classes.index(
        device_class_of(names[d], PARAMS.seed, PARAMS.device_classes)) for d in ft.device])


def test_device_namespaces_came_up(replays):
    rep = replays["bring_up"]
    assert rep.devices >= PARAMS.households  # every household has at least one device
    assert rep.total_s < 60


def test_fingerprints_separate_device_classes_under_cfr_flow(replays):
    ft = replays["cfr-flow-resume"]
    cls = _device_classes(ft)
    assert set(cls) == {0, 1}, "both device classes made flows"
    assert fp.has_fingerprints(ft)
    report = {}
    for name, linker in fp.fingerprint_linkers().items():
        labels = linker(ft)
        # a cluster is pure when all its flows come from one device class
        pure = all(np.unique(cls[labels == c]).size == 1 for c in np.unique(labels))
        s = pairwise_scores(ft.household, labels)
        report[name] = (np.unique(labels).size, pure, round(s.precision, 3), round(s.recall, 3))
    print("\nfingerprint linkers under cfr-flow (clusters, class-pure, precision, recall):")
    for name, row in report.items():
        print(f"  {name:24} {row}")
    # TTL / hop limit (64 vs 128) splits the population exactly into the two classes
    ttl = fp.categorical("ttl")(ft)
    assert np.unique(ttl).size == 2
    for c in np.unique(ttl):
        assert np.unique(cls[ttl == c]).size == 1
    # so do the SYN shape, the TLS groups and the HTTP/2 SETTINGS; the combination never
    # mixes classes
    for name in ("fp-syn", "fp-groups", "fp-h2", "fp+combined"):
        assert report[name][1], (name, report[name])
    # the address linker, by contrast, mixes the classes (aliases are shared)
    addr = linkers.same_address(ft)
    assert not all(np.unique(cls[addr == c]).size == 1 for c in np.unique(addr))
