"""The layer contracts in `.importlinter` catch an upward import (item 1 of issue 16).

A copy of the project's packages (Python files only) is linted with the repository's own
contracts, once as it is and once with one injected upward import; only the second may
name that import. A contract that silently stopped matching (a renamed package, a layer
dropped from the list) would let the injected line through and fail this test.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _root_packages() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return parser["importlinter"]["root_packages"].split()


def _copy_tree(dest: Path) -> Path:
    """The root packages' .py files under `dest`, with the contracts beside them."""
    for package in _root_packages():
        shutil.copytree(REPO / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "baselines",
                                                      "golden", "*.json", "*.jsonl"))
    shutil.copy(CONFIG, dest / ".importlinter")
    return dest


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy first on the path, so grimp analyses it rather than the installed repository.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / ".importlinter")]
    return subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def _inject(tree: Path, module: str, line: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # injected by test_import_layers\n")


@pytest.mark.parametrize(
    ("module", "line", "contract", "arrow"),
    [
        ("testbed/errors.py", "import benchmarks.registry",
         "Layers point down", "testbed.errors -> benchmarks.registry"),
        ("topologies/base.py", "import labs",
         "Layers point down", "topologies.base -> labs"),
        ("relay/errors.py", "import testbed.errors",
         "The relay is deployable alone", "relay.errors -> testbed.errors"),
    ],
)
def test_an_injected_upward_import_breaks_a_contract(tmp_path: Path, module: str, line: str,
                                                     contract: str, arrow: str) -> None:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: run 'make setup' (import-linter is a dev extra)")
    clean = _lint(_copy_tree(tmp_path / "clean"))
    assert arrow not in clean.stdout, clean.stdout
    tree = _copy_tree(tmp_path / "injected")
    _inject(tree, module, line)
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
    assert arrow in broken, result.stdout


def test_the_repository_keeps_its_layers() -> None:
    """What `make test` checks, here too: the tree as committed breaks no contract."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: run 'make setup' (import-linter is a dev extra)")
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout
    assert "0 broken" in result.stdout
