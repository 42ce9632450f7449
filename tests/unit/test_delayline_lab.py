"""The delay line's lab (labs/delayline_lab.py): its shaped variant's queue and TCP settings.

Why: the lab's subscriber-rate figure is only meaningful with a queue of at least one
bandwidth-delay product and the congestion control the main benchmark uses; a host whose
default is BBR (new namespaces inherit it) gave 13,000 queue drops and ~925 Mbit/s where
cubic gives a handful."""

from __future__ import annotations

import pytest

from labs.delayline_lab import FRAME_BYTES, _catalogue, _parser, bdp_packets


def test_bdp_of_1_gbit_and_20_ms_is_1652_full_frames() -> None:
    assert bdp_packets(1000, 20) == 1652
    assert bdp_packets(1000, 20) * FRAME_BYTES * 8 >= 1e9 * 0.020  # never below one BDP
    assert bdp_packets(0.001, 1) == 1


def _opts(*argv: str):
    opts = _parser().parse_args(list(argv))
    opts.queue_packets = opts.queue_packets or bdp_packets(opts.rate_mbit, 2 * opts.delay_ms)
    return opts


def test_shaped_variant_defaults_to_one_bdp_of_the_round_trip_and_cubic() -> None:
    opts = _opts()
    shaped = _catalogue(opts)["shaped"].spec
    assert shaped is not None
    assert (shaped.delay_ms, shaped.rate_mbit, shaped.queue_packets) == (10.0, 1000.0, 1652)
    assert opts.congestion == "cubic"


@pytest.mark.parametrize("argv,queue", [(("--queue-packets", "3304"), 3304),
                                        (("--delay-ms", "5", "--rate-mbit", "100"), 83)])
def test_shaped_queue_follows_the_options(argv: tuple[str, ...], queue: int) -> None:
    shaped = _catalogue(_opts(*argv))["shaped"].spec
    assert shaped is not None and shaped.queue_packets == queue
