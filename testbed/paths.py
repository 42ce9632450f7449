"""Where the project's files, built binaries and run state live."""

from __future__ import annotations

import os
from pathlib import Path

from testbed.errors import EnvironmentProblem

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(os.environ.get("CFRBENCH_BIN_DIR", REPO_ROOT / "build" / "bin"))
RESULTS_DIR = Path(os.environ.get("CFRBENCH_RESULTS_DIR", REPO_ROOT / "results"))
# Run state lives on tmpfs: it vanishes on reboot, exactly when namespaces do.
STATE_DIR = Path(os.environ.get("CFRBENCH_STATE_DIR", "/run/cfrbench"))


def binary(name: str) -> Path:
    """Path of a Go binary built by `make setup`; a clear error if it was not built."""
    path = BIN_DIR / name
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EnvironmentProblem(f"{name} is not built at {path}: run 'make setup' first")
    return path
