"""Privacy epochs and the key schedule.

An epoch number is wall-clock time divided by the epoch length, plus the number of forced
rotations (`cfr rotate`), so every process computes the same number without talking to the
daemon. Per epoch, the jhash seed and the IPv6 alias addresses are derived from a secret key
with HMAC-SHA256: deterministic for whoever holds the key (restart and re-apply within an
epoch reproduce the same mapping), unpredictable to anyone else (the front door cannot
compute next epoch's seed or aliases from what it saw).

Limit, documented: jhash itself is not a PRF. Someone who knows subscriber addresses *and*
sees their aliases could search the 32-bit seed space offline; the front door does not know
subscriber addresses, and a seed is only valid for one epoch.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Sequence

SEED_LABEL = b"cfr/epoch-seed/v1/"
CGN_LABEL = b"cfr/cgn-seed/v1"
V6_LABEL = b"cfr/v6-alias/v1/"


def epoch_number(now: float, length: float, forced: int = 0) -> int:
    return int(math.floor(now / length)) + forced


def seconds_to_next(now: float, length: float) -> float:
    return length - (now % length)


def _prf(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def epoch_seed(key: bytes, epoch: int) -> int:
    """32-bit jhash seed for `epoch` (the kernel's jhash takes a u32 seed)."""
    return int.from_bytes(_prf(key, SEED_LABEL + epoch.to_bytes(8, "big", signed=True))[:4], "big")


def cgn_seed(key: bytes) -> int:
    """Fixed seed for CGN paired pooling: stable across restarts, secret like the rest."""
    return int.from_bytes(_prf(key, CGN_LABEL)[:4], "big")


def v6_aliases(key: bytes, generation: int, prefixes: Sequence[ipaddress.IPv6Network],
               count: int) -> list[ipaddress.IPv6Address]:
    """`count` distinct alias addresses spread over `prefixes`, derived for `generation`.

    Interface identifiers come from the PRF, so neither the alias prefix structure nor the
    addresses reveal anything about subscribers, and each epoch gets fresh addresses. The
    all-zero host part (subnet-router anycast) is never used.
    """
    out: list[ipaddress.IPv6Address] = []
    seen: set[ipaddress.IPv6Address] = set()
    gen = generation.to_bytes(8, "big", signed=True)
    i = 0
    attempt = 0
    while len(out) < count:
        pfx = prefixes[i % len(prefixes)]
        host_bits = 128 - pfx.prefixlen
        h = int.from_bytes(_prf(key, V6_LABEL + gen + i.to_bytes(4, "big")
                                + attempt.to_bytes(4, "big")), "big")
        host = h % ((1 << host_bits) - 1) + 1
        addr = ipaddress.IPv6Address(int(pfx.network_address) | host)
        if addr in seen:
            attempt += 1
            if attempt > 1000:
                raise ValueError("alias prefixes too small for the pool size")
            continue
        seen.add(addr)
        out.append(addr)
        i += 1
        attempt = 0
    return out
