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


def _reference_day(sp: StreamParams, policy: str) -> dict:
    """The streamed day computed the plain way: per-policy rates and oracle, no sharing."""
    import numpy as np

    from benchmarks.linkability.adversary import (
        adversary_cells,
        cell_key,
        finish_scores,
        infer_epoch,
        oracle_components,
        score_components,
        true_rates,
    )
    from benchmarks.linkability.metrics import roc_auc
    from benchmarks.linkability.simulator import apply_policy
    from benchmarks.linkability.streaming import _add, _households, _weak_signal, _window

    p = sp.base
    hh = _households(p)
    n = p.subscribers
    acc: dict = {}
    orc: dict = {}
    rates: dict = {}
    epoch = None
    for w in range(int(np.ceil(p.duration_s / sp.window_s))):
        tr = _window(p, hh, w, w * sp.window_s, sp.window_s)
        sig = {"strong": tr.sensitive, "weak": _weak_signal(p, tr.site)}
        named = ~(sig["strong"] | sig["weak"])
        ft = apply_policy(tr, policy, p)
        if epoch is None:
            epoch = infer_epoch(ft, named, key=cell_key(ft, policy))
        cells = adversary_cells(ft, policy, epoch)
        for name, s in sig.items():
            truth = hh.trait if name == "strong" else hh.weak
            rates.setdefault(name, true_rates(ft, truth, s, named))
            acc[name] = _add(acc.get(name), score_components(ft, cells, s, named, n, rates[name]))
            orc[name] = _add(orc.get(name), oracle_components(ft, s, named, n, rates[name]))
    out = {}
    for name, truth in (("strong", hh.trait), ("weak", hh.weak)):
        score, ev = finish_scores(acc[name])
        oscore, oev = finish_scores(orc[name])
        ev &= oev
        out[name] = (roc_auc(score[ev], truth[ev]), roc_auc(oscore[ev], truth[ev]))
    return out


def test_streamed_day_equals_plain_computation() -> None:
    """Pins the speed-ups (shared rates, oracle and named grouping; lean window columns;
    small code offsets): the streamed AUCs equal the plain per-policy computation exactly."""
    sp = StreamParams(
        base=SimParams(
            subscribers=2000, duration_s=2 * 3600, v6_fraction=0.7, epoch_s=300, pool=30, seed=5
        ),
        window_s=3600,
        policies=("route", "cgn", "cfr-flow", "cfr-epoch"),
        checkpoints_h=(2,),
        workers=1,
        resamples=0,
    )
    r = stream_profile(sp)["policies"]
    for pol in sp.policies:
        ref = _reference_day(sp, pol)
        for name, (auc, oauc) in ref.items():
            last = r[pol]["curves"][name]["points"][-1]
            assert last["named_household"]["auc"] == auc, (pol, name)
            assert last["oracle"]["auc"] == oauc, (pol, name)


def test_shared_named_groups_give_the_same_components() -> None:
    import numpy as np

    from benchmarks.linkability.adversary import (
        adversary_cells,
        named_groups,
        score_components,
        true_rates,
    )
    from benchmarks.linkability.simulator import apply_policy
    from benchmarks.linkability.streaming import _households, _weak_signal, _window

    p = SimParams(subscribers=1500, duration_s=3600, v6_fraction=0.7, epoch_s=300, pool=20)
    hh = _households(p)
    tr = _window(p, hh, 0, 0.0, 3600.0)
    weak = _weak_signal(p, tr.site)
    named = ~(tr.sensitive | weak)
    for pol in ("route", "cfr-flow", "cfr-epoch"):
        ft = apply_policy(tr, pol, p)
        cells = adversary_cells(ft, pol, {4: 300.0, 6: 300.0})
        g = named_groups(ft, cells, named, p.subscribers)
        for sig, truth in ((tr.sensitive, hh.trait), (weak, hh.weak)):
            rates = true_rates(ft, truth, sig, named)
            a = score_components(ft, cells, sig, named, p.subscribers, rates)
            b = score_components(ft, cells, sig, named, p.subscribers, rates, groups=g)
            for k in a:
                assert np.array_equal(a[k], b[k]), (pol, k)


def test_translated_prefix_codes_keep_the_order_of_the_old_offset() -> None:
    """cgn's translated IPv4 /56 codes moved from addr + 2^40 to just above the own codes:
    the renumbered (dense) codes, hence every cell, must be unchanged."""
    import numpy as np

    from benchmarks.linkability.metrics import dense
    from benchmarks.linkability.simulator import apply_policy
    from benchmarks.linkability.streaming import _households, _window

    p = SimParams(subscribers=1500, duration_s=3600, v6_fraction=0.7, pool=20)
    tr = _window(p, _households(p), 0, 0.0, 3600.0)
    ft = apply_policy(tr, "cgn", p)
    v4 = ft.family == 4
    old = np.where(v4, ft.addr + (1 << 40), tr.own_prefix[56])  # type: ignore[index]
    assert np.array_equal(dense(old)[0], dense(ft.prefix[56])[0])
    assert ft.prefix[56].max() < 4 * len(ft)  # dense() takes its bincount path
