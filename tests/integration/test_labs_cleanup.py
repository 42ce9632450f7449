"""A lab killed with kill -9, then `cfrbench clean`, leaves nothing of its own: no namespace,
process, root-namespace link or temp dir with its run prefix, and no run state file.

The labs (labs/) build their networks and start their servers through the run registry
(testbed.lifecycle), recording each resource before it exists. Before they did, a killed
relay lab left seven namespaces that only a pattern match could find."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import lifecycle
from testbed.paths import REPO_ROOT
from testbed.waiting import wait_until
from tests.conftest import require_root
from tests.integration.hoststate import netns, pids_matching, root_links


@dataclass(frozen=True)
class Lab:
    argv: tuple[str, ...]
    min_netns: int  # recorded and present before the kill
    min_processes: int  # recorded servers before the kill
    min_tmpdirs: int


LABS = {
    # the lab network (7 namespaces) with its echo server and iperf3 server started
    "relay": Lab(("labs.relay_lab", "--quick", "--only", "latency_paired"), 7, 2, 1),
    # loopback only: BIND and the ECH front door running, in a recorded temp dir
    "ech": Lab(("labs.ech_lab", "--blocks", "2", "--count", "50", "--latency-count", "10",
                "--duration", "1"), 0, 2, 1),
    # one A <-> delay line <-> B set-up (3 namespaces, the delay line, its stats dir),
    # killed while it pings
    "delayline": Lab(("labs.delayline_lab", "--variants", "shaped", "--pings", "3000",
                      "--no-iperf"), 3, 1, 1),
    # the first default-topology network of the up/down timing
    "testbed": Lab(("labs.testbed_lab", "--repeat", "1", "--scale", "2"), 5, 0, 1),
}


def _ready(state: lifecycle.RunState, lab: Lab) -> bool:
    present = netns()
    return (len(state.netns) >= lab.min_netns
            and all(n in present for n in state.netns[:lab.min_netns])
            and len(state.processes) >= lab.min_processes
            and len(state.tmpdirs) >= lab.min_tmpdirs)


def _leftovers(prefix: str) -> dict[str, list[str]]:
    tmp = Path(tempfile.gettempdir())
    return {"netns": sorted(n for n in netns() if n.startswith(prefix)),
            "links": sorted(link for link in root_links() if prefix in link),
            "processes": [str(p) for p in pids_matching(prefix)],
            "tmpdirs": sorted(p.name for p in tmp.glob(f"{prefix}-*"))}


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(LABS))
def test_kill_9_of_a_lab_then_clean_leaves_nothing(name: str) -> None:
    require_root()
    lab = LABS[name]
    proc = subprocess.Popen([sys.executable, "-m", *lab.argv], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    prefix = None
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        match = re.search(r"lab prefix (cb[0-9a-f]{4})", line)
        assert match, f"the lab did not announce its run prefix: {line!r}"
        prefix = match.group(1)
        def ready() -> lifecycle.RunState | None:
            assert proc.poll() is None, f"the {name} lab ended before it was ready"
            state = lifecycle.load_run(prefix)
            return state if _ready(state, lab) else None

        state = wait_until(ready, 120, 0.1, f"the {name} lab to be ready",
                           detail=lambda: str(lifecycle.load_run(prefix)))
        recorded = [(p.pid, p.starttime) for p in state.processes]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    # kill -9 runs no teardown: what was recorded is still there until clean removes it
    assert lifecycle.state_path(prefix).exists()
    left = _leftovers(prefix)
    assert len(left["netns"]) >= lab.min_netns and len(left["tmpdirs"]) >= lab.min_tmpdirs

    clean = subprocess.run([sys.executable, "-m", "cfrbench.cli", "clean", prefix],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert prefix in clean.stdout and "removed" in clean.stdout, clean.stdout
    assert _leftovers(prefix) == {"netns": [], "links": [], "processes": [], "tmpdirs": []}
    assert not lifecycle.state_path(prefix).exists()
    for pid, start in recorded:  # the same process (pid and start time) is gone
        assert lifecycle._proc_starttime(pid) != start, f"recorded pid {pid} survived"
