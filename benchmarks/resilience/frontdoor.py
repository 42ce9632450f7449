"""Judging the front-door scenario from the load generator's ground truth (no root).

The scenario rotates the ECH keys under open-loop load, then restarts the front door. What
an operator needs to know, phase by phase:

- before the rotation: nothing may fail (a baseline);
- between rotation and restart: clients still holding the old ECHConfigList (DNS answers
  are cached for their TTL) are rejected, and must recover through the retry configs the
  front door sends (RFC 9849 §6.1.6): a second connection with the new config, ECH
  accepted. A failure here is a request the rotation lost; a rejection without an accepted
  retry is a client the rotation stranded;
- after the restart: failures while the front door is down are expected; how long until
  requests succeed again (recovery) is the figure, and none may fail later than that.

The load generator writes one record per connection attempt: the first with the flow's id,
the retry (if ECH was rejected with retry configs) with `<id>.retry`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

RETRY_SUFFIX = ".retry"
REJECTED_PREFIX = "ECH rejected; retry"
RECOVERY_LIMIT_S = 5.0  # requests succeed again within this long after the restart


@dataclass
class FrontDoorOutcome:
    requests: int  # flows (first attempts)
    failed: int  # flows whose last attempt failed
    failed_before_rotation: int
    failed_between_rotation_and_restart: int
    failed_after_restart: int
    failed_late: int  # after the front door was back + RECOVERY_LIMIT_S
    rejected_with_retry_configs: int  # first attempts rejected (stale ECH config)
    recovered_via_retry: int  # ... whose retry succeeded with ECH accepted
    recovery_s_after_restart: float | None
    passed: bool
    failed_examples: list[dict]  # up to 5: flow id, seconds after the rotation, error

    def as_dict(self) -> dict:
        return asdict(self)


def judge(records: list[dict], t_rotation: float, t_restart: float, t_back: float
          ) -> FrontDoorOutcome:
    """The verdict for one run of the scenario (module doc); times are Unix seconds."""
    first = {r["flow_id"]: r for r in records
             if not str(r.get("flow_id", "")).endswith(RETRY_SUFFIX)}
    retry = {str(r["flow_id"]).removesuffix(RETRY_SUFFIX): r for r in records
             if str(r.get("flow_id", "")).endswith(RETRY_SUFFIX)}

    def retry_ok(fid: str) -> bool:
        r = retry.get(fid)
        return r is not None and not r.get("error") and bool(r.get("ech_accepted"))

    def ended(fid: str) -> float:
        """When the flow's last attempt failed: its start plus its duration. A flow that
        began just before the restart and was refused by the stopped front door failed
        after the restart, not between rotation and restart."""
        last = retry.get(fid) or first[fid]
        return float(last["ts"]) + float(last.get("total_ms") or 0.0) / 1000

    failed = {fid: ended(fid) for fid, r in first.items()
              if r.get("error") and not retry_ok(fid)}
    rejected = [fid for fid, r in first.items()
                if str(r.get("error") or "").startswith(REJECTED_PREFIX)]
    recovered = [fid for fid in rejected if retry_ok(fid)]
    ok_after = sorted(r["ts"] for fid, r in first.items()
                      if fid not in failed and r["ts"] >= t_restart)
    fails_after = [ts for ts in failed.values() if ts >= t_restart]
    later_ok = [t for t in ok_after if not fails_after or t > max(fails_after)]
    recovery = round(later_ok[0] - t_restart, 3) if later_ok else None
    before = sum(1 for ts in failed.values() if ts < t_rotation)
    between = sum(1 for ts in failed.values() if t_rotation <= ts < t_restart)
    late = sum(1 for ts in fails_after if ts > t_back + RECOVERY_LIMIT_S)
    passed = (bool(first) and before == 0 and between == 0 and late == 0
              and len(rejected) > 0 and len(recovered) == len(rejected)
              and recovery is not None and recovery <= RECOVERY_LIMIT_S)
    return FrontDoorOutcome(
        requests=len(first), failed=len(failed), failed_before_rotation=before,
        failed_between_rotation_and_restart=between, failed_after_restart=len(fails_after),
        failed_late=late, rejected_with_retry_configs=len(rejected),
        recovered_via_retry=len(recovered), recovery_s_after_restart=recovery, passed=passed,
        failed_examples=[{"flow_id": fid, "s_after_rotation": round(ts - t_rotation, 3),
                          "error": (retry.get(fid) or first[fid]).get("error")}
                         for fid, ts in sorted(failed.items(), key=lambda x: x[1])[:5]])
