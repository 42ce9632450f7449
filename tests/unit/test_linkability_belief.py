"""The adversary's belief and time to profiling, on model traces with known structure."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.linkability.adversary import (
    TraitSpec,
    adversary_cells,
    cell_key,
    infer_epoch,
)
from benchmarks.linkability.belief import clustering_scores, sender_posteriors
from benchmarks.linkability.profiling import profiling_curve, profiling_plot
from benchmarks.linkability.simulator import SimParams, Trace, apply_policy, generate_trace

P = SimParams(subscribers=400, duration_s=3 * 3600, pool=16, epoch_s=300, seed=3, v6_fraction=0.7)


@pytest.fixture(scope="module")
def trace() -> Trace:
    return generate_trace(P)


def _belief(trace: Trace, policy: str) -> dict:
    ft = apply_policy(trace, policy, P)
    named = ~(trace.sensitive | trace.weak_signal(P))
    cells = adversary_cells(ft, policy, infer_epoch(ft, named, key=cell_key(ft, policy)))
    return sender_posteriors(ft, cells, named, resamples=50)


def test_belief_separates_route_from_cfr_flow(trace: Trace) -> None:
    route, flow, epoch = (_belief(trace, p) for p in ("route", "cfr-flow", "cfr-epoch"))
    assert route["beta"] > 0.9 and flow["beta"] < 0.3
    for fam in ("ipv4", "ipv6"):
        # route: the cell names the sender; cfr-flow: anyone active could have sent it
        assert route[fam]["q_true_mean"] > 0.9
        assert flow[fam]["degree_mean"] > 0.85
        assert flow[fam]["q_true_mean"] < 0.05
        lo, hi = flow[fam]["entropy_bits_mean_ci"]
        assert lo <= flow[fam]["entropy_bits_mean"] <= hi
        # cfr-epoch sits between: the epoch alias narrows the set, it does not name
        assert (
            route[fam]["entropy_bits_mean"]
            < epoch[fam]["entropy_bits_mean"]
            < flow[fam]["entropy_bits_mean"]
        )


def test_clustering_scores_are_chance_corrected() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 200, 5000)
    exact = clustering_scores(truth, truth * 7 + 3, resamples=5)
    assert exact["ari"] == pytest.approx(1.0) and exact["ami"] == pytest.approx(1.0)
    rand = clustering_scores(truth, rng.integers(0, 50, 5000), resamples=5)
    assert abs(rand["ari"]) < 0.01 and abs(rand["ami"]) < 0.03
    assert rand["ari_ci"][0] <= 0.0 + 0.01


def test_time_to_profiling_route_soon_cfr_flow_never(trace: Trace, tmp_path) -> None:
    times = [1800.0, 3600.0, 3 * 3600.0]
    curves = {}
    for pol in ("route", "cfr-flow"):
        ft = apply_policy(trace, pol, P)

        def specs(mask: np.ndarray) -> list[TraitSpec]:
            return [TraitSpec("strong", trace.trait, trace.sensitive[mask])]

        curves[pol] = profiling_curve(ft, specs, pol, times)
    route = curves["route"]["strong"]
    assert route["time_to_profiling_s"]["point"] is not None
    assert route["time_to_profiling_s"]["point"] <= 3600.0
    tprs = [pt["named_household"]["tpr_at_fpr"] for pt in route["points"]]
    assert tprs[-1] >= tprs[0]
    assert curves["cfr-flow"]["strong"]["time_to_profiling_s"]["point"] is None
    assert curves["cfr-flow"]["strong"]["oracle_time_to_profiling_s"]["point"] is not None
    assert profiling_plot(curves, tmp_path / "p.png").stat().st_size > 0
