"""Positive and negative control of the forwarding-cost instrument on the real relay.

40 no-op rules planted in cfr-flow's forward chain cost every forwarded packet about 0.4 us
(~15%: measured x1.17 [1.15, 1.17]); the paired capture must call cfr-flow `worse`
than cgn and, in the same run, keep cfr-epoch (rules untouched) `equivalent`. A detector
that cannot see a 15% per-packet regression, or sees one that is not there, fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_root


def test_planted_per_packet_rules_read_worse_and_untouched_policy_equivalent(
        tmp_path: Path) -> None:
    require_root()
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "tests.integration.forwarding_control_run",
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "EXTRA_RULES": "40"})
    assert out.joinpath("results.json").exists(), (proc.stdout[-3000:], proc.stderr[-3000:])
    results = json.loads((out / "results.json").read_text())
    verdicts = {c["path"]: c for c in results["comparisons"]
                if c["metric"] == "forwarding_cost" and c["baseline"] == "cgn"}
    flow, epoch = verdicts["cfr-flow"], verdicts["cfr-epoch"]
    assert flow["verdict"].startswith("worse"), flow
    assert epoch["verdict"] == "equivalent", epoch
    assert flow["ratio"]["ci"]["low"] > 1.08, flow  # ~15% planted, well clear of 5%
