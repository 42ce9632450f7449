"""The performance-regression gate, kept importable as `ci.gate` for the CI and its tests.

The gate itself is benchmark analysis and lives in `benchmarks/gate.py` (with
`gate_change`, `gate_rules`, `gate_report`), below the application, so `cfrbench compare`
can run it without importing `ci` (the layer contracts in `.importlinter`). This module only
re-exports it; `python -m ci.gate BASELINE CURRENT` still works.
"""

from benchmarks.gate import (
    FLIPPED,
    IMPROVED,
    MISSING,
    OK,
    REGRESSED,
    UNDECIDED,
    GateError,
    GateRow,
    compare,
    load_tolerances,
    main_compare,
)

__all__ = ["FLIPPED", "IMPROVED", "MISSING", "OK", "REGRESSED", "UNDECIDED", "GateError",
           "GateRow", "compare", "load_tolerances", "main_compare"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main_compare())
