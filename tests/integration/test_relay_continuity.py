"""Established TCP and UDP flows keep transferring, without a reset and with the same alias,
across epoch rotations, re-apply, config reload (SIGHUP) and a restart of `cfr run`."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from labs.labnet import wait_for
from tests.integration.relay_fixtures import lab, relay  # noqa: F401

pytestmark = pytest.mark.integration


def _start_hold(lab, role: str, dst: str, stop: str) -> subprocess.Popen:  # noqa: F811
    p = lab.py_popen(role, "hold", "--dst", dst, "--duration", "120", "--interval", "0.02",
                     "--stop-file", stop, stdout=subprocess.PIPE, text=True)
    first = json.loads(p.stdout.readline())
    assert first["ready"], first
    return p


def _finish(p: subprocess.Popen) -> dict:
    out, _ = p.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("policy", ["cfr-epoch", "cfr-flow"])
def test_flows_survive_rotation_reload_restart(relay, lab, policy):  # noqa: F811
    relay.start_daemon(policy)
    stop_path = lab.tmp / f"stop-hold-{policy}"
    stop_path.unlink(missing_ok=True)
    stop = str(stop_path)
    holds = {fam: _start_hold(lab, "sub1", dst, stop)
             for fam, dst in (("v4", lab.plan.fd_v4), ("v6", lab.plan.fd_v6))}
    time.sleep(0.5)
    ct_before = relay.status()["flows"]["aliased_flows"]
    epochs = [relay.status(flows=False)["epoch"]]
    new_flow_aliases = {"v6": [relay.probe("sub1", lab.plan.fd_v6, 1)[0][0]]}
    for _ in range(3):
        relay.rotate()
        time.sleep(0.4)
        epochs.append(relay.status(flows=False)["epoch"])
        new_flow_aliases["v6"].append(relay.probe("sub1", lab.plan.fd_v6, 1)[0][0])
    # re-apply the same config twice: a no-op for flows
    for _ in range(2):
        r = relay.cfr("apply", str(relay.config))
        assert r.returncode == 0, r.stderr
    # SIGHUP with a changed config (flow limit), applied atomically
    relay.write(policy, limits__flows_per_subscriber=500)
    relay.signal_daemon(signal.SIGHUP)
    assert wait_for(lambda: json.loads((relay.state / "status.json").read_text())
                    .get("reloads") == 1, timeout=10), relay.log()
    # restart: SIGTERM leaves kernel state in place; a new `cfr run` re-attaches
    assert relay.stop_daemon() == 0
    time.sleep(0.5)
    relay.start_daemon()
    time.sleep(0.5)
    ct_after = relay.status()["flows"]["aliased_flows"]
    open(stop, "w").close()
    results = {fam: _finish(p) for fam, p in holds.items()}

    assert len(set(epochs)) == 4, epochs
    if policy == "cfr-epoch":  # new flows did move: IPv6 aliases are fresh per epoch
        assert len(set(new_flow_aliases["v6"])) == 4, new_flow_aliases
    for fam, res in results.items():
        for proto in ("tcp", "udp"):
            r = res[proto]
            assert not r["errors"], f"{fam}/{proto}: {r['errors'][:3]}"
            assert r["ok"] == r["sent"] and r["sent"] > 50, (fam, proto, r)
            assert r["max_gap"] < 1.0, f"{fam}/{proto} stalled {r['max_gap']:.2f} s"
        assert len(res["udp"]["peers"]) == 1, f"{fam}: UDP alias changed: {res['udp']['peers']}"
        assert res["tcp"]["peers"][0][0] == res["udp"]["peers"][0][0] or policy == "cfr-flow"
    assert ct_after >= ct_before >= 4, (ct_before, ct_after)
    assert "exiting; kernel state left in place" in relay.log()
