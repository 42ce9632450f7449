"""iperf3 TCP tests pin their congestion control (benchmarks.tools._tcp_argv): without it a
namespace inherits the host's default, which may be BBR, and BBR without the fq qdisc
settles at a different rate in every run."""

from __future__ import annotations

from benchmarks.tools import DEFAULT_CONGESTION, _tcp_argv, iperf_seconds


def test_default_pins_cubic() -> None:
    argv, cc = _tcp_argv({"streams": 4}, 2.0)
    assert DEFAULT_CONGESTION == "cubic" and cc == "cubic"
    assert argv == ["-t", "2", "-P", "4", "-C", "cubic"]


def test_duration_is_whole_seconds_never_zero() -> None:
    # iperf3 parses -t with atoi: "0.5" would be 0 s, which iperf3 runs forever.
    assert [iperf_seconds(d) for d in (0.1, 0.5, 1.0, 1.5, 2.5, 3.0)] == \
        ["1", "1", "1", "2", "3", "3"]


def test_definition_option_overrides_the_default() -> None:
    argv, cc = _tcp_argv({"congestion_control": "bbr"}, 3.0)
    assert cc == "bbr"
    assert argv[argv.index("-C") + 1] == "bbr"
    assert argv[:4] == ["-t", "3", "-P", "1"]
