"""Validation that can fail: negative controls, and the model follows the relay's rules.

Negative controls: a ``cfr-flow`` model against a ``cfr-epoch`` trace (and the reverse) and
a port-block CGN against the relay's CGN without blocks must FAIL the comparison; the same
policy under another seed must pass. The model's IPv6 alias rotation and CGN mapping are
checked against what ``relay/policies.py`` generates for the same policy.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.linkability.flows import FlowTable
from benchmarks.linkability.simulator import SimParams, Trace, apply_policy, generate_trace
from benchmarks.linkability.validation import compare
from relay import config
from relay.policies import alias_v4_rules, alias_v6_rules, plan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BASE = Path(__file__).resolve().parent / "golden" / "relay" / "base.toml"
KEY = bytes(range(32))
P = SimParams(
    subscribers=300, duration_s=3600, pool=16, epoch_s=300, seed=2, v6_fraction=0.7, sites=200
)
Q = replace(P, seed=9)  # "the emulation": same policy semantics, another random draw


@pytest.fixture(scope="module")
def traces() -> tuple[Trace, Trace]:
    return generate_trace(P), generate_trace(Q)


def _failed(rows: list[dict]) -> set[str]:
    return {r["statistic"] for r in rows if not r["passed"]}


@pytest.mark.parametrize("policy", ["cfr-flow", "cfr-epoch", "cgn", "route"])
def test_same_policy_passes(traces, policy: str) -> None:
    emu, mod = traces
    rows = compare(apply_policy(emu, policy, Q), apply_policy(mod, policy, P), P.epoch_s)
    assert rows and not _failed(rows), rows


@pytest.mark.parametrize(
    ("relay_ran", "model_says"), [("cfr-epoch", "cfr-flow"), ("cfr-flow", "cfr-epoch")]
)
def test_cfr_policies_swapped_fail(traces, relay_ran: str, model_says: str) -> None:
    emu, mod = traces
    rows = compare(apply_policy(emu, relay_ran, Q), apply_policy(mod, model_says, P), P.epoch_s)
    assert {"alias_consistency", "households_per_cell"} <= _failed(rows)


def test_cgn_with_and_without_port_blocks_fail(traces) -> None:
    emu, mod = traces
    relay_like = apply_policy(emu, "cgn", Q)  # the relay: no port blocks
    blocks = apply_policy(mod, "cgn", replace(P, cgn_block=1024))
    assert "port_block_share" in _failed(compare(relay_like, blocks, P.epoch_s))
    assert "port_block_share" in _failed(compare(blocks, relay_like, P.epoch_s))


def _cfg(policy: str) -> config.Config:
    data = tomllib.loads(BASE.read_text())
    data["relay"]["policy"] = policy
    return config.from_dict(data, source="example")


def test_model_cgn_matches_the_relay(traces) -> None:
    cfg = _cfg("cgn")
    p = plan(cfg, KEY, 7)
    assert alias_v6_rules(cfg, p) == []  # IPv6 routed under cgn
    snat = alias_v4_rules(cfg, p)[0][1]["snat"]
    assert "jhash" in snat["addr"]["map"]["key"]  # one address per subscriber by hash
    assert snat["port"]["range"] == [cfg.port_min, cfg.port_max]  # no per-subscriber blocks
    assert P.cgn_block is None  # the model's default CGN is the relay's
    emu, _ = traces
    ft = apply_policy(emu, "cgn", P)
    v6 = ft.family == 6
    assert (ft.addr[v6] == emu.own_addr[v6]).all()
    hh_addr = {}
    for h, a in zip(ft.household[~v6], ft.addr[~v6], strict=True):
        assert hh_addr.setdefault(h, a) == a  # stable per subscriber


@pytest.mark.parametrize("policy", ["cfr-flow", "cfr-epoch"])
def test_model_v6_alias_rotation_matches_the_relay(traces, policy: str) -> None:
    cfg = _cfg(policy)
    relay_7, relay_8 = plan(cfg, KEY, 7), plan(cfg, KEY, 8)
    assert not set(relay_7.v6_pool) & set(relay_8.v6_pool)  # fresh IPv6 aliases per epoch
    assert relay_7.v4_pool == relay_8.v4_pool  # the IPv4 pool stays
    emu, _ = traces
    ft = apply_policy(emu, policy, P)
    epoch = np.floor(ft.ts / P.epoch_s).astype(np.int64)
    for fam, fresh in ((6, True), (4, False)):
        m = ft.family == fam
        sets = [set(ft.addr[m & (epoch == e)].tolist()) for e in np.unique(epoch[m])]
        overlaps = [bool(a & b) for a, b in zip(sets, sets[1:], strict=False)]
        assert not any(overlaps) if fresh else all(overlaps), (fam, overlaps)


def test_one_workload_drives_model_and_emulation() -> None:
    """The model takes the emulation's own workload records; signatures then separate
    cfr-epoch from cfr-flow on that workload too."""
    from benchmarks.linkability.simulator import trace_from_workload
    from benchmarks.linkability.workload import WorkloadParams, generate_workload

    w = generate_workload(
        WorkloadParams(households=80, duration_s=1800, seed=4, sessions_per_device_per_hour=60)
    )
    tr = trace_from_workload(w, base_ts=1.7e9)
    assert len(tr) == len(w.records)
    assert tr.trait.sum() == sum(h.trait for h in w.households)
    route = apply_policy(tr, "route", SimParams(pool=8))
    sources = {r["source"] for r in w.records}
    assert len(np.unique(route.addr)) == len(sources)  # route keeps every own address
    p = SimParams(pool=8, epoch_s=60.0, seed=1)
    q = replace(p, seed=2)
    same = compare(apply_policy(tr, "cfr-epoch", p), apply_policy(tr, "cfr-epoch", q), 60.0)
    assert not _failed(same)
    swapped = compare(apply_policy(tr, "cfr-epoch", p), apply_policy(tr, "cfr-flow", q), 60.0)
    assert "alias_consistency" in _failed(swapped)


def _v6_table(ts: list[float], addr: list[int]) -> FlowTable:
    n = len(ts)
    z = np.zeros(n, dtype=np.int64)
    return FlowTable(ts=np.asarray(ts, dtype=float), household=np.arange(n) % 3, device=z,
                     site=z, sensitive=z.astype(bool), family=np.full(n, 6), port=z,
                     addr=np.asarray(addr, dtype=np.int64), prefix={}, psk=z - 1)


def test_turnover_ignores_flows_straddling_a_boundary_but_sees_persisting_aliases() -> None:
    from benchmarks.linkability.validation import GUARD_S, household_statistics

    epoch = 60.0
    # fresh aliases each epoch; one flow logged 0.1 s after the boundary with the old alias
    fresh = _v6_table([10, 20, 30, 60.1, 70, 80], [1, 1, 1, 1, 2, 2])
    num, den = household_statistics(fresh, epoch)["v6_alias_turnover"]
    assert num.sum() / den.sum() == 1.0
    assert GUARD_S > 0.1
    # an alias that persists into the middle of the next epoch is not turned over
    kept = _v6_table([10, 20, 30, 90, 70, 80], [1, 1, 1, 1, 2, 2])
    num, den = household_statistics(kept, epoch)["v6_alias_turnover"]
    assert num.sum() / den.sum() == 0.5


def _keyed(trace: Trace, policy: str, p: SimParams):
    """The model's flows of ``trace`` under ``policy``, key ``k`` as the analysis draws it."""
    from benchmarks.linkability.validation import KEY_SEED_STRIDE

    return lambda k: apply_policy(trace, policy, replace(p, seed=p.seed + KEY_SEED_STRIDE * k))


