"""Time series per client and per registered domain, the classic statistical detectors over
them, and the volume-anomaly alerts they raise (docs/timeseries.md)."""

#: The description of a dns_volume_anomaly alert (what the series detectors look for). Here,
#: not in series/detectors.py: the judge names it without importing scipy.
DESCRIPTION = ("A sustained rise in the bytes a client or a domain moves over DNS (with its "
               "queries and distinct names) against its own recent history, or a turn of "
               "its query types toward data-carrying ones, confirmed by several statistical "
               "tests: no sign of data in the names by itself.")
