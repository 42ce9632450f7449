"""`cfr status`: what the relay is doing right now, read from the kernel.

Pool occupancy is the live anonymity set: for each alias, how many distinct subscribers
and flows currently share it (from a conntrack dump). Only counts are reported, never
subscriber addresses, so the status output can be shipped to monitoring safely.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import time
from typing import Any

from relay import conntrack, nft
from relay import epoch as ep
from relay.config import Config
from relay.engine import current_epoch, state_for
from relay.errors import RelayError
from relay.mappinglog import MappingLog
from relay.policies import plan
from relay.ruleset import DROP_COUNTERS, INFO_COUNTERS

SCHEMA = 1


def subscriber_key(cfg: Config, addr: str) -> str:
    """A subscriber's identity: the IPv4 address, or the IPv6 delegated prefix."""
    a = ipaddress.ip_address(addr)
    if a.version == 4:
        return str(a)
    return str(ipaddress.ip_network((a, cfg.v6_subscriber_prefix_len), strict=False))


def occupancy(cfg: Config, flows: list[conntrack.Flow], pool: list[str]) -> dict[str, dict]:
    nets = cfg.subscriber_v4 + cfg.subscriber_v6
    per: dict[str, dict[str, Any]] = {a: {"flows": 0, "subs": set()} for a in pool}
    for f in flows:
        if not f.aliased:
            continue
        addr = ipaddress.ip_address(f.src)
        if not any(addr in n for n in nets if n.version == addr.version):
            continue
        slot = per.setdefault(f.reply_dst, {"flows": 0, "subs": set()})
        slot["flows"] += 1
        slot["subs"].add(subscriber_key(cfg, f.src))
    return {a: {"flows": v["flows"], "subscribers": len(v["subs"])} for a, v in per.items()}


def _summary(occ: dict[str, dict], family: int) -> dict[str, Any]:
    used = [v["subscribers"] for a, v in occ.items()
            if ipaddress.ip_address(a).version == family and v["flows"] > 0]
    return {
        "aliases_in_use": len(used),
        "min_subscribers_per_alias": min(used) if used else 0,
        "median_subscribers_per_alias": statistics.median(used) if used else 0,
        "max_subscribers_per_alias": max(used) if used else 0,
    }


def collect(cfg: Config, with_flows: bool = True) -> dict[str, Any]:
    """Everything `cfr status` shows, as one JSON-able dict."""
    now = time.time()
    sd = state_for(cfg)
    items = nft.list_table(cfg.table)
    applied = sd.read_json(sd.applied_file, {})
    e = current_epoch(cfg, sd, now)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "time": now,
        "table": cfg.table,
        "table_present": items is not None,
        "policy": cfg.policy,
        "modes": {"v4": cfg.modes[0], "v6": cfg.modes[1]},
        "applied_policy": applied.get("policy"),
        "epoch": e,
        "applied_epoch": applied.get("epoch"),
        "epoch_length_s": cfg.epoch_length,
        "next_rotation_in_s": round(ep.seconds_to_next(now, cfg.epoch_length), 3),
    }
    cnt = nft.counters(items or [])
    out["drops"] = {k: cnt.get(k, {}).get("packets", 0) for k in DROP_COUNTERS}
    out["new_flows"] = {k: cnt.get(k, {}).get("packets", 0) for k in INFO_COUNTERS}
    try:
        st = conntrack.stats()
    except Exception as exc:  # stats are informative; never fail status on them
        st = {"error": str(exc)}  # type: ignore[dict-item]
    out["kernel"] = {"nat_insert_failed": st.get("insert_failed", 0),
                     "conntrack_drop": st.get("drop", 0),
                     "conntrack_early_drop": st.get("early_drop", 0)}
    try:
        v6_pool = [str(a) for a in plan(cfg, sd.key(create=False), e).v6_pool]
    except RelayError:
        v6_pool = []  # never applied here: no key yet
    v4_pool = [str(a) for a in cfg.alias_v4] if cfg.modes[0] in ("cgn", "flow", "epoch") else []
    pool = v4_pool + v6_pool
    out["pool"] = {"v4": v4_pool, "v6": v6_pool}
    if with_flows:
        flows = conntrack.dump()
        occ = occupancy(cfg, flows, pool)
        out["occupancy"] = occ
        out["anonymity"] = {"v4": _summary(occ, 4), "v6": _summary(occ, 6)}
        subs = [f for f in flows if any(
            ipaddress.ip_address(f.src) in n for n in cfg.subscriber_v4 + cfg.subscriber_v6
            if n.version == f.family)]
        out["flows"] = {"tracked_total": len(flows), "subscriber_flows": len(subs),
                        "aliased_flows": sum(1 for f in subs if f.aliased)}
    if cfg.mapping_log:
        ml = MappingLog(sd.mapping_log, cfg.retention, cfg.subscriber_v4 + cfg.subscriber_v6)
        ml.load()
        out["mapping_log"] = {"records": len(ml), "open": len(ml.open),
                              "retention_s": cfg.retention, "path": str(sd.mapping_log)}
    daemon = sd.read_json(sd.status_file, {})
    if daemon:
        out["daemon"] = {k: daemon.get(k) for k in ("pid", "started", "updated", "reloads",
                                                     "rotations", "events_lost", "last_error")}
    return out