def _width(r: dict, key: str = "difference_ci") -> float:
    return r[key][1] - r[key][0]


@pytest.mark.parametrize("policy", ["cfr-flow", "cfr-epoch", "cgn"])
def test_paired_key_widened_check_passes_the_true_policy(traces, policy: str) -> None:
    """Model against model on the *same* trace (as analyse_emulation runs it: the model on
    the emulation's own flows), the "relay" under another key: the true policy passes, and
    every row says it was paired and carries the key sd."""
    from benchmarks.linkability.validation import compare_with_keys

    emu_trace, _ = traces
    relay_like = apply_policy(emu_trace, policy, replace(P, seed=1000))
    rows = compare_with_keys(
        relay_like, _keyed(emu_trace, policy, P), P.epoch_s, emu_trace.trait.size, keys=10
    )
    assert rows and not _failed(rows), rows
    assert all(r["paired"] is True and "key_sd" in r for r in rows)
    hpc = next(r for r in rows if r["statistic"] == "households_per_cell")
    assert hpc["key_sd"] > 0  # which households share a cell is a key draw
    lo, hi = hpc["difference_ci"]
    assert lo <= hpc["difference_ci_households"][0] and hi >= hpc["difference_ci_households"][1]


@pytest.mark.parametrize(
    ("relay_ran", "model_says"), [("cfr-epoch", "cfr-flow"), ("cfr-flow", "cfr-epoch")]
)
def test_paired_check_fails_swapped_cfr_policies_with_a_narrower_ci(
    traces, relay_ran: str, model_says: str
) -> None:
    """Same households on both sides: the swapped CFR policies fail the paired, key-widened
    check, and on the same data the paired household CI is narrower than the unpaired one
    (two independent household resamples), which is what let a wrong model pass before."""
    from benchmarks.linkability.validation import compare_with_keys

    emu_trace, _ = traces
    n = emu_trace.trait.size
    relay_like = apply_policy(emu_trace, relay_ran, replace(P, seed=1000))
    model_for = _keyed(emu_trace, model_says, P)
    paired = {
        r["statistic"]: r for r in compare_with_keys(relay_like, model_for, P.epoch_s, n, keys=10)
    }
    unpaired = {r["statistic"]: r for r in compare(relay_like, model_for(0), P.epoch_s)}
    assert {"alias_consistency", "households_per_cell"} <= _failed(list(paired.values()))
    s = "households_per_cell"
    assert not unpaired[s]["paired"]
    assert _width(paired[s], "difference_ci_households") < _width(unpaired[s])


