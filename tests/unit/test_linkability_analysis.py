"""End to end without root: workload -> fake emulation records -> analyse_emulation/report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from benchmarks.linkability import analyse_emulation, run_model
from benchmarks.linkability.model import ModelParams, required_pool
from benchmarks.linkability.simulator import SimParams, generate_trace
from benchmarks.linkability.workload import WorkloadParams, generate_workload

GOLDEN = Path(__file__).parent / "golden" / "linkability"


def fake_run(
    workload, policy: str, pool: list[str], out: Path, seed: int = 0, v6_pool: list[str] = ()
) -> tuple[Path, Path]:
    """What the load generator and front door would log, with the alias chosen per policy."""
    rng = random.Random(seed)
    gt_path, fd_path = out / f"gt-{policy}.jsonl", out / f"fd-{policy}.jsonl"
    with open(gt_path, "w") as g, open(fd_path, "w") as f:
        for flow_id, r in enumerate(workload.records):
            n_conn = 1 + (3 if r["subresources"] else 0)
            for c in range(n_conn):
                cr = f"{rng.getrandbits(256):064x}"
                ts = 1.7e9 + r["t"] + (0.0 if c == 0 else rng.uniform(0, 0.5))
                port = rng.randint(32768, 60999)
                if policy == "route":
                    peer, pport = r["source"], port
                else:  # cfr-flow: a v4 pool and a v6 pool of the same size
                    fam_pool = pool if r["family"] == 4 else list(v6_pool)
                    peer, pport = rng.choice(fam_pool), rng.randint(1024, 65535)
                g.write(
                    json.dumps(
                        {
                            **r,
                            "ts": ts,
                            "flow_id": f"{flow_id}.{c}",
                            "client_random": cr,
                            "local_addr": r["source"],
                            "local_port": port,
                            "ech_accepted": True,
                            "error": None,
                        }
                    )
                    + "\n"
                )
                f.write(
                    json.dumps(
                        {
                            "ts": ts + 0.001,
                            "peer_addr": peer,
                            "peer_port": pport,
                            "inner_sni": r["site"],
                            "outer_sni": "cdn.example",
                            "ech": "accepted",
                            "psk_id_hash": None,
                            "client_random": cr,
                        }
                    )
                    + "\n"
                )
    return gt_path, fd_path


def test_analyse_golden_trace(tmp_path: Path) -> None:
    gt, fd = GOLDEN / "ground_truth.jsonl", GOLDEN / "frontdoor.jsonl"
    res = analyse_emulation(
        {"route": gt, "cfr-flow": [gt]},
        {"route": fd, "cfr-flow": [fd]},
        GOLDEN / "households.json",
        tmp_path,
    )
    assert res["coverage"]["route"]["joined"] == 6
    route = res["policies"]["route"]
    assert route["pairwise"]["v6/64"]["precision"] == 1.0
    assert route["pairwise"]["resumption"]["true_positive_pairs"] == 1
    for name in (
        "linkability.md",
        "linkability_f1.png",
        "linkability_anonymity.png",
        "linkability_auc.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "linkability.md").read_text()
    assert "`route`" in md and "P/R/F1" in md
    json.dumps(res, allow_nan=False)  # strict JSON for results.json


def test_fake_emulation_matches_model(tmp_path: Path) -> None:
    w = generate_workload(WorkloadParams(households=60, duration_s=600, seed=8))
    pool = [f"198.19.1.{i}" for i in range(1, 5)]
    spread = [f"2001:db8:{0xF0 + i:x}::1" for i in range(4)]  # one /48 per alias
    paths = {
        pol: fake_run(w, pol, pool, tmp_path, seed=i, v6_pool=spread)
        for i, pol in enumerate(("route", "cfr-flow"))
    }
    res = analyse_emulation(
        {p: v[0] for p, v in paths.items()},
        {p: v[1] for p, v in paths.items()},
        w,
        tmp_path / "out",
        model_params=SimParams(pool=len(pool)),
    )
    r = res["policies"]
    assert r["route"]["pairwise"]["addr"]["precision"] == 1.0
    assert r["route"]["pairwise"]["v6/56"]["recall"] < 1.0  # IPv4 flows stay apart
    assert r["cfr-flow"]["pairwise"]["addr"]["lift"] == pytest.approx(1.0, abs=0.3)
    assert r["route"]["trait"]["addr"]["auc"] > r["cfr-flow"]["trait"]["addr"]["auc"]
    assert res["validation_passed"], [x for x in res["validation"] if not x["passed"]]


def test_validation_catches_a_pool_layout_the_model_does_not_assume(tmp_path: Path) -> None:
    w = generate_workload(WorkloadParams(households=60, duration_s=600, seed=8))
    pool = [f"198.19.1.{i}" for i in range(1, 5)]
    packed = [f"2001:db8:ff::{i + 1}" for i in range(4)]  # all aliases in one /64
    gt, fd = fake_run(w, "cfr-flow", pool, tmp_path, seed=1, v6_pool=packed)
    wrong = analyse_emulation(
        {"cfr-flow": gt},
        {"cfr-flow": fd},
        w,
        tmp_path / "a",
        model_params=SimParams(pool=4, v6_pool_layout="spread"),
    )
    failed = {x["metric"] for x in wrong["validation"] if not x["passed"]}
    assert "v6/64 recall" in failed
    right = analyse_emulation(
        {"cfr-flow": gt},
        {"cfr-flow": fd},
        w,
        tmp_path / "b",
        model_params=SimParams(pool=4, v6_pool_layout="one-64"),
    )
    assert right["validation_passed"], [x for x in right["validation"] if not x["passed"]]


def test_required_pool_bisection() -> None:
    p = SimParams(subscribers=5000, seed=3)
    tr = generate_trace(p)
    r = required_pool(p, "cfr-flow", target=10, trace=tr)
    assert r["reachable"]
    # flows per window / pool should be near (a bit above) the target for per-flow aliases
    assert 8 <= r["flows_per_alias_per_window"] <= 15
    assert r["median_at_pool"] >= 10
    bigger = required_pool(p, "cfr-flow", target=20, trace=tr)
    assert bigger["pool"] < r["pool"]


@pytest.mark.slow
def test_run_model_small(tmp_path: Path) -> None:
    mp = ModelParams(
        base=SimParams(subscribers=3000),
        full_scale_subscribers=3000,
        pool_sizes=(10, 100, 1000),
        subscriber_counts=(1000, 3000),
        flows_per_hour=(10.0, 20.0),
        epoch_lengths_s=(60.0, 600.0),
        target_anonymity=10.0,
        search_subscribers=(3000,),
        stream_subscribers=3000,
        stream_hours=2.0,
    )
    res = run_model(mp, tmp_path)
    stream = res["profiling_stream"]["policies"]
    assert set(stream) == {"route", "cgn", "cfr-flow", "cfr-epoch"}
    assert stream["route"]["curves"]["strong"]["points"][-1]["observed_s"] == 7200.0
    assert "Profiling over 2 h" in (tmp_path / "model.md").read_text()
    for f in res["figures"].values():
        assert (tmp_path / f).stat().st_size > 0
    flow = res["pool_sweep"]["cfr-flow"]
    assert flow[0]["anonymity_median"] > flow[-1]["anonymity_median"]
    assert all(r["reachable"] for r in res["required_pool"])
    json.dumps(res, allow_nan=False)
