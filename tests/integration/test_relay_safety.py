"""Not an open relay, state protection: spoofed, foreign and unsolicited traffic is dropped
and counted by reason; the per-subscriber flow limit holds while other subscribers are
unaffected; an exhausted pool refuses new flows with a counter and keeps existing ones."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.relay_fixtures import lab, relay  # noqa: F401

pytestmark = pytest.mark.integration


def _send(lab, role: str, src: str, dst: str, count: int = 5) -> None:  # noqa: F811
    out = json.loads(lab.py(role, "send", "--src", src, "--dst", dst, "--count", str(count)))
    assert out["sent"] == count, out


def _first(out: str) -> dict:
    return json.loads(out.splitlines()[0])


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_spoofed_foreign_and_unsolicited_are_dropped_and_counted(relay, lab, fam):  # noqa: F811
    relay.apply("cfr-flow")
    p = lab.plan
    fd = p.fd_v4 if fam == "v4" else p.fd_v6
    sub1 = p.sub1_v4 if fam == "v4" else p.sub1_v6
    cases = [
        # (sending role, source, destination, counter expected to grow)
        ("spoof", sub1, fd, "drop_spoofed"),  # another subscriber's address
        ("spoof", "198.18.9.9" if fam == "v4" else "2001:db8:1000:9900::9", fd,
         "drop_spoofed"),  # not routed via this access link at all
        ("spoof", p.spoof_link_v4 if fam == "v4" else p.spoof_link_v6, fd,
         "drop_not_subscriber"),  # routed here, but not a subscriber prefix of a3
        ("fd", fd, sub1, "drop_unsolicited"),  # new inbound flow to a subscriber
        ("fd", fd, "198.19.253.3" if fam == "v4" else "2001:2:0:a000::3",
         "drop_unsolicited"),  # to an alias that has no mapping
        ("tr", sub1, p.sub2_v4 if fam == "v4" else p.sub2_v6,
         "drop_spoofed"),  # a subscriber source arriving from upstream
    ]
    for role, src, dst, counter in cases:
        before = relay.drops()
        _send(lab, role, src, dst)
        d = _delta(before, relay.drops())
        assert d == {counter: 5}, f"{role} {src}->{dst}: expected {counter} +5, got {d}"
    # the spoofing host's own prefix is a subscriber: it is relayed (and aliased)
    out = _first(lab.py("spoof", "many", "--dst", fd, "--count", "1", "--hold", "0",
                            "--src", p.spoof_own_v4 if fam == "v4" else p.spoof_own_v6))
    assert out["ok"] == 1, out
    assert out["peers"][0][0] != (p.spoof_own_v4 if fam == "v4" else p.spoof_own_v6)


def test_hairpin_through_the_relay_is_not_forwarded(relay, lab):  # noqa: F811
    """An upstream host using the relay as a transit router (open relay) is refused."""
    relay.apply("cfr-flow")
    lab.cmd("tr", "ip", "route", "replace", "198.19.252.99/32", "via", "198.19.252.2")
    try:
        before = relay.drops()
        _send(lab, "tr", lab.plan.tr_v4, "198.19.252.99")
        assert _delta(before, relay.drops()) == {"drop_other": 5}
    finally:
        lab.cmd("tr", "ip", "route", "del", "198.19.252.99/32", check=False)


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_flow_limit_per_subscriber_others_unaffected(relay, lab, fam):  # noqa: F811
    relay.apply("cfr-epoch", limits__flows_per_subscriber=10)
    fd = lab.plan.fd_v4 if fam == "v4" else lab.plan.fd_v6
    before = relay.drops()
    hog = lab.py_popen("sub1", "many", "--dst", fd, "--count", "14", "--hold", "30",
                       "--timeout", "1", "--stop-file", str(lab.tmp / f"stop-many-{fam}"),
                       stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(hog.stdout.readline())
        assert first["ok"] == 10 and first["failed"] == 4, first
        other = _first(lab.py("sub2", "many", "--dst", fd, "--count", "8", "--hold", "0"))
        assert other["ok"] == 8 and other["failed"] == 0, other
        d = _delta(before, relay.drops())
        assert set(d) == {"drop_flow_limit"} and d["drop_flow_limit"] >= 4, d
    finally:
        (lab.tmp / f"stop-many-{fam}").touch()
        out, _ = hog.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1])["alive_at_end"] == 10


def test_pool_exhaustion_refuses_new_flows_with_counter(relay, lab):  # noqa: F811
    # one alias with 8 ports; each subscriber may hold 4 flows
    relay.apply("cgn", alias__v4=["198.19.253.1/32"], alias__port_min=20000,
                alias__port_max=20007, limits__flows_per_subscriber=4)
    fd = lab.plan.fd_v4
    stop = lab.tmp / "stop-exhaust"
    stop.unlink(missing_ok=True)
    k0 = relay.status(flows=False)["kernel"]["nat_insert_failed"]
    def many(role: str, count: int, *extra: str) -> tuple:
        p = lab.py_popen(role, "many", "--dst", fd, "--count", str(count), "--hold", "60",
                         "--timeout", "1", "--stop-file", str(stop), *extra,
                         stdout=subprocess.PIPE, text=True)
        return p, json.loads(p.stdout.readline())

    procs = []
    try:
        hog, first = many("sub1", 6)
        procs.append(hog)
        assert first["ok"] == 4 and first["failed"] == 2, first  # flow limit, not the pool
        assert relay.status(flows=False)["kernel"]["nat_insert_failed"] == k0
        p2, other = many("sub2", 3)
        procs.append(p2)
        assert other["ok"] == 3, other  # 4 ports were still free: sub2 is unaffected
        p3, third = many("spoof", 3, "--src", lab.plan.spoof_own_v4)
        procs.append(p3)
        assert third["ok"] == 1 and third["failed"] == 2, third  # 1 port left, then none
        st = relay.status()
        assert st["kernel"]["nat_insert_failed"] >= k0 + 2, st["kernel"]
        assert st["occupancy"]["198.19.253.1"]["flows"] == 4 + 3 + 1
        assert st["occupancy"]["198.19.253.1"]["subscribers"] == 3
    finally:
        stop.touch()
        outs = [p.communicate(timeout=30)[0] for p in procs]
    alive = [json.loads(o.strip().splitlines()[-1])["alive_at_end"] for o in outs]
    assert alive == [4, 3, 1], alive  # established flows never suffered
