"""Analysis of the relay lab's results (labs/relay_lab.py): the throughput verdict from
per-round ratios, the throughput implied by the per-packet cost, and the text summary.

Pure arithmetic on the lab's JSON, no root and no network, so it is unit-tested directly
and can re-read a saved `--out` file. Statistics come from the project's one module
(`benchmarks.stats`); nothing here resamples or computes quantiles of its own.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.stats import hodges_lehmann

TPUT_TARGET = 0.95  # the issue's floor for cfr-flow / route


def round_ratios(runs: list[tuple[int, str, float]], ref: str, variant: str) -> dict[str, Any]:
    """Ratio of `variant` to `ref` per round, with a Hodges-Lehmann estimate, its exact CI
    and a verdict.

    `runs` holds (round, variant, value). Within a round the order is mirrored (ABC CBA),
    so both variants sit at the same mean time and a drift that is linear across the
    round cancels out of the per-round ratio of means. The estimate works on log ratios:
    with no difference between the variants a round's log ratio is as likely to be +x
    as -x, which is what the signed-rank CI needs, and it tolerates a few wild runs. The
    verdict is `met` only if the whole 95% CI is at or above TPUT_TARGET, `not met` if
    the whole CI is below it, and `inconclusive` otherwise (also with fewer than 6
    rounds, which give no 95% CI): a point estimate alone does not decide."""
    by_round: dict[int, dict[str, list[float]]] = {}
    for rnd, v, x in runs:
        by_round.setdefault(rnd, {}).setdefault(v, []).append(x)
    ratios = [statistics.fmean(r[variant]) / statistics.fmean(r[ref])
              for _, r in sorted(by_round.items()) if r.get(variant) and r.get(ref)]
    if not ratios:
        raise ValueError(f"no round holds both {ref!r} and {variant!r}")
    log_est, ci = hodges_lehmann([math.log(x) for x in ratios])
    lo = None if ci.low is None else math.exp(ci.low)
    hi = None if ci.high is None else math.exp(ci.high)
    if lo is None or hi is None:
        verdict = "inconclusive"
    else:
        verdict = "met" if lo >= TPUT_TARGET else "not met" if hi < TPUT_TARGET else "inconclusive"
    return {"estimate": math.exp(log_est), "ci95": [lo, hi], "method": ci.method + " on log ratios",
            "median": statistics.median(ratios), "geomean": statistics.geometric_mean(ratios),
            "round_ratios": ratios, "verdict": verdict}


def half_round_difference(a_blocks: list[float], b_blocks: list[float]) -> dict[str, Any]:
    """b minus a from block medians measured in the same half-rounds (index k = half k).

    Why pairs: a half-round measures every variant once, back to back, so a difference
    inside one cancels drift that is slow next to it. Hodges-Lehmann with the exact
    signed-rank CI, as for the paired latency; fewer than 6 half-rounds give no 95% CI."""
    diffs = [y - x for x, y in zip(a_blocks, b_blocks, strict=True)]
    est, ci = hodges_lehmann(diffs)
    return {"diff": est, "ci95": [ci.low, ci.high],
            "method": ci.method + " over half-round block-median differences",
            "half_round_diffs": diffs}


def pool_route(runs: list[tuple[int, str, float]]) -> list[tuple[int, str, float]]:
    """Both route variants of a round as one reference for cfr-flow.

    Why: they are the same set-up, so the round's four route runs estimate its route
    throughput better than two. Against either variant alone the verdict would depend on
    which one was labelled the control: in an 80-round run the A/A ratio itself came out
    1.025 (95% CI 1.003..1.047), and cfr-flow's ratio moved from 0.982 to 0.961 with the
    choice. The A/A ratio is still reported, as the noise floor."""
    return [(r, "route" if v == "route-control" else v, x) for r, v, x in runs]


def throughput_cost_model(r: dict[str, Any]) -> dict[str, Any] | None:
    """The throughput ratio implied by the relay's measured per-packet cost.

    iperf3 ratios on this kind of machine carry a noise floor (the A/A control) of +-5-10%,
    wider than the effect. The paired latency difference is precise (alternating round
    trips in one process), and a round trip is two translated packets. On a CPU-bound
    path, each extra second of per-packet work per second of run is time taken from
    sending: ratio = 1 / (1 + packets/s x extra seconds per packet). The upper CI bound of
    the latency difference gives the conservative figure; putting all of it on the
    bottleneck core over-states the cost for the two-core shape."""
    lp, tp = r.get("latency_paired"), r.get("throughput")
    if not lp or not tp or any(lp[f]["ci95"][1] is None for f in ("v4", "v6")):
        return None
    # a negative bound (a pair where the route flow was the slower one) means "no cost seen"
    worst_us = max(0.0, max(lp[f]["ci95"][1] for f in ("v4", "v6")) / 2)
    out: dict[str, Any] = {"extra_us_per_packet_upper": worst_us}
    for k in ("1_streams", "4_streams"):
        if k in tp:
            pps = tp[k]["packets_per_second"]
            ratio = 1 / (1 + pps * worst_us * 1e-6)
            out[k] = {"packets_per_second": pps, "predicted_ratio_lower": ratio,
                      "meets_target": ratio >= TPUT_TARGET}
    return out


def ci_text(ci: list[float | None], fmt: str = ".3f") -> str:
    lo, hi = ci
    return "none: too few rounds" if lo is None or hi is None else f"{lo:{fmt}} .. {hi:{fmt}}"


def summary(r: dict[str, Any]) -> str:
    out = []
    if "latency" in r:
        lat = r["latency"]
        out.append("latency (us, request/response over established TCP):")
        for v in ("none", "route", "cfr-flow"):
            out.append(f"  {v:<9} median {lat[v]['median']:.1f}  p99 {lat[v]['p99']:.1f}")
        d = lat["cfr-flow_minus_route"]
        out.append(f"  cfr-flow - route: {d['diff']:+.2f} us "
                   f"(95% CI {ci_text(d['ci95'], '+.2f')}, {len(d['half_round_diffs'])} "
                   f"half-rounds), p99 {d['p99_diff']:+.1f} us")
    if "latency_paired" in r:
        lp = r["latency_paired"]
        for fam in ("v4", "v6"):
            x = lp[fam]
            out.append(f"paired latency {fam} (us): route median {x['route_median']:.1f} p99 "
                       f"{x['route_p99']:.1f}; cfr-flow median {x['cfr_flow_median']:.1f} p99 "
                       f"{x['cfr_flow_p99']:.1f}; paired difference "
                       f"{x['paired_diff']:+.2f} (95% CI {ci_text(x['ci95'], '+.2f')}, "
                       f"{len(x['block_diffs'])} blocks)")
    if "throughput" in r:
        t = r["throughput"]
        for k in ("1_streams", "4_streams"):
            if k not in t:
                continue
            x = t[k]
            c, a = x["cfr_flow_over_route"], x["control_over_route"]
            out.append(f"throughput {k.replace('_', ' ')} (iperf3 -A {x['affinity']}, "
                       f"{t['congestion_control']}): route {x['route']['median']:.2f} Gbit/s, "
                       f"cfr-flow {x['cfr-flow']['median']:.2f} Gbit/s; cfr-flow/route "
                       f"(both route variants) "
                       f"{c['estimate']:.3f} (95% CI {ci_text(c['ci95'])}, "
                       f"{len(c['round_ratios'])} rounds) -> {c['verdict']} (target "
                       f"{t['target_ratio']}); control route/route {a['estimate']:.3f} "
                       f"({ci_text(a['ci95'])})")
    if r.get("throughput_cost_model"):
        m = r["throughput_cost_model"]
        for k in ("1_streams", "4_streams"):
            if k in m:
                x = m[k]
                out.append(f"throughput {k.replace('_', ' ')} from per-packet cost: "
                           f"{x['packets_per_second']:.0f} packets/s x at most "
                           f"{m['extra_us_per_packet_upper']:.2f} us -> cfr-flow/route >= "
                           f"{x['predicted_ratio_lower']:.3f} "
                           f"({'meets' if x['meets_target'] else 'below'} {TPUT_TARGET})")
    if "connrate" in r:
        for mode in ("refused", "full"):
            c = r["connrate"][mode]
            out.append(f"new connections/s ({mode}): cgn {c['cgn']['median']:.0f}, cfr-flow "
                       f"{c['cfr-flow']['median']:.0f}, cfr-flow+mapping log "
                       f"{c['cfr-flow+log']['median']:.0f} (ratio cfr-flow/cgn "
                       f"{c['ratio_cfr_flow_over_cgn']:.3f})")
    if "rotation" in r:
        for k in ("pool16", "pool4096"):
            x = r["rotation"][k]
            flows = x["established_flows"]
            errs = sum(f[p]["errors"] for f in flows for p in ("tcp", "udp"))
            lost = sum(f[p]["sent"] - f[p]["ok"] for f in flows for p in ("tcp", "udp"))
            gap = max(f[p]["max_gap_ms"] for f in flows for p in ("tcp", "udp"))
            out.append(f"rotation {k}: nft transaction median "
                       f"{x['nft_transaction_ms']['median']:.1f} ms (max "
                       f"{x['nft_transaction_ms']['max']:.1f}), `cfr rotate` "
                       f"{x['cli_cfr_rotate_ms']['median']:.0f} ms; established flows: "
                       f"{errs} errors, {lost} lost probes, max gap {gap} ms")
    if "memory" in r:
        m = r["memory"]
        out.append(f"memory: ~{m['bytes_per_flow_estimate']:.0f} bytes of kernel slab per "
                   f"tracked NATed flow (nf_conntrack object {m['nf_conntrack_objsize']} B); "
                   f"largest table tried {m['largest_table_tried']} flows")
    return "\n".join(out)
