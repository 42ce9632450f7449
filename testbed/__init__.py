"""cfrbench testbed: emulated access, ISP-edge and CDN networks in Linux network namespaces.

Layering follows Mininet's: nodes run commands (`testbed.netns`), links configure interfaces
(`testbed.links`), the network composes them (`testbed.network`). Every resource a run makes
is named with the run prefix and recorded (`testbed.lifecycle`) so `cfrbench clean` removes
exactly that.
"""

__version__ = "0.1.0"
