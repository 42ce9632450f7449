"""The Customer-Facing Relay (CFR): a deployable control plane for the Linux kernel's
nftables NAT + conntrack data plane, implementing source-aliasing policies (route, cgn,
nptv6, cfr-flow, cfr-epoch) with anti-spoofing, flow limits, a local mapping log and
status reporting. Entry point: `cfr` (relay.cli:main). See relay/README.md.
"""

__version__ = "0.1.0"
