"""Outputs: alert records (EVE-style JSON lines) and the run summary."""
