"""Bad input to the CLI: one line naming the parameter, exit 2, nothing created."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testbed.paths import REPO_ROOT


def _cfrbench(*args, state_dir):
    env = dict(os.environ, CFRBENCH_STATE_DIR=str(state_dir))
    return subprocess.run([sys.executable, "-m", "cfrbench.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=60)


def _netns():
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["up", "--wan-delay", "-5"], "wan.delay_ms"),
        (["up", "--access-delay", "-0.1"], "access.delay_ms"),
        (["up", "--subscribers", "0"], "subscribers"),
        (["up", "--population", "-3"], "population"),
        (["up", "--topology", "mesh"], "topology"),
        (["run", "--profile", "huge"], "profile"),
        (["up", "--policy", "magic"], "--policy"),
        (["up", "--detach", "--subscribers", "0"], "subscribers"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_parameters_exit_2_and_create_nothing(tmp_path, args, expected):
    before = _netns()
    proc = _cfrbench(*args, state_dir=tmp_path / "state")
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())
    assert _netns() == before


def test_malformed_scenario_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[topology]\nsubscribers = "x\n')
    proc = _cfrbench("up", "--scenario", str(bad), state_dir=tmp_path / "state")
    assert proc.returncode == 2
    assert "malformed TOML" in proc.stderr and str(bad) in proc.stderr
    assert not (tmp_path / "state").exists()


def test_unknown_scenario_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[links.wan]\ndelay = 3\n")
    proc = _cfrbench("up", "--scenario", str(bad), state_dir=tmp_path / "state")
    assert proc.returncode == 2
    assert "unknown key(s) delay in [links.wan]" in proc.stderr


def test_exec_without_a_network_is_a_clear_error(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("exec checks root first")
    proc = _cfrbench("exec", "s1", "--", "true", state_dir=tmp_path / "state")
    assert proc.returncode == 1
    assert "no network is running" in proc.stderr
