"""The relay lab's throughput verdict (labs.relay_analysis.round_ratios), its per-packet cost
model (throughput_cost_model) and its paired latency difference (half_round_difference):
pure arithmetic, no root.

The verdict decides whether the issue's "cfr-flow >= 0.95 x route" holds, so the cases
that matter are the ones a careless summary gets wrong: a drift inside a round, a
point estimate above the target whose CI is not, and rounds missing a variant.
"""

from __future__ import annotations

import pytest

from labs.relay_analysis import (
    TPUT_TARGET,
    half_round_difference,
    pool_route,
    round_ratios,
    throughput_cost_model,
)
from labs.relay_lab import _order, main


def _rounds(values: list[dict[str, list[float]]]) -> list[tuple[int, str, float]]:
    return [(i, v, x) for i, r in enumerate(values) for v, xs in r.items() for x in xs]


def test_ratio_is_per_round_mean_over_mean() -> None:
    runs = _rounds([{"route": [10.0, 12.0], "cfr-flow": [11.0, 11.0]}] * 6)
    r = round_ratios(runs, "route", "cfr-flow")
    assert r["round_ratios"] == [1.0] * 6
    assert r["estimate"] == 1.0 and r["ci95"] == [1.0, 1.0]
    assert r["verdict"] == "met"


def test_fewer_than_six_rounds_give_no_ci_and_no_verdict() -> None:
    runs = _rounds([{"route": [10.0], "cfr-flow": [10.0]}] * 5)
    r = round_ratios(runs, "route", "cfr-flow")
    assert r["estimate"] == 1.0 and r["ci95"] == [None, None]
    assert r["verdict"] == "inconclusive"


def test_one_wild_round_does_not_decide() -> None:
    # 11 rounds near 0.99 and one collapsed run (a host stall): still met, estimate ~0.99.
    spread = [0.985, 0.99, 0.995, 0.99, 0.98, 1.0, 0.99, 0.985, 0.995, 0.99, 0.99, 0.5]
    runs = _rounds([{"route": [10.0], "cfr-flow": [10 * x]} for x in spread])
    r = round_ratios(runs, "route", "cfr-flow")
    assert r["estimate"] == pytest.approx(0.99, abs=0.003)
    assert r["verdict"] == "met"


def test_linear_drift_within_mirrored_round_cancels() -> None:
    # ABBA with the machine slowing by 1 Gbit/s per run: A at t=0,3, B at t=1,2.
    runs = _rounds([{"route": [20.0, 17.0], "cfr-flow": [19.0, 18.0]}] * 4)
    assert round_ratios(runs, "route", "cfr-flow")["estimate"] == pytest.approx(1.0)


def test_verdict_needs_the_whole_ci() -> None:
    # Median 0.96 but rounds spread down to 0.85: the CI reaches below the target.
    spread = [0.85, 0.88, 0.96, 0.97, 0.98, 1.05]
    runs = _rounds([{"route": [10.0], "cfr-flow": [10 * x]} for x in spread])
    r = round_ratios(runs, "route", "cfr-flow")
    assert r["estimate"] > TPUT_TARGET and r["median"] > TPUT_TARGET
    assert r["ci95"][0] < TPUT_TARGET
    assert r["verdict"] == "inconclusive"


def test_clearly_below_target_is_not_met() -> None:
    runs = _rounds([{"route": [10.0], "cfr-flow": [9.0 + 0.01 * i]} for i in range(8)])
    r = round_ratios(runs, "route", "cfr-flow")
    assert r["ci95"][1] < TPUT_TARGET and r["verdict"] == "not met"


def test_rounds_without_both_variants_are_skipped_and_none_is_an_error() -> None:
    runs = _rounds([{"route": [10.0], "cfr-flow": [9.9]}, {"route": [10.0]}])
    assert len(round_ratios(runs, "route", "cfr-flow")["round_ratios"]) == 1
    with pytest.raises(ValueError, match="no round holds both"):
        round_ratios(_rounds([{"route": [10.0]}]), "route", "cfr-flow")


