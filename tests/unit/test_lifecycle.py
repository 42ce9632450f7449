"""Run registry: records before creating, removes exactly what it recorded."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from testbed import lifecycle, paths


@pytest.fixture()
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "STATE_DIR", tmp_path / "state")
    return tmp_path / "state"


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def test_prefix_is_short_and_unique(state_dir):
    prefixes = {lifecycle.new_prefix() for _ in range(50)}
    assert len(prefixes) == 50
    assert all(len(p) == 6 and p.startswith("cb") for p in prefixes)


def test_state_file_records_resources_and_close_removes_them(state_dir):
    registry = lifecycle.RunRegistry("test")
    mine = subprocess.Popen(["sleep", "60"])
    other = subprocess.Popen(["sleep", "60"])  # not recorded: must survive
    try:
        registry.record_process(mine.pid, "sleeper")
        tmp = registry.make_tmpdir("work")
        data = json.loads(lifecycle.state_path(registry.prefix).read_text())
        assert data["processes"][0]["pid"] == mine.pid
        assert data["tmpdirs"] == [str(tmp)]
        order = []
        registry.defer(lambda: order.append("first"))
        registry.defer(lambda: order.append("second"))
        assert registry.close() == []
        mine.wait(5)
        assert order == ["second", "first"]  # LIFO, like lib.sh defer
        assert not tmp.exists()
        assert not lifecycle.state_path(registry.prefix).exists()
        assert _alive(other)
    finally:
        other.kill()
        mine.kill()


def test_clean_only_touches_runs_whose_controller_is_gone(state_dir):
    dead = lifecycle.RunRegistry("up")
    victim = subprocess.Popen(["sleep", "60"])
    dead.record_process(victim.pid, "svc")
    # Pretend the controller died: point it at a finished process.
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead.state.controller_pid = gone.pid
    dead.save()
    live = lifecycle.RunRegistry("up")  # controller is this test process
    try:
        report = dict(lifecycle.clean())
        assert report[dead.prefix].startswith("removed")
        assert "still running" in report[live.prefix]
        victim.wait(5)
        assert lifecycle.state_path(live.prefix).exists()
        assert not lifecycle.state_path(dead.prefix).exists()
    finally:
        victim.kill()
        live.close()


def test_a_reused_pid_is_not_killed(state_dir):
    registry = lifecycle.RunRegistry("test")
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        registry.state.processes.append(
            lifecycle.ProcessRecord(bystander.pid, starttime=1, label="stale record"))
        registry.save()
        registry.close()
        time.sleep(0.1)
        assert _alive(bystander)
    finally:
        bystander.kill()


def test_clean_of_an_unknown_prefix_says_so(state_dir):
    assert lifecycle.clean(["cbzzzz"]) == [("cbzzzz", "not recorded (nothing removed)")]
