"""Throughput and connection-rate tools without root: forwarding cost from per-packet
tracepoint pairs (benchmarks/forwarding_cost.py, on `perf script` text), the delay-line drop
accounting of iperf3 samples and the closed-loop connection rate (benchmarks/tools.py)."""

from __future__ import annotations

import pytest

from benchmarks import forwarding_cost as fwd
from benchmarks.runner import aliasing_policies
from benchmarks.tools import CLIENT_CPU, _emulator_delta, _pinned, median_of
from testbed.calibration import EMULATOR_DROP_COUNTERS

RX = "net:netif_receive_skb:"
TX = "net:net_dev_start_xmit:"


def rx(cpu: int, t_ns: int, dev: str, skb: str, length: int = 60) -> str:
    return f"[{cpu:03d}] {t_ns / 1e9:.9f}:  {RX} dev={dev} skbaddr={skb} len={length}"


def tx(cpu: int, t_ns: int, dev: str, skb: str, length: int = 74) -> str:
    return (f"[{cpu:03d}] {t_ns / 1e9:.9f}: {TX} dev={dev} queue_mapping=0 skbaddr={skb} "
            f"vlan_tagged=0 protocol=0x0800 ip_summed=3 len={length} data_len=0 gso_size=0")


def test_pairs_receive_and_transmit_of_one_skb_on_one_core_per_direction() -> None:
    lines = [
        rx(0, 1_000_000, "edge-acc", "0xa", 65212),
        rx(1, 1_000_500, "edge-core", "0xb", 52),      # other core, interleaved
        tx(0, 1_005_000, "edge-core", "0xa", 65226),   # up: 5000 ns
        tx(1, 1_003_500, "edge-acc", "0xb", 66),       # down: 3000 ns
    ]
    got = fwd.parse_perf_script(lines, "edge-acc", "edge-core")
    assert got.up_ns == pytest.approx([5000.0])
    assert got.down_ns == pytest.approx([3000.0])
    assert (got.up_bytes, got.down_bytes, got.not_forwarded) == (65226, 66, 0)


def test_same_skb_address_on_another_core_or_same_interface_is_not_a_forwarded_packet() -> None:
    lines = [
        rx(0, 1_000, "edge-acc", "0xa"),
        tx(1, 2_000, "edge-core", "0xa"),   # another core: a different packet reusing 0xa
        rx(0, 3_000, "edge-acc", "0xc"),
        tx(0, 4_000, "edge-acc", "0xc"),    # sent back out where it came in (e.g. ARP)
        tx(0, 5_000, "edge-core", "0xd"),   # the node's own packet: no receive
    ]
    got = fwd.parse_perf_script(lines, "edge-acc", "edge-core")
    assert got.up_ns == [] and got.down_ns == []
    assert got.not_forwarded == 1  # 0xa was received and never left on its core


def test_header_and_garbage_lines_are_skipped() -> None:
    lines = ["", "# perf header", "[000] not-a-time: net:netif_receive_skb: dev=edge-acc",
             rx(0, 10_000, "edge-acc", "0xa"), tx(0, 12_000, "edge-core", "0xa")]
    assert fwd.parse_perf_script(lines, "edge-acc", "edge-core").up_ns == pytest.approx([2000])


def test_estimate_uses_medians_so_one_interrupted_packet_does_not_move_the_cost() -> None:
    packets = fwd.ForwardedPackets(up_ns=[4000.0, 4000.0, 4000.0, 900_000.0],
                                   down_ns=[2000.0, 2000.0], up_bytes=4 * 62_500,
                                   down_bytes=2 * 66)
    values, extra = fwd.estimate(packets)
    busy_ns = 4 * 4000 + 2 * 2000
    assert values["forwarding_cost"] == pytest.approx(busy_ns / 6)
    assert extra["cpu_s_per_gbit"] == pytest.approx(busy_ns / 1e9 / (250_000 * 8 / 1e9))
    assert extra["packets"] == {"up": 4, "down": 2}
    assert extra["median_ns"] == {"up": 4000.0, "down": 2000.0}