def test_order_mirrors_every_round() -> None:
    variants = ["route", "cfr-flow", "route-control"]
    seq = _order(variants, 4, seed=1)
    assert len(seq) == 24
    for i in range(0, len(seq), 6):
        block = seq[i:i + 6]
        assert sorted(block[:3]) == sorted(variants)
        assert block[3:] == block[:3][::-1]


def _model_input(ci_hi_v4: float, ci_hi_v6: float, pps: float) -> dict:
    lat = {f: {"ci95": [0.0, hi]} for f, hi in (("v4", ci_hi_v4), ("v6", ci_hi_v6))}
    return {"latency_paired": lat,
            "throughput": {"4_streams": {"packets_per_second": pps}}}


def test_cost_model_uses_the_worse_family_and_half_a_round_trip() -> None:
    # 2 us per round trip (v6, the worse) = 1 us per packet; 50 000 packets/s -> 5% of a core.
    m = throughput_cost_model(_model_input(1.0, 2.0, 50_000))
    assert m is not None
    assert m["extra_us_per_packet_upper"] == pytest.approx(1.0)
    assert m["4_streams"]["predicted_ratio_lower"] == pytest.approx(1 / 1.05)
    assert m["4_streams"]["meets_target"] is True
    assert "1_streams" not in m


def test_cost_model_flags_a_cost_that_would_miss_the_target() -> None:
    m = throughput_cost_model(_model_input(4.0, 4.0, 50_000))  # 2 us/packet -> 10%
    assert m is not None and m["4_streams"]["meets_target"] is False


def test_cost_model_needs_both_measurements() -> None:
    assert throughput_cost_model({"throughput": {}}) is None
    assert throughput_cost_model({"latency_paired": {}}) is None


def test_cost_model_never_predicts_a_gain() -> None:
    m = throughput_cost_model(_model_input(-3.0, -66.0, 50_000))
    assert m is not None
    assert m["extra_us_per_packet_upper"] == 0.0
    assert m["4_streams"]["predicted_ratio_lower"] == 1.0


def test_cost_model_needs_a_latency_ci() -> None:
    assert throughput_cost_model(_model_input(None, 2.0, 50_000)) is None  # type: ignore[arg-type]
    assert throughput_cost_model({"throughput": {}}) is None


@pytest.mark.parametrize("bad", ["0", "-3", "1001", "x"])
def test_bad_rounds_is_a_usage_error_naming_the_range(bad: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["--rounds", bad, "--only", "throughput"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "--rounds" in err and ("1..1000" in err or "not an integer" in err)


def test_cfr_flow_is_compared_with_both_route_variants() -> None:
    # route and route-control are the same set-up: their four runs form the reference.
    runs = _rounds([{"route": [10.0, 10.0], "route-control": [12.0, 12.0],
                     "cfr-flow": [11.0, 11.0]}] * 6)
    pooled = round_ratios(pool_route(runs), "route", "cfr-flow")
    assert pooled["estimate"] == pytest.approx(1.0)
    assert round_ratios(runs, "route", "cfr-flow")["estimate"] == pytest.approx(1.1)
    assert round_ratios(runs, "route", "route-control")["estimate"] == pytest.approx(1.2)


def test_latency_difference_is_paired_within_half_rounds() -> None:
    # A drift of 5 us per half-round hits both variants; the paired difference stays 1.5 us
    route = [40.0 + 5 * k for k in range(6)]
    cfr = [41.5 + 5 * k for k in range(6)]
    d = half_round_difference(route, cfr)
    assert d["diff"] == pytest.approx(1.5)
    assert d["ci95"] == [pytest.approx(1.5), pytest.approx(1.5)]
    assert d["half_round_diffs"] == pytest.approx([1.5] * 6)


def test_latency_difference_needs_six_half_rounds_for_a_ci() -> None:
    d = half_round_difference([40.0, 41.0, 42.0, 43.0], [41.0, 42.0, 43.0, 44.0])
    assert d["diff"] == pytest.approx(1.0)
    assert d["ci95"] == [None, None]
    with pytest.raises(ValueError):
        half_round_difference([40.0, 41.0], [41.0])  # every half-round holds both variants