def render_text(s: dict[str, Any]) -> str:
    lines = [
        f"table      inet {s['table']} ({'present' if s['table_present'] else 'NOT PRESENT'})",
        f"policy     {s['policy']} (v4 {s['modes']['v4']}, v6 {s['modes']['v6']})",
        f"epoch      {s['epoch']} (applied {s['applied_epoch']}), length "
        f"{s['epoch_length_s']:g} s, next rotation in {s['next_rotation_in_s']:.1f} s",
    ]
    if "flows" in s:
        f = s["flows"]
        lines.append(f"flows      {f['subscriber_flows']} from subscribers "
                     f"({f['aliased_flows']} aliased), {f['tracked_total']} tracked in total")
    lines.append("new flows  " + ", ".join(f"{k}={v}" for k, v in s["new_flows"].items()))
    lines.append("drops      " + ", ".join(f"{k[5:]}={v}" for k, v in s["drops"].items()))
    k = s["kernel"]
    lines.append(f"kernel     nat_insert_failed={k['nat_insert_failed']} "
                 f"(new flows refused: pool ports exhausted) conntrack_drop={k['conntrack_drop']}")
    if "mapping_log" in s:
        m = s["mapping_log"]
        lines.append(f"mappings   {m['records']} records ({m['open']} open), retention "
                     f"{m['retention_s']:g} s")
    if "occupancy" in s:
        lines.append("pool occupancy (alias: subscribers/flows):")
        for alias, v in s["occupancy"].items():
            lines.append(f"  {alias:<40} {v['subscribers']:>5} / {v['flows']}")
        for fam in ("v4", "v6"):
            a = s["anonymity"][fam]
            lines.append(f"anonymity {fam}: {a['aliases_in_use']} aliases in use, subscribers "
                         f"per alias min {a['min_subscribers_per_alias']} median "
                         f"{a['median_subscribers_per_alias']} "
                         f"max {a['max_subscribers_per_alias']}")
    return "\n".join(lines) + "\n"


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def render_prometheus(s: dict[str, Any]) -> str:
    t = _label(s["table"])
    out = [
        "# HELP cfr_info Relay policy and table.", "# TYPE cfr_info gauge",
        f'cfr_info{{table="{t}",policy="{_label(s["policy"])}"}} 1',
        "# HELP cfr_epoch Current privacy epoch number.", "# TYPE cfr_epoch gauge",
        f'cfr_epoch{{table="{t}"}} {s["epoch"]}',
        "# HELP cfr_next_rotation_seconds Time to the next epoch rotation.",
        "# TYPE cfr_next_rotation_seconds gauge",
        f'cfr_next_rotation_seconds{{table="{t}"}} {s["next_rotation_in_s"]}',
        "# HELP cfr_drops_total Packets dropped by the relay, by reason.",
        "# TYPE cfr_drops_total counter",
    ]
    for k, v in s["drops"].items():
        out.append(f'cfr_drops_total{{table="{t}",reason="{k[5:]}"}} {v}')
    out += ["# HELP cfr_new_flows_total New subscriber flows admitted.",
            "# TYPE cfr_new_flows_total counter"]
    for k, v in s["new_flows"].items():
        out.append(f'cfr_new_flows_total{{table="{t}",family="{k[-2:]}"}} {v}')
    out += ["# HELP cfr_nat_insert_failed_total Kernel NAT/conntrack insert failures "
            "(new flows refused, e.g. alias ports exhausted).",
            "# TYPE cfr_nat_insert_failed_total counter",
            f'cfr_nat_insert_failed_total{{table="{t}"}} {s["kernel"]["nat_insert_failed"]}']
    if "occupancy" in s:
        out += ["# HELP cfr_alias_subscribers Distinct subscribers currently sharing an alias.",
                "# TYPE cfr_alias_subscribers gauge"]
        for a, v in s["occupancy"].items():
            out.append(f'cfr_alias_subscribers{{table="{t}",alias="{a}"}} {v["subscribers"]}')
        out += ["# HELP cfr_alias_flows Flows currently using an alias.",
                "# TYPE cfr_alias_flows gauge"]
        for a, v in s["occupancy"].items():
            out.append(f'cfr_alias_flows{{table="{t}",alias="{a}"}} {v["flows"]}')
    if "mapping_log" in s:
        out += ["# HELP cfr_mapping_records Mapping-log records held (within retention).",
                "# TYPE cfr_mapping_records gauge",
                f'cfr_mapping_records{{table="{t}"}} {s["mapping_log"]["records"]}']
    return "\n".join(out) + "\n"


def render_json(s: dict[str, Any]) -> str:
    return json.dumps(s, indent=1, sort_keys=True) + "\n"
