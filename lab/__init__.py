"""The dnsguard lab: network namespaces with a real recursive resolver and a stand-in internet.

See ``lab/README.md``. Import ``Lab``/``LabConfig`` to build one and run your own workload in
its client namespace; ``python -m lab.generate`` makes benign capture sets.
"""

from lab.netns import LabError
from lab.topology import AUTHORITY, PEER, RESOLVER, Lab, LabConfig, LabContext

__all__ = ["AUTHORITY", "PEER", "RESOLVER", "Lab", "LabConfig", "LabContext", "LabError"]
