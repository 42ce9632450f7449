"""The nft JSON generated for each policy, checked against golden files.

Regenerate after an intended change with:
    CFR_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_relay_ruleset.py
and review the diff of tests/unit/golden/relay/.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from relay import config, ruleset
from relay.config import POLICIES
from relay.policies import plan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent / "golden" / "relay" / "base.toml"
GOLDEN = Path(__file__).resolve().parent / "golden" / "relay"
KEY = bytes(range(32))
UPDATE = os.environ.get("CFR_UPDATE_GOLDEN") == "1"


def cfg_for(policy: str) -> config.Config:
    data = tomllib.loads(EXAMPLE.read_text())
    data["relay"]["policy"] = policy
    return config.from_dict(data, source="example")


def render(policy: str, epoch: int = 7) -> dict:
    cfg = cfg_for(policy)
    p = plan(cfg, KEY, epoch)
    return {"timeouts_nft": ruleset.timeout_prelude(cfg).splitlines(),
            "transaction": ruleset.full_ruleset(cfg, p),
            "rotation": ruleset.rotation(cfg, p)}


@pytest.mark.parametrize("policy", POLICIES)
def test_golden_ruleset(policy: str) -> None:
    got = render(policy)
    path = GOLDEN / f"{policy}.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"missing golden file {path}: run with CFR_UPDATE_GOLDEN=1"
    want = json.loads(path.read_text())
    assert got == want, f"ruleset for {policy} differs from {path.name}"


def _cmds(tx: dict) -> list[tuple[str, str, dict]]:
    out = []
    for c in tx["nftables"]:
        (verb, body), = c.items()
        (kind, obj), = body.items()
        out.append((verb, kind, obj))
    return out


@pytest.mark.parametrize("policy", POLICIES)
def test_only_own_table_and_never_destructive(policy: str) -> None:
    r = render(policy)
    for verb, kind, obj in _cmds(r["transaction"]) + _cmds(r["rotation"]):
        assert verb in ("add", "flush"), (verb, kind)
        assert kind != "ruleset" and kind != "table" or verb == "add"
        assert obj.get("family") == "inet"
        assert obj.get("table", obj.get("name")) == "cfr"
    # the dynamic flow-limit sets are never flushed (they count live flows)
    flushed = {o["name"] for v, k, o in _cmds(r["transaction"]) if v == "flush" and k == "set"}
    assert not flushed & set(ruleset.DYNAMIC_SETS)
    assert all("add ct timeout inet cfr " in ln or ln.startswith("add table inet cfr")
               for ln in r["timeouts_nft"])


@pytest.mark.parametrize("policy", POLICIES)
def test_rotation_touches_only_alias_chains(policy: str) -> None:
    for _verb, kind, obj in _cmds(render(policy)["rotation"]):
        assert kind in ("chain", "rule")
        assert obj.get("chain", obj.get("name")) in ruleset.ALIAS_CHAINS


def test_existing_dynamic_sets_are_not_re_added() -> None:
    cfg = cfg_for("cfr-flow")
    tx = ruleset.full_ruleset(cfg, plan(cfg, KEY, 0), frozenset(ruleset.DYNAMIC_SETS))
    names = {o["name"] for v, k, o in _cmds(tx) if k == "set"}
    assert not names & set(ruleset.DYNAMIC_SETS)


def _alias_rules(policy: str, epoch: int) -> list:
    return [o["expr"] for v, k, o in _cmds(render(policy, epoch)["rotation"]) if k == "rule"]


def test_epoch_policy_changes_seed_and_v6_pool_per_epoch() -> None:
    assert _alias_rules("cfr-epoch", 1) != _alias_rules("cfr-epoch", 2)
    assert _alias_rules("cfr-epoch", 1) == _alias_rules("cfr-epoch", 1)


def test_cgn_is_stable_across_epochs() -> None:
    assert _alias_rules("cgn", 1) == _alias_rules("cgn", 99)


def test_route_has_no_nat_and_no_guard() -> None:
    r = render("route")
    rules = [o for v, k, o in _cmds(r["transaction"]) if k == "rule"]
    text = json.dumps(rules)
    assert '"snat"' not in text and "drop_leak_guard" not in text
    assert "drop_spoofed" in text and "flowlimit_v4" in text  # safety still applies


def test_cfr_flow_is_fully_random_in_both_families() -> None:
    text = json.dumps(render("cfr-flow")["rotation"])
    assert text.count('"fully-random"') == 2 and text.count('"numgen"') == 4
    assert '"ip6"' in text and '"ip"' in text
