"""The long-lived-flow sink and client of the resilience suite, on loopback (no root).

The rotation scenario's verdict ("zero resets, zero remapped") is only as good as this
tool: it must count every echo of every flow at a thousand flows, and it must count a
reset when the far side dies."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.resilience.scenarios import _remapped
from testbed.waiting import WaitTimeout, wait_until

FLOWS = Path(__file__).resolve().parents[2] / "benchmarks" / "resilience" / "flows.py"


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def _sink(tmp: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(FLOWS), "sink", "--bind4", "127.0.0.1",
                             "--port", str(port), "--out", str(tmp / "sink.json")])
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 10, 0.05, f"the flows sink to listen on port {port}")
    except WaitTimeout:
        proc.kill()
        raise
    return proc


def _client(tmp: Path, port: int, tcp: int, udp: int, duration: float, tick: float
            ) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FLOWS), "client", "--dst", "127.0.0.1",
                             "--port", str(port), "--sources", "127.0.0.2,127.0.0.3",
                             "--tcp", str(tcp), "--udp", str(udp), "--duration",
                             str(duration), "--tick", str(tick), "--stall-s", "2",
                             "--drain-s", "1", "--tag", "x", "--out",
                             str(tmp / "client.json")])


def test_a_thousand_flows_every_echo_returns_and_each_flow_keeps_its_peer(tmp_path):
    port = _free_port()
    sink = _sink(tmp_path, port)
    try:
        client = _client(tmp_path, port, 500, 500, duration=3, tick=1.0)
        assert client.wait(timeout=60) == 0
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
    res = json.loads((tmp_path / "client.json").read_text())
    peers = json.loads((tmp_path / "sink.json").read_text())["peers"]
    assert res["tcp"] == 500 and res["udp"] == 500
    assert res["errors"] == {"tcp_connect_failed": 0, "tcp_reset": 0, "tcp_timeout": 0,
                             "udp_lost": 0, "udp_error": 0}
    assert res["ticks"] == 3 and res["messages_sent"] == 3000 and res["replies"] == 3000
    assert res["max_send_lag_s"] < 0.5  # paced: the client kept its schedule
    # the sink saw every flow, each from exactly the client's own socket address
    assert set(peers) == set(res["local"])
    assert all(peers[f] == [res["local"][f]] for f in peers)
    assert _remapped(peers, res["local"]) == []


def test_a_dead_far_side_counts_every_tcp_flow_and_the_lost_udp_echoes(tmp_path):
    port = _free_port()
    sink = _sink(tmp_path, port)
    client = _client(tmp_path, port, 20, 20, duration=4, tick=0.5)
    time.sleep(1.5)
    sink.kill()  # SIGKILL: the kernel resets every TCP flow, UDP echoes stop
    sink.wait(timeout=10)
    assert client.wait(timeout=60) == 0
    res = json.loads((tmp_path / "client.json").read_text())
    errs = res["errors"]
    assert errs["tcp_reset"] + errs["tcp_timeout"] == 20
    assert errs["udp_lost"] + errs["udp_error"] >= 20
    assert len(res["dead"]) >= 20


def test_remapped_flags_a_flow_seen_from_two_peers():
    local = {"a": "tcp/198.18.0.20:4000", "b": "udp/198.18.0.20:4001"}
    peers = {"a": ["tcp/198.19.64.1:1000"],
             "b": ["udp/198.19.64.1:1001", "udp/198.19.64.2:1001"]}
    assert _remapped(peers, local) == ["b"]
