"""Fingerprint linkers on planted structure: front-door records as echd logs them, joined
with ground truth by ``observations.join_records``, aliases drawn as cfr-flow draws them."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.linkability import fingerprints as fp
from benchmarks.linkability.metrics import chance_precision, pairwise_scores
from benchmarks.linkability.observations import fingerprint_columns, join_records

PROFILES = {
    "linux": {"syn": {"ttl": 62, "window": 64240, "options": "mss,sok,ts,nop,ws", "mss": 1460,
                      "wscale": 7}, "ja4": "t13d0312h2_aaaaaaaaaaaa_bbbbbbbbbbbb",
              "tls_groups": "11ec,001d", "h2_settings": "2:0;4:4194304|1073741824"},
    "win": {"syn": {"ttl": 126, "window": 65535, "options": "mss,nop,ws,nop,nop,sok",
                    "mss": 1440, "wscale": 8}, "ja4": "t13d1110h1_cccccccccccc_dddddddddddd",
            "tls_groups": "0017,001d", "h2_settings": None},
}


def trace(households: int = 40, flows_each: int = 12, stable_ts: frozenset = frozenset(),
          counter_ipid: frozenset = frozenset(), seed: int = 3) -> tuple[list, list]:
    """Ground truth and front-door records: household h uses profile linux if h is even,
    win if odd; every flow gets a random alias of a pool of 8 (cfr-flow); households in
    ``stable_ts`` keep one TCP timestamp offset, the others draw one per connection;
    households in ``counter_ipid`` send IP IDs from one counter."""
    rng = np.random.default_rng(seed)
    gt, fd = [], []
    offsets = rng.integers(0, 2**32, households)
    counters = rng.integers(0, 65536, households)
    n = 0
    for h in range(households):
        prof = PROFILES["linux" if h % 2 == 0 else "win"]
        for t in np.sort(rng.uniform(0, 600, flows_each)):
            n += 1
            cr = f"{n:064x}"
            ts = 1.7e9 + float(t)
            rtt = 24000 + int(rng.integers(0, 800))
            off = offsets[h] if h in stable_ts else rng.integers(0, 2**32)
            syn = dict(prof["syn"], ip_version=4)
            syn["tsval"] = int((off + round((ts - rtt / 1e6) * 1000)) % 2**32)
            if h in counter_ipid:
                counters[h] = (counters[h] + rng.integers(1, 20)) % 65536
                syn["ip_id"] = int(counters[h])
            else:
                syn["ip_id"] = int(rng.integers(0, 65536))
            gt.append({"client_random": cr, "household": f"h{h}", "device": f"h{h}-d0",
                       "site": f"site-{n % 7:04d}.example", "local_addr": f"198.18.1.{h}"})
            fd.append({"client_random": cr, "ts": ts, "peer_addr": f"198.19.9.{rng.integers(8)}",
                       "peer_port": int(rng.integers(1024, 65536)), "syn": syn, "rtt_us": rtt,
                       "ja4": prof["ja4"], "tls_groups": prof["tls_groups"],
                       "h2_settings": prof["h2_settings"]})
    return gt, fd


def scores(ft, linker):
    return pairwise_scores(ft.household, linker(ft))


def test_device_classes_split_the_population_under_cfr_flow() -> None:
    ft, _ = join_records(*trace())
    chance = chance_precision(ft.household)
    for signal in ("ttl", "syn", "ja4", "groups"):
        s = scores(ft, fp.categorical(signal))
        # two equally common classes: every class pair is truly linked with about twice the
        # chance probability, and every true pair is found
        assert s.recall == 1.0
        assert s.precision == pytest.approx(2 * chance, rel=0.1)
    # HTTP/2 SETTINGS: only the h2 class has them; the others are singletons
    h2 = fp.categorical("h2")(ft)
    win = np.array([int(ft.names["household"][h][1:]) % 2 == 1 for h in ft.household])
    assert np.unique(h2[win]).size == win.sum()
    assert np.unique(h2[~win]).size == 1


def test_stable_timestamp_offset_links_a_household_behind_cfr_flow() -> None:
    ft, _ = join_records(*trace(stable_ts=frozenset({4, 5})))
    labels = fp.ts_offset()(ft)
    s = pairwise_scores(ft.household, labels)
    planted = np.isin(ft.household, [ft.names["household"].index(h) for h in ("h4", "h5")])
    # every pair of a planted household is linked, nothing else is
    assert s.precision == 1.0
    assert s.true_positive_pairs == 2 * (12 * 11 // 2)
    assert np.unique(labels[~planted]).size == (~planted).sum()
    both = fp.fingerprint_linkers()["fp+combined&tsoffset"](ft)
    assert pairwise_scores(ft.household, both).precision == 1.0


def test_random_offsets_link_nothing_and_random_ip_ids_stay_at_chance() -> None:
    ft, _ = join_records(*trace())
    assert scores(ft, fp.ts_offset()).predicted_pairs <= 3
    # random IDs do fall into each other's counter window now and then: at chance level
    s = scores(ft, fp.ip_id_counter())
    c = chance_precision(ft.household)
    assert s.precision <= c + 3 * np.sqrt(c * (1 - c) / max(s.predicted_pairs, 1))


def test_ip_id_counter_chains_a_counting_host() -> None:
    ft, _ = join_records(*trace(counter_ipid=frozenset({7})))
    linker = fp.ip_id_counter(max_gap_s=300)  # the planted host's flows are ~50 s apart
    h7 = ft.household == ft.names["household"].index("h7")
    labels = linker(ft)
    # the counting host's 12 flows end up (almost) in one chain, which few strangers join
    main = np.bincount(labels[h7]).argmax()
    assert (labels[h7] == main).sum() >= 10
    assert (labels == main).sum() - (labels[h7] == main).sum() <= 2


def test_missing_signals_link_nothing_and_columns_default_to_minus_one() -> None:
    gt, fd = trace(households=4, flows_each=3)
    for r in fd:
        for k in ("syn", "rtt_us", "ja4", "tls_groups", "h2_settings"):
            r.pop(k)
    ft, _ = join_records(gt, fd)
    assert not fp.has_fingerprints(ft)
    for name, linker in fp.fingerprint_linkers().items():
        if name.startswith("fp+"):
            continue
        assert np.unique(linker(ft)).size == len(ft), name


def test_fingerprint_columns_codes() -> None:
    rows = [{"ts": 100.0, "rtt_us": 20000, "syn": {"ttl": 64, "tsval": 5000, "ip_id": 9,
                                                   "window": 1, "options": "mss", "mss": 1460,
                                                   "wscale": None}, "ja4": "x"},
            {"ts": 101.0, "rtt_us": 20500, "syn": {"ttl": 64, "tsval": 6000}, "ja4": "x"},
            {"ts": 101.0}]
    cols = fingerprint_columns(rows)
    off = cols[fp.COLUMNS["tsoffset"]]
    # TSval - (ts - rtt) * 1000, mod 2^32: both rows carry the same offset within 1 ms
    assert off[0] == (5000 - 99980) % 2**32 and abs(int(off[1]) - int(off[0])) <= 1
    assert off[2] == -1
    assert list(cols[fp.COLUMNS["ttl"]]) == [64, 64, -1]
    assert list(cols[fp.COLUMNS["ja4"]]) == [0, 0, -1]
    assert list(cols[fp.COLUMNS["ipid"]]) == [9, -1, -1]
    assert cols[fp.COLUMNS["syn"]][0] != cols[fp.COLUMNS["syn"]][1]
    assert fp.rtt_bucket(20000) == fp.rtt_bucket(20500) != fp.rtt_bucket(2000)
