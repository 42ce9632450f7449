"""Linkability on the emulated network, small and fast: a seeded workload replayed through
the real relay and the real ECH front door, then attacked by the linkers.

Bound tested for cfr-flow: the same-address linker's precision may not exceed the
pool-sharing chance level computed from the ground truth (same-household pairs / all pairs,
what a linker independent of the truth achieves) by more than three binomial standard
errors of the pairs it predicted: precision <= c + 3 * sqrt(c (1 - c) / predicted_pairs).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from benchmarks.environment import BenchEnv
from benchmarks.linkability import linkers
from benchmarks.linkability.metrics import chance_precision, pairwise_scores
from benchmarks.linkability.observations import join_records, trait_vector
from benchmarks.linkability.simulator import SimParams, apply_policy, trace_from_flows
from benchmarks.linkability_run import (
    POPULATION_HOST,
    LinkabilityParams,
    _add_device_addresses,
    _workloads,
    replay,
)
from testbed.network import Network
from testbed.scenario import Scenario
from testbed.services import ech as ech_service
from tests.conftest import require_root

PARAMS = LinkabilityParams(households=20, duration_s=15, pool_size=8, epoch_s=60,
                           sessions_per_device_per_hour=900, model="none")


def _load(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def replays(tmp_path_factory):
    """route and cfr-flow with resumption on, cfr-flow with resumption off."""
    require_root()
    out = tmp_path_factory.mktemp("linkability")
    scenario = replace(Scenario(), subscribers=1, population=PARAMS.households)
    results = {}
    with Network(scenario) as net:
        workload, _temp = _workloads(replace(PARAMS), net, scenario.subscribers)
        # few sites, so devices come back to the same site and can present a ticket
        workload = _few_sites(workload)
        _add_device_addresses(net, (workload,))
        for resumption, policies in ((True, ("route", "cfr-flow")), (False, ("cfr-flow",))):
            env = BenchEnv(net, net.registry.make_tmpdir("lk"), pool_size=PARAMS.pool_size,
                           epoch_s=PARAMS.epoch_s, resumption=resumption,
                           named_sites=tuple(workload.params.sensitive_sites))
            env.start(["direct"])
            try:
                loader = ech_service.LoadGenerator(net[POPULATION_HOST], dns=env.dns.address,
                                                   ca_file=env.ca_file, workdir=out / "load")
                for policy in policies:
                    name = f"{policy}-{'resume' if resumption else 'full'}"
                    truth, front, counts = replay(env, loader, policy, workload.records, out,
                                                  name, PARAMS.duration_s)
                    assert counts["failed"] == 0 and counts["seen"] == counts["flows"], counts
                    ft, cov = join_records(_load(truth), _load(front),
                                           workload.params.sensitive_sites)
                    results[name] = ft.labelled()
            finally:
                env.stop()
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
