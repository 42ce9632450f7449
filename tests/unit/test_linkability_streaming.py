"""The streamed day model: same answers as the adversary on its windows, bounded memory."""

from __future__ import annotations

from benchmarks.linkability.simulator import SimParams
from benchmarks.linkability.streaming import StreamParams, stream_profile


def test_streamed_day_small() -> None:
    sp = StreamParams(
        base=SimParams(
            subscribers=3000, duration_s=4 * 3600, v6_fraction=0.7, epoch_s=300, pool=40, seed=2
        ),
        window_s=3600,
        policies=("route", "cfr-flow", "cfr-epoch"),
        checkpoints_h=(1, 4),
        workers=1,
        resamples=100,
    )
    r = stream_profile(sp)["policies"]
    assert r["cfr-epoch"]["epoch"]["by_family"] == {4: 300.0, 6: 300.0}
    for pol in r:
        pts = r[pol]["curves"]["strong"]["points"]
        assert [p["observed_s"] for p in pts] == [3600.0, 4 * 3600.0]
    route = r["route"]["curves"]["strong"]["points"][-1]
    assert abs(route["named_household"]["auc"] - route["oracle"]["auc"]) < 0.01
    flow = r["cfr-flow"]["curves"]["strong"]["points"][-1]["named_household"]
    assert flow["auc_ci"][0] <= 0.5 + 0.05  # chance or the timing signal only
    epoch = r["cfr-epoch"]["curves"]["strong"]["points"]
    # evidence accumulates: 4 h of cfr-epoch tells more than 1 h
    assert epoch[-1]["named_household"]["auc"] > epoch[0]["named_household"]["auc"]
    assert epoch[-1]["named_household"]["auc_ci"][0] > 0.5
