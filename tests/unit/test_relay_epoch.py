"""The epoch key schedule: deterministic for a key, different across epochs, unpredictable
without the key."""

from __future__ import annotations

import ipaddress

import pytest

from relay import epoch as ep
from relay.state import StateDir

K1 = bytes(range(32))
K2 = bytes(range(1, 33))
PFX = [ipaddress.IPv6Network("2001:2:0:a000::/52")]


def test_seed_is_deterministic_for_a_key() -> None:
    assert ep.epoch_seed(K1, 5) == ep.epoch_seed(bytes(range(32)), 5)
    assert ep.v6_aliases(K1, 5, PFX, 16) == ep.v6_aliases(K1, 5, PFX, 16)


def test_seed_differs_across_epochs() -> None:
    seeds = [ep.epoch_seed(K1, e) for e in range(1000)]
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2**32 for s in seeds)


def test_seed_unpredictable_without_key() -> None:
    """Another key gives unrelated seeds; consecutive seeds show no arithmetic structure;
    each output bit is balanced (a keyed PRF, not a counter)."""
    a = [ep.epoch_seed(K1, e) for e in range(2000)]
    b = [ep.epoch_seed(K2, e) for e in range(2000)]
    assert sum(x == y for x, y in zip(a, b, strict=True)) == 0
    diffs = {(a[i + 1] - a[i]) % 2**32 for i in range(len(a) - 1)}
    assert len(diffs) > 1990
    for bit in range(32):
        ones = sum((s >> bit) & 1 for s in a)
        assert 850 < ones < 1150, (bit, ones)  # ~ N(1000, 22): > 6 sigma margin


def test_cgn_seed_is_fixed_per_key_and_secret() -> None:
    assert ep.cgn_seed(K1) == ep.cgn_seed(K1) != ep.cgn_seed(K2)
    assert ep.cgn_seed(K1) not in {ep.epoch_seed(K1, e) for e in range(100)}


def test_v6_aliases_inside_prefix_distinct_and_fresh_per_epoch() -> None:
    e1 = ep.v6_aliases(K1, 1, PFX, 64)
    e2 = ep.v6_aliases(K1, 2, PFX, 64)
    assert len(set(e1)) == 64 and not set(e1) & set(e2)
    for a in e1 + e2:
        assert a in PFX[0] and a != PFX[0].network_address
    assert ep.v6_aliases(K2, 1, PFX, 64) != e1


def test_v6_aliases_spread_over_several_prefixes() -> None:
    pfx = [ipaddress.IPv6Network("2001:2:0:a000::/64"), ipaddress.IPv6Network("2001:2:0:b000::/64")]
    got = ep.v6_aliases(K1, 0, pfx, 10)
    assert sum(a in pfx[0] for a in got) == 5 and sum(a in pfx[1] for a in got) == 5


def test_tiny_prefix_exhaustion_is_an_error() -> None:
    with pytest.raises(ValueError):
        ep.v6_aliases(K1, 0, [ipaddress.IPv6Network("2001:2::/126")], 5)


def test_epoch_numbers_and_forced_rotation() -> None:
    assert ep.epoch_number(3599.9, 3600) == 0
    assert ep.epoch_number(3600.0, 3600) == 1
    assert ep.epoch_number(3600.0, 3600, forced=3) == 4
    assert ep.seconds_to_next(3500, 3600) == pytest.approx(100)


def test_state_dir_key_created_once_with_private_mode(tmp_path) -> None:
    sd = StateDir(tmp_path / "s")
    k = sd.key()
    assert len(k) == 32 and sd.key() == k
    assert oct((tmp_path / "s" / "epoch.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == "0o700"
    assert sd.forced_rotations() == 0 and sd.bump_rotations() == 1 and sd.forced_rotations() == 1
