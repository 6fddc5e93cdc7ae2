"""dnsguard: detect DNS tunneling and data exfiltration over DNS from packet captures.

The data path reads in order, one package per stage:

    capture  ->  decode  ->  dns  ->  features  ->  detect  ->  output
    (frames)     (L2-L4)     (wire)    (payload,     (rules,     (alerts,
                                        windows)      model)      summary)

``dnsguard.pipeline`` wires the stages together; replay and live capture share it.
"""

__version__ = "0.1.0"

import os as _os

# numpy's OpenBLAS starts a thread per core that spins after each call; dnsguard's numpy work
# is small (series steps, the model's scaler), and on a sensor those threads only take CPU
# from the capture loop (measured: ~3% of a replay's samples spinning). The user's own
# setting wins.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dnsguard import _compiled

_compiled.install()  # before any hot-path module is imported
