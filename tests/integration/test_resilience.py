"""Issue 7, reduced: every resilience scenario on one network, at `Scale.quick()`.

One run (about 90 s) feeds all assertions, so the network is brought up once. The
exhaustion scenario's handshake-time ratio (attack vs no attack) is reported, not
asserted: on the shared 2-core machines the attacker's packets cost CPU in the userspace
delay lines that the victims share, which the ratio mixes with the relay's behaviour, and
DESIGN.md forbids time figures from these machines as test criteria. Its state-isolation
criteria (others' success, the cap holding, the counter moving) are asserted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from benchmarks.resilience.scenarios import Scale, run_resilience
from testbed.lifecycle import RunRegistry
from testbed.scenario import Scenario
from tests.conftest import require_root

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict[str, dict]:
    require_root()
    run_dir: Path = tmp_path_factory.mktemp("resilience")
    with RunRegistry("resilience-test") as reg:
        result = run_resilience(replace(Scenario(), population=12), run_dir, reg,
                                Console(quiet=True), scale=Scale.quick())
    return {r["name"].split()[0]: r for r in result["rows"]}


def test_exhaustion_attacker_is_capped_and_others_unaffected(rows):
    f = rows["exhaustion"]["figures"]
    assert "error" not in f, f
    assert f["others_success_rate_under_attack"] >= 0.99, f
    assert f["drop_flow_limit_delta"] > 0, f
    assert f["attacker_max_live_conntrack"] <= f["flow_limit"], f
    assert f["median_ratio_attack_over_base"] is not None, f


def test_rotation_under_load_keeps_every_flow(rows):
    row = rows["epoch"]
    assert row["passed"], row
    assert row["figures"]["remapped_flows"] == 0
    assert row["flows_lost"] == 0


def test_control_plane_crash_keeps_data_plane_and_log(rows):
    row = rows["control-plane"]
    assert row["passed"], row
    ct = row["figures"]["conntrack_sink_entries"]
    assert ct["after_restart"] >= ct["before_kill"]
    assert row["figures"]["flows_missing_from_mapping_log"] == 0


def test_front_door_restart_and_key_rotation_recover(rows):
    row = rows["front-door"]
    assert row["passed"], row
    f = row["figures"]
    assert f["recovery_s_after_restart"] is not None
    # nothing lost between rotation and restart: stale clients recovered via retry configs
    assert f["failed_between_rotation_and_restart"] == 0, f
    assert f["rejected_with_retry_configs"] > 0, f
    assert f["recovered_via_retry"] == f["rejected_with_retry_configs"], f


def test_hostile_packets_survived_without_leaks(rows):
    row = rows["hostile"]
    assert row["passed"], row
    f = row["figures"]
    assert row["leaks_found"] == 0
    assert f["frames_captured_at_front_door"] > 0
    # the scan's positive control: the same packets under route do show subscribers
    assert all(f["control_hits_by_category"][c] > 0 for c in f["control_required"]), f
    # spoofing checked where it matters: none arrived, although the control's did
    assert f["spoofed_sent"] > 0 and f["spoofed_seen_at_front_door"] == 0, f
    assert f["spoof_control_seen_at_front_door"] > 0, f