def test_estimate_without_forwarded_packets_gives_no_value() -> None:
    values, extra = fwd.estimate(fwd.ForwardedPackets(not_forwarded=3))
    assert values == {"forwarding_cost": None}
    assert "cpu_s_per_gbit" not in extra
    assert extra["not_forwarded"] == 3


def test_a_regression_of_twenty_percent_per_packet_shows_as_twenty_percent() -> None:
    base = fwd.ForwardedPackets(up_ns=[5000.0] * 9, down_ns=[3000.0] * 7,
                                up_bytes=9 * 64_000, down_bytes=7 * 66)
    slower = fwd.ForwardedPackets(up_ns=[6000.0] * 9, down_ns=[3600.0] * 7,
                                  up_bytes=9 * 64_000, down_bytes=7 * 66)
    (v_base, e_base), (v_slow, e_slow) = fwd.estimate(base), fwd.estimate(slower)
    assert v_slow["forwarding_cost"] / v_base["forwarding_cost"] == pytest.approx(1.2)
    assert e_slow["cpu_s_per_gbit"] / e_base["cpu_s_per_gbit"] == pytest.approx(1.2)


def test_emulator_delta_separates_emulator_drops_from_the_emulated_queue() -> None:
    before = {"dropped_overload": 10, "kernel_drops": 1, "dropped_queue": 5}
    after = {"dropped_overload": 110, "kernel_drops": 4, "dropped_queue": 7}
    assert _emulator_delta(before, after) == {"emulator_drops": 103, "queue_drops": 2}
    assert _emulator_delta({}, {}) == {}  # no delay line on the network: nothing recorded


def test_emulator_delta_counts_every_emulator_drop_counter() -> None:
    """A counter added to testbed.calibration's list (e.g. tx_errors) is counted too."""
    before = dict.fromkeys(EMULATOR_DROP_COUNTERS, 0) | {"dropped_queue": 0}
    after = dict.fromkeys(EMULATOR_DROP_COUNTERS, 2) | {"dropped_queue": 1}
    assert "tx_errors" in EMULATOR_DROP_COUNTERS
    assert _emulator_delta(before, after) == {
        "emulator_drops": 2 * len(EMULATOR_DROP_COUNTERS), "queue_drops": 1}


