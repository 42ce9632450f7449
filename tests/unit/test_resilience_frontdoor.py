"""The front-door scenario's verdict and the hostile packets' spoofed sources (no root).

Why: the scenario's pass/fail is computed from the load generator's records; the cases an
operator cares about (a request lost between key rotation and restart, a client stranded
with a rejected ECH config, a slow recovery after restart) must each fail it, and a run in
which every stale client recovered through retry configs must pass."""

from __future__ import annotations

import argparse

from benchmarks.resilience import hostile
from benchmarks.resilience.frontdoor import RECOVERY_LIMIT_S, judge
from testbed.addressing import AddressPlan

T_ROT, T_RESTART, T_BACK = 100.0, 105.0, 105.5
REJECT = "ECH rejected; retry configs received (90 bytes)"


def rec(fid: str, ts: float, error: str | None = None, ech: bool = True,
        total_ms: float = 20.0) -> dict:
    return {"flow_id": fid, "ts": ts, "error": error, "ech_accepted": ech and not error,
            "total_ms": total_ms}


def healthy() -> list[dict]:
    """Before: ok; between: stale clients rejected, retried with ECH accepted; after the
    restart: two failures while down, then ok."""
    return [rec("a", 98.0), rec("b", 99.0),
            rec("c", 101.0, REJECT), rec("c.retry", 101.1),
            rec("d", 102.0, REJECT), rec("d.retry", 102.1), rec("e", 103.0),
            rec("f", 105.1, "connection refused"), rec("g", 105.3, "connection refused"),
            rec("h", 106.0), rec("i", 107.0)]


def test_every_stale_client_recovering_through_retry_configs_passes() -> None:
    out = judge(healthy(), T_ROT, T_RESTART, T_BACK)
    assert out.passed, out
    assert (out.rejected_with_retry_configs, out.recovered_via_retry) == (2, 2)
    assert out.failed == 2 and out.failed_after_restart == 2
    assert out.failed_between_rotation_and_restart == 0
    assert out.recovery_s_after_restart == 1.0


def test_a_failure_between_rotation_and_restart_fails() -> None:
    out = judge([*healthy(), rec("x", 104.0, "timeout")], T_ROT, T_RESTART, T_BACK)
    assert not out.passed and out.failed_between_rotation_and_restart == 1


def test_a_rejected_client_whose_retry_failed_or_lacked_ech_fails() -> None:
    failed_retry = [*healthy(), rec("y", 103.5, REJECT), rec("y.retry", 103.6, "reset")]
    out = judge(failed_retry, T_ROT, T_RESTART, T_BACK)
    assert not out.passed and out.failed_between_rotation_and_restart == 1
    no_ech = [*healthy(), rec("z", 103.5, REJECT), rec("z.retry", 103.6, ech=False)]
    out = judge(no_ech, T_ROT, T_RESTART, T_BACK)
    assert not out.passed and out.recovered_via_retry == 2 < out.rejected_with_retry_configs


def test_a_flow_refused_by_the_stopped_front_door_failed_after_the_restart() -> None:
    # began 10 ms before the restart, refused 30 ms later: a restart failure
    out = judge([*healthy(), rec("r", T_RESTART - 0.01, "refused", total_ms=30)], T_ROT,
                T_RESTART, T_BACK)
    assert out.failed_between_rotation_and_restart == 0 and out.failed_after_restart == 3
    assert out.passed


def test_no_retry_at_all_proves_nothing_about_recovery() -> None:
    recs = [r for r in healthy() if r["flow_id"] not in ("c", "c.retry", "d", "d.retry")]
    out = judge(recs, T_ROT, T_RESTART, T_BACK)
    assert not out.passed and out.rejected_with_retry_configs == 0


def test_failures_before_rotation_or_late_after_restart_fail() -> None:
    assert not judge([*healthy(), rec("p", 99.5, "timeout")], T_ROT, T_RESTART, T_BACK).passed
    late = T_BACK + RECOVERY_LIMIT_S + 1
    out = judge([*healthy(), rec("q", late, "timeout")], T_ROT, T_RESTART, T_BACK)
    assert not out.passed and out.failed_late == 1


def test_hostile_spoofed_sources_come_from_the_caller() -> None:
    plan = AddressPlan()
    sub, fd = plan.subscriber(1), plan.front_door()
    spoof = [str(plan.service("providers", h)[0]) for h in (100, 101)]
    args = argparse.Namespace(src4=str(sub.v4), src6=str(sub.v6), dst4=str(fd[0]),
                              dst6=str(fd[1]), victim4=str(plan.subscriber(0).v4),
                              spoof4=",".join(spoof), spoof6="")
    kinds = hostile.build(args)
    assert [p.src for p in kinds["spoofed_source"]] == spoof
    assert kinds["spoofed_source_v6"] == []
    # every other kind uses the subscriber's own address
    assert {p.src for p in kinds["bad_tcp_checksum"]} == {str(sub.v4)}
