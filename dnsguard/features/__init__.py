"""Measurement: payload features per DNS message and traffic features per key and time window.

Nothing here decides anything (that is ``dnsguard.detect``): as in Zeek's SumStats/Notice split,
features are measured once and every detector reads the same numbers.
"""