def test_an_https_request_sample_is_the_median_of_its_connections() -> None:
    """One slow connection of five does not move the sample; an even count averages the
    middle two."""
    assert median_of([30.0, 31.0, 29.5, 95.0, 30.5]) == 30.5
    assert median_of([1.0, 4.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):
        median_of([])


def test_client_tools_run_pinned_and_go_with_one_scheduler_thread(monkeypatch) -> None:
    from benchmarks import tools

    assert CLIENT_CPU is None  # not pinned by default (no lower spread measured)
    assert _pinned(["ping", "-c1"]) == ["ping", "-c1"]
    monkeypatch.setattr(tools, "CLIENT_CPU", "1")
    assert _pinned(["ping", "-c1"]) == ["taskset", "-c", "1", "ping", "-c1"]
    assert _pinned(["echd", "load"], go=True) == [
        "taskset", "-c", "1", "env", "GOMAXPROCS=1", "echd", "load"]


def test_leak_check_policies_come_from_paths_through_the_policy_table() -> None:
    """Paths map to policies (POLICY_OF_PATH); only the CFR's own are leak-checked, in
    relay.policies order, and a path without one (proxy: route) adds none."""
    assert aliasing_policies(["direct", "cgn", "proxy"]) == []
    assert aliasing_policies(["proxy", "cfr-epoch", "direct", "cfr-flow"]) == [
        "cfr-flow", "cfr-epoch"]


def test_missing_perf_is_an_environment_problem_naming_the_package(monkeypatch) -> None:
    from testbed.errors import EnvironmentProblem

    monkeypatch.setattr(fwd.shutil, "which", lambda _name: None)
    with pytest.raises(EnvironmentProblem, match="linux-perf"):
        fwd.perf_binary()


def test_closed_loop_rate_counts_only_the_window_where_every_worker_is_busy() -> None:
    from benchmarks.tools import closed_loop_rate

    # 2 workers, 0.1 s per connection, 4 each, back to back; one straggler at the very end
    spans = [(w * 0.0 + i * 0.1, (i + 1) * 0.1, True) for w in range(2) for i in range(4)]
    spans[-1] = (0.3, 1.3, True)  # the last connection takes 1 s instead of 0.1 s
    rate, window = closed_loop_rate(spans, concurrency=2)
    assert window == pytest.approx(0.3)
    assert rate == pytest.approx(6 / 0.3)  # 2 workers x 0.1 s -> 20/s, straggler ignored
    whole, span = closed_loop_rate(spans, concurrency=len(spans) + 1)
    assert span == pytest.approx(1.3) and whole == pytest.approx(8 / 1.3)


def test_closed_loop_rate_excludes_failed_connections() -> None:
    from benchmarks.tools import closed_loop_rate

    spans = [(i * 0.1, (i + 1) * 0.1, i % 2 == 0) for i in range(10)]
    rate, window = closed_loop_rate(spans, concurrency=1)
    assert window == pytest.approx(0.9)
    assert rate == pytest.approx(5 / 0.9)  # successes finished by the last start: even i


def test_coverage_rejects_lost_events_and_foreign_packets() -> None:
    # A sample counts only if the traced data bytes match what its own load sent.
    assert fwd.coverage_problem(99_000, 100_000) is None
    assert fwd.coverage_problem(101_000, 100_000) is None
    assert "lost events" in fwd.coverage_problem(40_000, 100_000)
    assert "another network" in fwd.coverage_problem(200_000, 100_000)
    assert fwd.coverage_problem(0, 0) is None  # nothing sent: judged by the estimate instead


def test_a_relay_with_several_access_interfaces_counts_each_as_the_subscriber_side() -> None:
    lines = [rx(0, 1_000, "edge-a1", "0xa"), tx(0, 3_000, "edge-core", "0xa"),
             rx(1, 1_000, "edge-a2", "0xb"), tx(1, 4_000, "edge-core", "0xb"),
             rx(1, 5_000, "edge-a1", "0xc"), tx(1, 6_000, "edge-a2", "0xc")]  # access->access
    got = fwd.parse_perf_script(lines, ("edge-a1", "edge-a2"), ("edge-core",))
    assert got.up_ns == pytest.approx([2000, 3000]) and got.down_ns == []


def test_forwarding_cost_retries_only_capture_failures(monkeypatch) -> None:
    """A capture that lost perf events is taken again (up to FORWARDING_ATTEMPTS) and every
    attempt's problem is kept; a relay-side result is never retried."""
    from benchmarks import tools

    outcomes = [({"forwarding_cost": None}, {"capture_problem": "lost events"}),
                ({"forwarding_cost": 5000.0}, {"traced_over_sent": 0.99})]
    calls: list[int] = []

    def once(env, options, family=4):
        calls.append(1)
        values, extra = outcomes[len(calls) - 1]
        return dict(values), dict(extra)

    monkeypatch.setattr(tools, "_forwarding_cost_once", once)
    values, extra = tools.forwarding_cost(None, "cfr-flow", {})
    assert values == {"forwarding_cost": 5000.0}
    assert extra["attempts"] == 2 and extra["capture_problems"] == ["lost events"]
    assert "error" not in extra

    calls.clear()
    outcomes[:] = [({"forwarding_cost": None}, {"capture_problem": f"lost {i}"})
                   for i in range(tools.FORWARDING_ATTEMPTS)]
    values, extra = tools.forwarding_cost(None, "cfr-flow", {})
    assert values == {"forwarding_cost": None}
    assert len(calls) == tools.FORWARDING_ATTEMPTS == extra["attempts"]
    assert extra["error"] == f"lost {tools.FORWARDING_ATTEMPTS - 1}"
