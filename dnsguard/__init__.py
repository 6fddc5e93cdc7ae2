"""dnsguard: detect DNS tunneling and data exfiltration over DNS from packet captures.

The data path reads in order, one package per stage:

    capture  ->  decode  ->  dns  ->  features  ->  detect  ->  output
    (frames)     (L2-L4)     (wire)    (payload,     (rules,     (alerts,
                                        windows)      model)      summary)

``dnsguard.pipeline`` wires the stages together; replay and live capture share it.
"""

__version__ = "0.1.0"
