"""The delay line's scheduler, through `delayline simulate`: the exact Go code the forwarder
runs on live frames, so these properties hold on the network too (up to wake-up latency).

No root needed. Uses build/bin/delayline when it is newer than the sources, else builds the
binary into a temporary directory with the project's Go toolchain.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

from testbed import paths
from testbed.delayline import DirectionSpec, Scheduled, command, simulate
from testbed.delayline.build import current_binary, go_env, go_toolchain
from testbed.errors import ParameterError

IN_CI = os.environ.get("CI") == "true"


def _need_go() -> str:
    go = go_toolchain()
    if go is None:
        message = "no Go toolchain (run 'make setup')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return go


@pytest.fixture(scope="session")
def delayline_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A delayline binary built from the current sources."""
    binary = current_binary(tmp_path_factory.mktemp("delayline-bin"))
    if binary is None:
        _need_go()
    assert binary is not None
    return binary


def sim(
    binary: Path, spec: DirectionSpec, arrivals: list[tuple[int, int]], seed: int = 0
) -> list[Scheduled]:
    return simulate(spec, arrivals, seed=seed, binary=binary)


def test_go_unit_tests(tmp_path: Path) -> None:
    """`go test` for the package (spec parsing, scheduler, ring buffers), so CI runs it."""
    go = _need_go()
    proc = subprocess.run(
        [go, "test", "-count=1", "./testbed/delayline/..."],
        cwd=paths.REPO_ROOT,
        env=go_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_constant_delay_shifts_every_packet_exactly(delayline_bin: Path) -> None:
    arrivals = [(i * 123_457, 60 + i % 1400) for i in range(2000)]
    out = sim(delayline_bin, DirectionSpec(delay_ms=10), arrivals)
    assert [r.departure_ns for r in out] == [a + 10_000_000 for a, _ in arrivals]


def test_fractional_delay_is_exact(delayline_bin: Path) -> None:
    out = sim(delayline_bin, DirectionSpec(delay_ms=0.25), [(1000, 100)])
    assert out == [Scheduled(1000, 251_000)]


def test_jitter_preserves_order_within_bounds(delayline_bin: Path) -> None:
    spec = DirectionSpec(delay_ms=10, jitter_ms=5)
    arrivals = [(i * 100_000, 1500) for i in range(5000)]  # 0.1 ms apart, jitter 5 ms
    out = sim(delayline_bin, spec, arrivals, seed=3)
    departures = [r.departure_ns for r in out]
    assert all(d is not None for d in departures)
    assert departures == sorted(departures)
    extra = [d - a - 10_000_000 for (a, _), d in zip(arrivals, departures, strict=True)]
    assert min(extra) >= 0 and max(extra) <= 5_000_000
    # Sparse traffic is not held back by order-keeping: its jitter spreads over [0, 5 ms].
    sparse = sim(delayline_bin, spec, [(i * 20_000_000, 100) for i in range(500)], seed=3)
    spread = {(r.departure_ns - r.arrival_ns - 10_000_000) // 1_000_000 for r in sparse}
    assert spread >= {0, 1, 2, 3, 4}


def test_rate_spaces_back_to_back_packets(delayline_bin: Path) -> None:
    spec = DirectionSpec(rate_mbit=100, delay_ms=2)
    out = sim(delayline_bin, spec, [(0, 1500)] * 100)
    tx = 1500 * 8 * 1000 // 100  # ns per frame at 100 Mbit/s = 120 us
    assert [r.departure_ns for r in out] == [(i + 1) * tx + 2_000_000 for i in range(100)]
    gaps = {b.departure_ns - a.departure_ns for a, b in zip(out, out[1:], strict=False)}
    assert gaps == {tx}


def test_rate_uses_each_frames_length(delayline_bin: Path) -> None:
    out = sim(delayline_bin, DirectionSpec(rate_mbit=8), [(0, 1000), (0, 100), (0, 1)])
    # 8 Mbit/s = 1 byte per microsecond.
    assert [r.departure_ns for r in out] == [1_000_000, 1_100_000, 1_101_000]


def test_queue_limit_drops_the_excess_and_counts_it(delayline_bin: Path) -> None:
    spec = DirectionSpec(rate_mbit=10, queue_packets=20)
    out = sim(delayline_bin, spec, [(0, 1250)] * 120)
    assert sum(r.delivered for r in out) == 20
    assert [r.drop for r in out].count("queue") == 100
    assert all(r.delivered for r in out[:20])
    # Each 1250-byte frame takes 1 ms at 10 Mbit/s: arrivals paced at that rate never drop.
    paced = sim(delayline_bin, spec, [(i * 1_000_000, 1250) for i in range(500)])
    assert all(r.delivered for r in paced)


def test_loss_zero_and_hundred(delayline_bin: Path) -> None:
    arrivals = [(i * 1000, 100) for i in range(5000)]
    assert all(r.delivered for r in sim(delayline_bin, DirectionSpec(loss_pct=0), arrivals))
    lost = sim(delayline_bin, DirectionSpec(loss_pct=100), arrivals)
    assert [r.drop for r in lost] == ["loss"] * len(arrivals)


def test_loss_thirty_percent_within_binomial_bounds(delayline_bin: Path) -> None:
    n, p = 20_000, 0.30
    for seed in (1, 2, 3):
        out = sim(delayline_bin, DirectionSpec(loss_pct=30), [(i, 100) for i in range(n)], seed)
        lost = sum(r.drop == "loss" for r in out)
        sigma = math.sqrt(n * p * (1 - p))  # ~65 frames
        assert abs(lost - n * p) <= 5 * sigma, (seed, lost)


def test_same_seed_identical_output_other_seed_differs(delayline_bin: Path) -> None:
    spec = DirectionSpec(delay_ms=5, jitter_ms=2, loss_pct=10, rate_mbit=50, queue_packets=50)
    arrivals = [(i * 50_000, 200 + i % 1300) for i in range(5000)]
    first = sim(delayline_bin, spec, arrivals, seed=9)
    assert sim(delayline_bin, spec, arrivals, seed=9) == first
    assert sim(delayline_bin, spec, arrivals, seed=10) != first


@pytest.mark.parametrize(
    ("spec", "parameter"),
    [
        ("delay=-1ms", "delay"),
        ("delay=10", "delay"),
        ("loss=150", "loss"),
        ("rate=0mbit", "rate"),
        ("rate=100mbps", "rate"),
        ("limit=0", "limit"),
        ("speed=1", "spec key"),
    ],
)
def test_invalid_spec_exits_2_naming_the_parameter(
    delayline_bin: Path, spec: str, parameter: str
) -> None:
    proc = subprocess.run(
        [str(delayline_bin), "simulate", "--spec", spec],
        input="",
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"invalid {parameter}=" in lines[0] and "allowed" in lines[0]


@pytest.mark.parametrize(
    ("argv", "parameter"),
    [
        (["run", "--if-a", "x", "--if-b", "y", "--a2b", "loss=101"], "loss"),
        (["run", "--if-a", "", "--if-b", "y"], "--if-a"),
        (["run", "--if-a", "x", "--if-b", "y", "--seed", "-1"], "--seed"),
        (["run", "--if-a", "x", "--if-b", "y", "--rt-priority", "100"], "--rt-priority"),
        (["frobnicate"], "command"),
    ],
)
def test_bad_run_arguments_exit_2(delayline_bin: Path, argv: list[str], parameter: str) -> None:
    """Argument errors are reported before any socket is opened, so no root is needed."""
    proc = subprocess.run([str(delayline_bin), *argv], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert parameter in proc.stderr and "allowed" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_simulate_input_exits_2(delayline_bin: Path) -> None:
    for text in ("10\n", "10 abc\n", "20 100\n10 100\n"):
        proc = subprocess.run(
            [str(delayline_bin), "simulate", "--spec", "delay=1ms"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2, text
        assert "allowed" in proc.stderr


# --- the Python side: validation, spec strings, argv --------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"delay_ms": -1}, "delay_ms"),
        ({"delay_ms": float("nan")}, "delay_ms"),
        ({"delay_ms": 20_000}, "delay_ms"),
        ({"jitter_ms": -0.5}, "jitter_ms"),
        ({"loss_pct": -1}, "loss_pct"),
        ({"loss_pct": 100.5}, "loss_pct"),
        ({"rate_mbit": 0}, "rate_mbit"),
        ({"rate_mbit": -5}, "rate_mbit"),
        ({"queue_packets": 0}, "queue_packets"),
        ({"queue_packets": 1.5}, "queue_packets"),
        ({"queue_packets": True}, "queue_packets"),
        ({"delay_ms": "10"}, "delay_ms"),
    ],
)
def test_direction_spec_validation(kwargs: dict, parameter: str) -> None:
    with pytest.raises(ParameterError) as info:
        DirectionSpec(**kwargs)
    assert info.value.parameter == parameter
    assert info.value.allowed


def test_identity_and_spec_strings() -> None:
    assert DirectionSpec().is_identity()
    assert DirectionSpec(queue_packets=10).is_identity()
    assert DirectionSpec().to_arg() == "none"
    assert not DirectionSpec(loss_pct=0.1).is_identity()
    assert not DirectionSpec(rate_mbit=100).is_identity()
    spec = DirectionSpec(delay_ms=10, jitter_ms=0.5, loss_pct=1.5, rate_mbit=100, queue_packets=64)
    assert spec.to_arg() == "delay=10ms,jitter=0.5ms,loss=1.5,rate=100000kbit,limit=64"
    assert DirectionSpec(delay_ms=0.00001).to_arg() == "delay=0.00001ms"


def test_python_spec_strings_are_accepted_by_the_binary(delayline_bin: Path) -> None:
    """to_arg() output means the same to Go as to Python (units, tiny and fractional values)."""
    for spec, size, want in [
        (DirectionSpec(delay_ms=0.00001), 100, 10),
        (DirectionSpec(delay_ms=1.234567), 100, 1_234_567),
        (DirectionSpec(rate_mbit=0.512), 64, 1_000_000),  # 512 bit at 512 kbit/s = 1 ms
        (DirectionSpec(rate_mbit=2.5, delay_ms=1), 1250, 4_000_000 + 1_000_000),
    ]:
        assert sim(delayline_bin, spec, [(0, size)]) == [Scheduled(0, want)], spec


def test_command_builds_argv(tmp_path: Path) -> None:
    argv = command(
        "la",
        "lb",
        DirectionSpec(delay_ms=10),
        DirectionSpec(delay_ms=10, loss_pct=1),
        seed=7,
        stats_file=tmp_path / "s.json",
        ready_file=tmp_path / "ready",
        binary="/opt/delayline",
    )
    assert argv == [
        "/opt/delayline",
        "run",
        "--if-a",
        "la",
        "--if-b",
        "lb",
        "--a2b",
        "delay=10ms",
        "--b2a",
        "delay=10ms,loss=1",
        "--seed",
        "7",
        "--stats-file",
        str(tmp_path / "s.json"),
        "--ready-file",
        str(tmp_path / "ready"),
    ]
    with pytest.raises(ParameterError):
        command("la", "lb", DirectionSpec(), DirectionSpec(), seed=-1, binary="/x")


def test_command_passes_timing_options() -> None:
    argv = command(
        "la", "lb", DirectionSpec(), DirectionSpec(), rt_priority=0, spin_us=50, binary="/x"
    )
    assert argv[-4:] == ["--rt-priority", "0", "--spin-us", "50"]
    assert "--rt-priority" not in command("la", "lb", DirectionSpec(), DirectionSpec(), binary="/x")
    with pytest.raises(ParameterError):
        command("la", "lb", DirectionSpec(), DirectionSpec(), rt_priority=100, binary="/x")
    with pytest.raises(ParameterError):
        command("la", "lb", DirectionSpec(), DirectionSpec(), spin_us=-1, binary="/x")


def test_directions_draw_independent_losses(delayline_bin: Path) -> None:
    """`run --seed S` seeds a2b and b2a differently; simulate replays either one."""
    spec = DirectionSpec(loss_pct=50)
    arrivals = [(i, 100) for i in range(200)]
    a2b = simulate(spec, arrivals, seed=5, direction="a2b", binary=delayline_bin)
    b2a = simulate(spec, arrivals, seed=5, direction="b2a", binary=delayline_bin)
    assert a2b != b2a
    assert a2b == simulate(spec, arrivals, seed=5, binary=delayline_bin)
    with pytest.raises(ParameterError):
        simulate(spec, arrivals, direction="up", binary=delayline_bin)
