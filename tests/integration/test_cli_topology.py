"""`cfrbench up --detach --topology ./file.py` from the user's directory.

The detached controller runs from the repository, so a relative topology file must reach it
made absolute; the hints it prints name the file's own client and front door (from the run
record's roles), not the default topology's `s1`/`fd`.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import require_root
from tests.integration.hoststate import netns
from tests.integration.test_topology_two_pops import USER_TOPOLOGY

pytestmark = pytest.mark.integration


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfrbench.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=150)


def test_detached_up_with_a_relative_topology_file(tmp_path):
    require_root()
    (tmp_path / "my_topo.py").write_text(USER_TOPOLOGY)
    up = _cli("up", "--detach", "--bare", "--topology", "./my_topo.py", "--subscribers", "1",
              "--population", "0", cwd=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    prefix = re.search(r"network (cb[0-9a-f]{4}) is up", up.stdout).group(1)
    try:
        # the hint names the file's client and its front door's address (fdx, not fd)
        hint = re.search(r"cfrbench exec (\S+) -- ping -c3 (\S+)", up.stdout)
        assert hint is not None, up.stdout
        client, fd4 = hint.groups()
        assert client == "s1"
        ping = _cli("exec", "--run", prefix, client, "--", "ping", "-c1", "-W3", fd4,
                    cwd=tmp_path)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        lo = _cli("exec", "--run", prefix, "fdx", "--", "ip", "-4", "-o", "addr", "show", "lo",
                  cwd=tmp_path)
        assert f"{fd4}/32" in lo.stdout, lo.stdout
    finally:
        down = _cli("down", prefix, cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [n for n in netns() if n.startswith(prefix + "-")]
