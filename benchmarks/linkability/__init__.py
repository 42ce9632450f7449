"""Linkability analysis: what the ECH front door can still join, per policy and per signal.

Modules: ``workload`` (seeded subscriber workload for the load generator), ``observations``
(join client ground truth with the front-door log), ``linkers`` (adversaries), ``metrics``
(pairwise precision/recall, anonymity sets, destination exposure, trait inference),
``report`` (table, plots, results.json section), ``simulator`` (ISP-scale model of each
policy's alias choice), ``model`` (sweeps and pool-size search), ``analysis`` (the emulation
entry point). Entry points: ``analyse_emulation`` and ``run_model``.
"""

from benchmarks.linkability.analysis import analyse_emulation
from benchmarks.linkability.model import run_model

__all__ = ["analyse_emulation", "run_model"]
