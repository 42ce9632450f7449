"""Transitional alias of `cfrbench.cli` (the command line moved to the application package).

Why it exists: `tests/unit/test_bench_gate.py` and console scripts installed before the move
still name `testbed.cli`. It is the one upward import the layer contracts tolerate
(`ignore_imports` in `.importlinter`); delete both once nothing names `testbed.cli`.
"""

from cfrbench.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
