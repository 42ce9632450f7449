"""Re-export of `benchmarks.gate_change` (how a change and its CI are judged), for the CI."""

from benchmarks.gate_change import Estimate, change_between, classify, threshold_for

__all__ = ["Estimate", "change_between", "classify", "threshold_for"]
