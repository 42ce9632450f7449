"""Component labs: self-benchmarks of the relay (relay_lab, on its own namespace network
labnet with traffic helpers labtools), the ECH endpoints (ech_lab), the testbed itself
(testbed_lab) and the delay line alone (delayline_lab).

Why apart: the deployable packages (`relay/` above all) must not carry measuring harness or
import the benchmarks. The labs sit above `benchmarks/` in the layering: they may import
the relay, the testbed and `benchmarks.stats`, and nothing imports them but tests. Every
namespace, process and temp dir a lab makes is recorded in the run registry
(`testbed.lifecycle`) before it is created, so `cfrbench clean` removes what a killed lab
leaves. Each runs as `python -m labs.<name>` (root).
"""
