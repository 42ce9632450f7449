"""The paired forwarding-cost capture without root (benchmarks/forwarding_joint.py): flows
told apart by packet length, packets attributed to (flow, active ruleset), switch moments set
aside, and captures that cannot be used reported as such, not as figures."""

from __future__ import annotations

import pytest

from benchmarks import forwarding_joint as joint

RX = "net:netif_receive_skb:"
TX = "net:net_dev_start_xmit:"


def pair(cpu: int, t_s: float, took_ns: int, skb: str, length: int,
         gso: int = 0) -> list[str]:
    t2 = t_s + took_ns / 1e9
    return [f"[{cpu:03d}] {t_s:.9f}:  {RX} dev=edge-acc skbaddr={skb} len={length}",
            f"[{cpu:03d}] {t2:.9f}: {TX} dev=edge-core queue_mapping=0 skbaddr={skb} "
            f"vlan_tagged=0 protocol=0x0800 ip_summed=3 len={length} data_len=0 "
            f"gso_size={gso}"]


MSS = {"cgn": 1380, "cfr-flow": 1400, "cfr-epoch": 1360}
LEN = {"cfr-flow": 1454, "cgn": 1434, "cfr-epoch": 1414}  # MSS + 54 bytes of headers


def test_flows_are_told_apart_by_length_ranked_against_their_mss() -> None:
    packets = [joint.UpPacket(1.0, 100.0, LEN[p], 0) for p in MSS for _ in range(30)]
    packets += [joint.UpPacket(1.0, 100.0, 66, 0)]  # a lone short packet: not a flow
    assert joint.flows_by_size(packets, MSS) == {1454: "cfr-flow", 1434: "cgn",
                                                 1414: "cfr-epoch"}
    # GSO aggregates are keyed by their MSS (gso_size), not their length
    assert joint.UpPacket(1.0, 1.0, 43_000, 1388).key == 1388


def test_flows_not_separable_give_no_mapping() -> None:
    packets = [joint.UpPacket(1.0, 100.0, 1454, 0) for _ in range(90)]
    assert joint.flows_by_size(packets, MSS) == {}


def test_packets_count_only_under_their_own_policys_rules_and_switches_are_set_aside() -> None:
    windows = [joint.Window("cgn", 10.00, 10.15), joint.Window("cfr-flow", 10.17, 10.32)]
    key = {1434: "cgn", 1454: "cfr-flow"}
    packets = [
        joint.UpPacket(10.05, 2000.0, 1434, 0),   # cgn flow, cgn rules: counts for cgn
        joint.UpPacket(10.06, 9000.0, 1454, 0),   # cfr-flow flow, cgn rules: cross only
        joint.UpPacket(10.16, 7777.0, 1434, 0),   # during the switch: set aside
        joint.UpPacket(10.20, 3000.0, 1454, 0),   # cfr-flow flow, its rules: counts
        joint.UpPacket(9.90, 5555.0, 1454, 0),    # before the first window: set aside
        joint.UpPacket(10.21, 4444.0, 66, 0),     # no flow: unattributed
    ]
    got = joint.attribute(packets, windows, key)
    assert got.per_path_ns == {"cgn": [2000.0], "cfr-flow": [3000.0]}
    assert got.cross_ns == {"cfr-flow": [9000.0]}
    assert (got.set_aside, got.unattributed) == (2, 1)
    assert got.key_of_path == {"cgn": 1434, "cfr-flow": 1454}


def test_up_packets_pairs_the_trace_and_counts_lost_records() -> None:
    lines = [*pair(0, 5.0, 2500, "0xa", 1454), *pair(1, 5.1, 3000, "0xb", 1434),
             "LOST 3 events!"]
    packets, lost = joint.up_packets(lines, ("edge-acc",), ("edge-core",))
    assert [(round(p.took_ns), p.size) for p in packets] == [(2500, 1454), (3000, 1434)]
    assert packets[0].arrived == pytest.approx(5.0)
    assert lost == 1


def _capture(n: int) -> joint.JointCapture:
    return joint.JointCapture(
        per_path_ns={"cgn": [2700.0] * n, "cfr-flow": [2800.0] * n},
        per_path_bytes={"cgn": 1434 * n, "cfr-flow": 1454 * n},
        key_of_path={"cgn": 1434, "cfr-flow": 1454})


def test_results_give_each_path_its_median_and_the_capture_id() -> None:
    out, problem = joint.results(_capture(joint.MIN_PACKETS), ("cgn", "cfr-flow"), 7, {})
    assert problem is None
    assert out["cgn"][0] == {"forwarding_cost": 2700.0}
    assert out["cfr-flow"][0] == {"forwarding_cost": 2800.0}
    assert out["cfr-flow"][1]["joint_capture"] == 7
    assert out["cfr-flow"][1]["paths_together"] == ["cgn", "cfr-flow"]


