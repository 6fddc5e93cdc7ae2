"""The human-readable run summary (stderr)."""

from __future__ import annotations

from typing import TextIO


def print_summary(res, out: TextIO) -> None:
    s = res.summary
    w = out.write
    w(f"dnsguard: {s['packets']} packets in {s['seconds']} s "
      f"({s['packets_per_second']:,} packets/s, hot path {s.get('hot_path', '?')}), "
      f"{res.files_read} file(s)\n")
    outcomes = ", ".join(f"{k} {v}" for k, v in s["outcomes"].items() if v)
    w(f"  outcomes: {outcomes or 'none'}\n")
    if s["malformed"]:
        w("  malformed/unsupported by reason: "
          + ", ".join(f"{k} {v}" for k, v in sorted(s["malformed"].items())) + "\n")
    w(f"  DNS: {s['queries']} queries, {s['responses']} responses, "
      f"{s['registered_domains']} registered domains, "
      f"{s['allowlisted_queries']} allowlisted queries\n")
    ev = s["evicted_keys"]
    w("  state: tracked " + ", ".join(f"{k} {v}" for k, v in s["tracked_keys"].items())
      + "; evicted " + ", ".join(f"{k} {v}" for k, v in ev.items()) + "\n")
    w(f"  alerts: {s['alerts']} (escalations: {s.get('escalated_alerts', 0)}, merged into "
      f"one record: {s.get('merged_alerts', 0)}, suppressed "
      f"repeats: {s['suppressed_alerts']}, held back by the rate limit: "
      f"{s.get('rate_limited_alerts', 0)})\n")
    if s.get("dns_log"):
        d = s["dns_log"]
        w(f"  DNS log: {d['written']} records, {d['dropped_by_rate']} over its rate, "
          f"{d['write_errors']} not written\n")
    tap = s.get("dnstap")
    if tap:
        msgs = ", ".join(f"{k} {v}" for k, v in sorted(tap["messages"].items())) or "none"
        errs = ", ".join(f"{k} {v}" for k, v in sorted(tap["errors"].items())) or "none"
        w(f"  dnstap: {tap['frames']['data']} frames; messages {msgs}; not analysed {errs}\n")
    for d in res.damaged:
        w(f"  damaged: {d}\n")
    for e in res.errors:
        w(f"  unreadable: {e}\n")
