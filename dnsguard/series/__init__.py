"""Time series per client and per registered domain, the classic statistical detectors over
them, and the volume-anomaly alerts they raise (docs/timeseries.md)."""

#: The description of a dns_volume_anomaly alert (what the series detectors look for). Here,
#: not in series/detectors.py: the judge names it without importing scipy.
DESCRIPTION = ("A sudden rise in a client's or a domain's DNS volume (queries, distinct "
               "names, bytes) against its own recent history, confirmed by several "
               "statistical tests: no sign of data in the names by itself.")
