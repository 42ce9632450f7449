"""Reliability and security under load, faults and hostile input (issue 7).

`run_resilience` brings up ONE network and runs each scenario on it in priority order;
see `scenarios.py` for what each one measures and its pass criteria.
"""

from benchmarks.resilience.scenarios import run_resilience

__all__ = ["run_resilience"]
