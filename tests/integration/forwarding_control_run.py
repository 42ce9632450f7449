"""`cfrbench run throughput --profile quick` with a known per-packet regression planted in
one policy: EXTRA_RULES no-op rules (a mark match and a counter each, which every forwarded
packet evaluates) at the head of cfr-flow's forward chain, in the transaction the benchmark
switches to. cgn and cfr-epoch keep their rules, so the same run holds the positive control
(cfr-flow must read worse) and the negative one (cfr-epoch must stay equivalent).

The subscriber-rate half of the definition is replaced by a constant so the run spends its
time on the forwarding-cost captures under test; nothing else is patched.
Used by test_forwarding_cost_control.py; run as root."""

from __future__ import annotations

import json
import os
import sys

import benchmarks.runner as runner
from benchmarks import tools
from testbed.services import relay as relay_service

EXTRA_RULES = int(os.environ.get("EXTRA_RULES", "40"))
_prepare = relay_service.RelayDeployment.prepare_switching


def _with_extra_rules(self: relay_service.RelayDeployment, policies: list[str]) -> None:
    _prepare(self, policies)
    path = self._transactions["cfr-flow"]
    tx = json.loads(path.read_text())
    cmds = tx["nftables"]
    first = next(i for i, c in enumerate(cmds)
                 if c.get("add", {}).get("rule", {}).get("chain") == "forward_filter")
    base = cmds[first]["add"]["rule"]
    extra = [{"add": {"rule": {
        "family": base["family"], "table": base["table"], "chain": "forward_filter",
        "expr": [{"match": {"op": "==", "left": {"meta": {"key": "mark"}},
                            "right": 0x120000 + k}}, {"counter": None}]}}}
        for k in range(EXTRA_RULES)]
    tx["nftables"] = cmds[:first] + extra + cmds[first:]
    path.write_text(json.dumps(tx))


def _constant_rate(env, path, options):  # noqa: ANN001, ANN202 - the tool signature
    return {"throughput": 956.0}, {"note": "constant: not under test"}


def main() -> int:
    relay_service.RelayDeployment.prepare_switching = _with_extra_rules
    for table in (tools.TOOLS, runner.TOOLS):
        table["iperf3_tcp"] = _constant_rate
    from cfrbench.cli import main as cli_main
    return cli_main(["run", "throughput", "--profile", "quick", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
