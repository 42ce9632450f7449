"""Where and with what a run was made: git state, kernel, OS, CPU, tool versions.

Why: a number without its provenance cannot be compared or reproduced. Every probe here is
best-effort: a missing tool or file yields null, never an exception, because provenance must
not be the reason a finished run loses its results.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent

#: tool -> (argv to print its version, regex whose first group is the version)
TOOL_COMMANDS: dict[str, tuple[Sequence[str], str]] = {
    "go": (("go", "version"), r"go version go(\S+)"),
    "iperf3": (("iperf3", "--version"), r"iperf (\S+)"),
    "nft": (("nft", "--version"), r"nftables v(\S+)"),
    "named": (("named", "-v"), r"BIND (\S+)"),
    "tinyproxy": (("tinyproxy", "-v"), r"tinyproxy (\S+)"),
    "mininet": (("mn", "--version"), r"(\S+)"),
    # forwarding_cost times packets with kernel tracepoints through perf
    "perf": (("perf", "--version"), r"perf version (\S+)"),
}


def _run(argv: Sequence[str], cwd: Path | None = None, timeout: float = 5.0) -> str | None:
    """stdout+stderr of a command, or None if it is missing, fails or hangs."""
    exe = shutil.which(argv[0]) or shutil.which(argv[0], path=str(Path(sys.prefix) / "bin"))
    if exe is None:
        return None
    try:
        p = subprocess.run(
            [exe, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return None
    return (p.stdout + p.stderr).strip()


def tool_version(name: str) -> str | None:
    """Version string of one tool from TOOL_COMMANDS (None if absent or unparsable)."""
    if name == "python":
        return platform.python_version()
    if name not in TOOL_COMMANDS:
        return None
    argv, pattern = TOOL_COMMANDS[name]
    out = _run(argv)
    if out is None and name == "mininet":
        try:
            from importlib.metadata import version

            return version("mininet")
        except Exception:  # noqa: BLE001 - any failure means "unknown"
            return None
    if out is None:
        return None
    m = re.search(pattern, out)
    return m.group(1) if m else out.splitlines()[0][:80]


def tool_versions(names: Sequence[str] | None = None) -> dict[str, str | None]:
    names = list(names) if names is not None else [*TOOL_COMMANDS, "python"]
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = tool_version(n)
        except Exception:  # noqa: BLE001 - never crash on provenance
            out[n] = None
    out.setdefault("numpy", np.__version__)
    return out


def git_state(repo: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository; (None, None) outside git or without commits."""
    commit = _run(("git", "rev-parse", "HEAD"), cwd=repo)
    if commit is None:
        return None, None
    status = _run(("git", "status", "--porcelain"), cwd=repo)
    return commit.splitlines()[-1], (None if status is None else bool(status))


def os_release(path: str = "/etc/os-release") -> str | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else None


def cpu_model(path: str = "/proc/cpuinfo") -> str | None:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None
    m = re.search(r"^(?:model name|Model|Hardware)\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else (platform.processor() or None)


def empty_link_emulation() -> dict[str, Any]:
    """Placeholder for a run whose runner did not report its delay mechanism."""
    return {
        "mechanism": None,
        "calibration": {
            "configured_ms": None, "measured_ms": None,
            "error_median_ms": None, "error_p99_ms": None,
        },
    }


def calibration(configured_ms: float, measured_ms: Sequence[float]) -> dict[str, Any]:
    """Calibration block from one configured delay and measured one-way delays: the median
    measured value and the median / p99 of |measured - configured|."""
    m = np.asarray(measured_ms, dtype=float)
    if m.size == 0:
        return {"configured_ms": configured_ms, "measured_ms": None,
                "error_median_ms": None, "error_p99_ms": None}
    err = np.abs(m - configured_ms)
    return {
        "configured_ms": float(configured_ms),
        "measured_ms": float(np.median(m)),
        "error_median_ms": float(np.median(err)),
        "error_p99_ms": float(np.percentile(err, 99)),
    }


def tcp_default_congestion(path: str = "/proc/sys/net/ipv4/tcp_congestion_control") -> str | None:
    """The host's default TCP congestion control. New namespaces inherit it, so it is what
    every socket uses that does not choose its own: the proxies' and the TLS clients'
    (iperf3 pins its own, see benchmarks/tools.py)."""
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def collect_provenance(
    probe: Mapping[str, Any] | None = None,
    link_emulation: Mapping[str, Any] | None = None,
    repo: Path = REPO_ROOT,
    tools: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Provenance block of results.json. `probe` is the capability probe's report and
    `link_emulation` {mechanism, calibration{...}} comes from the runner; both are stored as
    given (the schema checks their shape)."""
    commit, dirty = git_state(repo)
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "kernel": platform.release() or None,
        "os": os_release(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "tcp_default_congestion_control": tcp_default_congestion(),
        "tool_versions": tool_versions(tools),
        "probe": dict(probe) if probe is not None else {},
        "link_emulation": dict(link_emulation) if link_emulation else empty_link_emulation(),
    }
