"""The testbed survives interruption: Ctrl-C or kill -9 of `cfrbench run` at each phase,
then `cfrbench clean`, leaves no namespace, interface, process or mount of that run, and a
rerun succeeds; two runs at once do not interfere."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import lifecycle
from testbed.addressing import AddressPlan
from testbed.paths import REPO_ROOT
from tests.conftest import require_root
from tests.integration.hoststate import netns, root_links

# Lines the main job prints when it enters each phase (non-terminal output).
PHASES = {
    "topology-up": "[2/5]",
    "services-starting": "[3/5]",
    "mid-benchmark": "latency/connection",
    "mid-report": "[4/5]",
}


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "cfrbench.cli", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)




def _leftovers(prefix: str) -> dict[str, list[str]]:
    procs = subprocess.run(["pgrep", "-af", prefix], capture_output=True, text=True).stdout
    mounts = [m for m in Path("/proc/self/mounts").read_text().splitlines() if prefix in m]
    return {"netns": sorted(n for n in netns() if n.startswith(prefix)),
            "processes": [p for p in procs.splitlines() if "pgrep" not in p],
            "mounts": mounts}


@pytest.mark.parametrize(("phase", "sig"), [
    ("topology-up", signal.SIGKILL),
    ("services-starting", signal.SIGKILL),
    ("mid-benchmark", signal.SIGKILL),
    ("mid-report", signal.SIGKILL),
    ("services-starting", signal.SIGINT),
    ("mid-benchmark", signal.SIGINT),
])
def test_interrupt_then_clean_leaves_nothing(tmp_path, phase, sig):
    require_root()
    links_before = root_links()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfrbench.cli", "run", "--profile", "tiny", "latency",
         "--out", str(tmp_path / "run")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"))
    prefix = None
    seen = []
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            match = re.search(r"run prefix (cb[0-9a-f]{4})", line)
            prefix = prefix or (match.group(1) if match else None)
            if PHASES[phase] in line:
                break
            assert time.monotonic() < deadline, "".join(seen[-20:])
        else:
            pytest.fail(f"the run ended before phase {phase}: {''.join(seen[-20:])}")
        assert prefix, "".join(seen)
        time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    clean = _cli("clean")
    assert clean.returncode == 0, clean.stderr
    assert _leftovers(prefix) == {"netns": [], "processes": [], "mounts": []}
    assert not lifecycle.state_path(prefix).exists()
    assert root_links() == links_before
    if sig == signal.SIGINT:  # Ctrl-C tears down by itself; clean finds nothing of it
        assert prefix not in clean.stdout


def test_two_networks_at_once_do_not_interfere_and_a_rerun_works():
    require_root()
    fd4 = str(AddressPlan().front_door()[0])
    first = _cli("up", "--detach", "--bare", "--population", "2", "--subscribers", "1")
    second = _cli("up", "--detach", "--bare", "--population", "2", "--subscribers", "1")
    prefixes = [re.search(r"network (cb[0-9a-f]{4}) is up", p.stdout).group(1)
                for p in (first, second)]
    try:
        assert prefixes[0] != prefixes[1]
        for prefix in prefixes:  # same addresses, separate namespaces: both work
            ping = _cli("exec", "--run", prefix, "s1", "--", "ping", "-c1", "-W3", fd4)
            assert ping.returncode == 0, ping.stdout + ping.stderr
        # stopping one leaves the other running
        assert _cli("down", prefixes[0]).returncode == 0
        assert _cli("exec", "--run", prefixes[1], "s1", "--", "ping", "-c1", "-W3",
                    fd4).returncode == 0
    finally:
        for prefix in prefixes:
            _cli("down", prefix)
    for prefix in prefixes:
        assert _leftovers(prefix)["netns"] == []
