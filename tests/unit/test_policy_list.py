"""The relay owns the one list of policies (relay.policies); everything else imports it.

A second hand-written list drifts: a policy added to the relay would be refused by the
scenario or the deployment (or the reverse). These tests fail if any module holds its own
copy instead of the relay's object."""

from __future__ import annotations

from relay import config, policies
from testbed import scenario
from testbed.services import relay as relay_service


def test_every_module_uses_the_relays_list_object():
    for module in (config, scenario, relay_service):
        assert module.POLICIES is policies.POLICIES, module.__name__


def test_the_table_gives_each_policy_both_family_modes():
    assert policies.POLICIES == ("route", "cgn", "nptv6", "cfr-flow", "cfr-epoch")
    assert set(policies.FAMILY_MODES) == set(policies.POLICIES)
    assert policies.FAMILY_MODES["nptv6"] == ("cgn", "nptv6")
    assert config.FAMILY_MODES is policies.FAMILY_MODES


def test_cfr_policies_are_the_pool_aliasing_ones():
    assert policies.CFR_POLICIES == ("cfr-flow", "cfr-epoch")
    assert all(policies.FAMILY_MODES[p][1] in ("flow", "epoch") for p in policies.CFR_POLICIES)
