"""Time series per client and per registered domain, the classic statistical detectors over
them, and the volume-anomaly alerts they raise (docs/timeseries.md)."""
