"""Report: from a golden run directory (copied to tmp) render report.md, report.html and
non-empty PNGs, re-analysing raw/ only; a console table shows the verdicts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console

from benchmarks.report import fmt, render_report

GOLDEN = Path(__file__).resolve().parent / "golden" / "bench"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(GOLDEN / name, dst)
    return dst


def _check_png(p: Path) -> None:
    data = p.read_bytes()
    assert data[:8] == PNG_MAGIC, p
    assert len(data) > 5000, (p, len(data))


def test_render_quick_run(tmp_path: Path) -> None:
    run = _copy("run_quick", tmp_path)
    console = Console(record=True, width=200)
    out = render_report(run, console=console)
    md = out["markdown"].read_text()
    html = out["html"].read_text()
    assert "# cfrbench report: run_quick" in md
    assert "| proxy | **slower** |" in md
    assert "| cfr-flow | **equivalent** |" in md
    assert "<h1>cfrbench report: run_quick</h1>" in html
    assert 'src="added_delay_latency.png"' in html
    names = sorted(p.name for p in out["plots"])
    assert names == sorted([
        "added_delay_latency.png",
        "cdf_latency_connection_handshake_time.png",
        "cdf_latency_connection_ttfb.png",
        "throughput_throughput_throughput.png",
        "throughput_connrate_conn_rate.png",
    ])
    for p in out["plots"]:
        _check_png(p)
        assert f"({p.name})" in md
    text = console.export_text()
    assert "direct → proxy" in text and "slower" in text and "equivalent" in text


def test_render_sweep_run_draws_sweep_plots(tmp_path: Path) -> None:
    run = _copy("run_sweep", tmp_path)
    out = render_report(run, quiet=True)
    names = {p.name for p in out["plots"]}
    assert {"sweep_latency_handshake_time.png", "sweep_latency_ttfb.png"} <= names
    for p in out["plots"]:
        _check_png(p)
    assert "delay_ms=50" in out["markdown"].read_text()


def test_render_from_raw_records_alone(tmp_path: Path) -> None:
    run = _copy("run_quick", tmp_path)
    (run / "results.json").unlink()
    out = render_report(run, quiet=True)
    assert (run / "results.json").is_file()
    assert out["markdown"].stat().st_size > 1000
    assert out["html"].stat().st_size > 1000
    assert any(p.name == "added_delay_latency.png" for p in out["plots"])
    for p in out["plots"]:
        _check_png(p)


def test_html_escapes_text(tmp_path: Path) -> None:
    run = _copy("run_sweep", tmp_path)
    import json

    data = json.loads((run / "results.json").read_text())
    data["provenance"]["cpu_model"] = "<script>alert(1)</script>"
    (run / "results.json").write_text(json.dumps(data))
    out = render_report(run, quiet=True)
    html = out["html"].read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


@pytest.mark.parametrize("x, s", [(None, "–"), (44.0, "44"), (0.31472, "0.3147"),
                                  (19.668, "19.67"), (123456.7, "123457")])
def test_fmt(x: float | None, s: str) -> None:
    assert fmt(x) == s


def test_leak_paragraph_names_control_categories_and_the_set_aside_rule() -> None:
    """The report says which categories the positive control hit, which it missed (then the
    check is not valid), and that only payload-free close segments within a limit were set
    aside."""
    from benchmarks.report import leak_paragraph

    leak = {"passed": False, "packets": 1200, "policies": ["cfr-epoch", "cfr-flow"], "hits": 0,
            "control_hits": 40, "control_categories": {"ipv4": 30, "ipv6": 10, "icmp": 0},
            "control_missing": ["icmp"], "set_aside": 3, "set_aside_limit": 8,
            "set_aside_over_limit": []}
    text = leak_paragraph(leak)
    assert "ipv4 30, ipv6 10, icmp 0" in text
    assert "no hit in icmp" in text and "not valid" in text
    assert "3 packets were set aside: only payload-free FIN/RST/ACK segments" in text
    assert "(limit 8 per capture)" in text
    assert text.endswith("Verdict: **FAILED**.")
    clean = {**leak, "passed": True, "control_missing": [], "set_aside": 0}
    text = leak_paragraph(clean)
    assert "set aside" not in text and "not valid" not in text
    assert text.endswith("Verdict: **passed**.")