def test_paired_ci_is_narrower_where_both_sides_share_the_households(traces) -> None:
    """cfr-flow against cfr-flow on one trace: the household variation of households per
    cell is shared, so even widened by the key sd the paired CI is far narrower than the
    unpaired one; statistics both sides share exactly (cgn's own IPv6 addresses) have a
    zero-width paired CI where the unpaired one is not."""
    from benchmarks.linkability.validation import compare_with_keys

    emu_trace, _ = traces
    n = emu_trace.trait.size
    for policy, stat, factor in (
        ("cfr-flow", "households_per_cell", 0.75),
        ("cgn", "v6_alias_turnover", 0.01),
    ):
        relay_like = apply_policy(emu_trace, policy, replace(P, seed=1000))
        model_for = _keyed(emu_trace, policy, P)
        paired = {
            r["statistic"]: r
            for r in compare_with_keys(relay_like, model_for, P.epoch_s, n, keys=10)
        }
        unpaired = {r["statistic"]: r for r in compare(relay_like, model_for(0), P.epoch_s)}
        assert _width(paired[stat]) < factor * _width(unpaired[stat]), (policy, stat)


def test_widening_by_key_sd_keeps_the_household_ci_and_redecides() -> None:
    from benchmarks.linkability import validation

    rows = [
        {
            "statistic": "x",
            "difference": 0.0,
            "difference_ci": [-0.01, 0.01],
            "margin": 0.05,
            "passed": True,
        }
    ]
    validation.widen_by_key_sd(rows, {"x": 0.1}, 0.95)
    assert rows[0]["key_sd"] == 0.1 and rows[0]["difference_ci_households"] == [-0.01, 0.01]
    assert rows[0]["difference_ci"][0] < -0.19 and rows[0]["passed"] is True  # reaches 0.05


def test_analysis_signature_rows_are_paired_and_key_widened(tmp_path: Path) -> None:
    """analyse_emulation's signature check runs paired (the model on the emulation's own
    flows) with the key sd, and its markdown says so."""
    from benchmarks.linkability.analysis import analyse_emulation

    golden = Path(__file__).resolve().parent / "golden" / "linkability"
    gt, fd = golden / "ground_truth.jsonl", golden / "frontdoor.jsonl"
    res = analyse_emulation(
        {"cfr-flow": gt},
        {"cfr-flow": fd},
        golden / "households.json",
        tmp_path,
        model_params=SimParams(pool=4, epoch_s=60.0),
        signature_keys=4,
    )
    rows = res["validation_signatures"]["cfr-flow"]
    assert rows and all(r["paired"] is True and "key_sd" in r for r in rows), rows
    md = (tmp_path / "linkability.md").read_text()
    assert "paired household bootstrap" in md and "key-draw variance" in md