@pytest.mark.parametrize("spoil, words", [
    (lambda c: setattr(c, "lost_events", 2), "lost events"),
    (lambda c: c.key_of_path.pop("cgn"), "told apart"),
    (lambda c: c.per_path_ns.update(cgn=[2700.0]), "fewer than"),
])
def test_an_unusable_capture_gives_no_figure_for_any_path(spoil, words) -> None:
    capture = _capture(joint.MIN_PACKETS)
    spoil(capture)
    out, problem = joint.results(capture, ("cgn", "cfr-flow"), 1, {})
    assert words in problem
    assert all(values == {"forwarding_cost": None} for values, _ in out.values())


class _FakeSampler(joint.JointSampler):
    def __init__(self) -> None:
        super().__init__(env=None, paths=("cgn", "cfr-flow", "cfr-epoch"))  # type: ignore[arg-type]
        self.runs = 0

    def _capture_once(self, options):
        self.runs += 1
        return {p: ({"forwarding_cost": float(self.runs)}, {}) for p in self.paths}, None


def test_one_capture_serves_a_block_and_the_next_block_gets_a_new_one() -> None:
    s = _FakeSampler()
    block1 = [s.sample(p, {})[0]["forwarding_cost"] for p in ("cfr-flow", "cgn", "cfr-epoch")]
    block2 = [s.sample(p, {})[0]["forwarding_cost"] for p in ("cgn", "cfr-flow")]
    block3 = [s.sample(p, {})[0]["forwarding_cost"] for p in ("cgn",)]
    assert block1 == [1.0, 1.0, 1.0] and block2 == [2.0, 2.0] and block3 == [3.0]
    assert s.sample("direct", {})[0] == {"forwarding_cost": None}


def test_capture_problems_are_retried_and_kept() -> None:
    class Flaky(_FakeSampler):
        def _capture_once(self, options):
            self.runs += 1
            if self.runs < 2:
                return {p: ({"forwarding_cost": None}, {"capture_problem": "lost"})
                        for p in self.paths}, "lost"
            return super()._capture_once(options)

    s = Flaky()
    values, extra = s.sample("cgn", {})
    assert values == {"forwarding_cost": 3.0}  # the second capture (runs counts both calls)
    assert extra["attempts"] == 2 and extra["capture_problems"] == ["lost"]


def test_trimmed_mean_follows_a_mixtures_share_smoothly_and_ignores_stalls() -> None:
    fast, slow = [2750.0] * 50, [3500.0] * 50
    # near a 50/50 mixture the median jumps between the modes, the trimmed mean does not
    a = joint.trimmed_mean(fast[:26] + slow[:24] + [900_000.0])
    b = joint.trimmed_mean(fast[:24] + slow[:26] + [900_000.0])
    assert abs(b - a) < 60  # two packets of 51 moved: a small step
    assert 3000 < a < 3250 and 3000 < b < 3250
    assert joint.trimmed_mean([2750.0] * 40 + [1e6] * 5) == 2750.0  # stalls cut off


def test_round_pairing_cancels_a_machine_state_the_paths_met_in_different_shares() -> None:
    per_window: dict[tuple[int, str], list[float]] = {}
    for r in range(10):
        level = 3500.0 if r % 3 == 0 else 2750.0  # the machine's state in this round
        per_window[(r, "cgn")] = [level] * 30
        # cfr-flow costs 10% more per packet, whatever the state
        per_window[(r, "cfr-flow")] = [level * 1.10] * 30
    per_window[(10, "cfr-flow")] = [5000.0] * 30  # a round without the reference: unused
    per_window[(11, "cfr-flow")] = [5000.0] * 5   # too few packets in the reference's too
    per_window[(11, "cgn")] = [2750.0] * 5
    ratio, rounds = joint.round_paired_ratio(per_window, "cfr-flow", "cgn")
    assert ratio == pytest.approx(1.10) and rounds == 10
    assert joint.round_paired_ratio(per_window, "cgn", "cgn") == (1.0, 10)
    assert joint.round_paired_ratio({}, "cfr-flow", "cgn") == (None, 0)


def test_a_routed_path_makes_every_flow_udp_sized_like_its_mss() -> None:
    # IPv6 cgn6 is routed (the relay's CGN translates IPv4 only): its flow has no NAT
    # binding, the aliasing policies' leak guards drop it, so the set is measured with UDP.
    assert joint.routed_paths(("cgn6", "cfr-flow6", "cfr-epoch6")) == ("cgn6",)
    assert joint.routed_paths(("cgn", "cfr-flow", "cfr-epoch")) == ()
    tcp = joint.flow_command("198.19.0.9", 5211, "198.18.1.1", 1400, 50.0, "cubic", 32, udp=False)
    assert tcp[-4:] == ["-M", "1400", "-C", "cubic"] and "-u" not in tcp
    udp = joint.flow_command("2001:db8::9", 5221, "2001:db8::1", 1380, 50.0, "cubic", 32, udp=True)
    assert udp[-3:] == ["-u", "-l", "1380"] and "-M" not in udp and "-C" not in udp
    assert udp[udp.index("-b") + 1] == "50M" and udp[udp.index("-B") + 1] == "2001:db8::1"
