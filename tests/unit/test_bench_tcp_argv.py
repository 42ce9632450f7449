"""iperf3 TCP tests pin their congestion control (benchmarks.tools._tcp_argv): without it a
namespace inherits the host's default, which may be BBR, and BBR without the fq qdisc
settles at a different rate in every run."""

from __future__ import annotations

from benchmarks.tools import DEFAULT_CONGESTION, _tcp_argv


def test_default_pins_cubic() -> None:
    argv, cc = _tcp_argv({"streams": 4}, 1.5)
    assert DEFAULT_CONGESTION == "cubic" and cc == "cubic"
    assert argv == ["-t", "1.5", "-P", "4", "-C", "cubic"]


def test_definition_option_overrides_the_default() -> None:
    argv, cc = _tcp_argv({"congestion_control": "bbr"}, 3.0)
    assert cc == "bbr"
    assert argv[argv.index("-C") + 1] == "bbr"
    assert argv[:4] == ["-t", "3.0", "-P", "1"]
