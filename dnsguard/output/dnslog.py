"""The optional DNS transaction log (``--dns-log PATH``, config ``dns_log``): one Suricata
EVE ``event_type: "dns"`` record per query and per response, so an analyst can pivot from an
alert (its ``community_id``, addresses, time) to the lookups around it, as with Zeek's
``dns.log``.

Bounded: at most ``rate`` records per second of capture time after a burst of ``burst`` (a
token bucket, as the alerts'); records past it are counted in ``dropped`` (the run summary,
``dnsguard_dns_log_records_total{result="dropped"}``), never silently lost. Rotated like the
alert file: logrotate moves it and ``reopen()`` (SIGHUP) opens a new one. Lines are written
through a buffer (a busy resolver asks thousands of names a second) and flushed at least
once a second of wall time, and at close.

Example:
    >>> import io
    >>> from dnsguard.dns.message import parse
    >>> wire = bytes.fromhex("12340100000100000000000003777777076578616d706c6503636f6d0000010001")
    >>> log = DnsLog(stream=io.StringIO())
    >>> log.message(1.5, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53]), 40000, 53, False,
    ...             parse(wire))
    >>> rec = json.loads(log.stream.getvalue())
    >>> rec["event_type"], rec["dns"]["type"], rec["dns"]["rrname"], rec["dns"]["rrtype"]
    ('dns', 'query', 'www.example.com', 'A')
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import TextIO

from dnsguard.decode.packet import ip_text
from dnsguard.dns import rdatatype
from dnsguard.output.alerts import iso_time
from dnsguard.output.communityid import PROTO_TCP, PROTO_UDP, community_id
from dnsguard.ratelimit import TokenBucket

log = logging.getLogger(__name__)

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH",
          10: "NOTZONE", 16: "BADVERS"}
DEFAULT_RATE = 2000.0  # records per second (capture time)
DEFAULT_BURST = 20_000
FLUSH_EVERY = 1.0  # seconds (wall time)


class DnsLog:
    """Writes EVE ``dns`` records (JSON lines) to ``path`` (appended) or a stream."""

    def __init__(self, path: str | None = None, stream: TextIO | None = None,
                 rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST,
                 sensor: str = "") -> None:
        self.path, self.stream = path, stream
        self.rate, self.burst = rate, burst
        self.sensor = sensor
        self.written = self.dropped = self.errors = 0
        self.bucket = TokenBucket(rate, burst)
        self._next_flush = 0.0
        self._fh = self._open() if path is not None else None

    def _open(self):
        return open(self.path, "a", encoding="ascii", buffering=1 << 16)  # noqa: SIM115

    def message(self, ts: float, src: bytes, dst: bytes, sport: int, dport: int, tcp: bool,
                m) -> None:
        """One parsed DNS message (:class:`dnsguard.dns.message.Message`) from src to dst."""
        if not self.bucket.take(ts):
            self.dropped += 1
            return
        proto = PROTO_TCP if tcp else PROTO_UDP
        dns: dict = {"type": "answer" if m.qr else "query", "id": m.id,
                     "rrname": m.qname or "", "rrtype": rdatatype.to_text(m.qtype)}
        if m.qr:
            dns["rcode"] = RCODES.get(m.rcode, str(m.rcode))
            dns["answers"] = len(m.answers)
        rec = {"timestamp": iso_time(ts), "event_type": "dns",
               "src_ip": ip_text(src), "src_port": sport,
               "dest_ip": ip_text(dst), "dest_port": dport,
               "proto": "TCP" if tcp else "UDP",
               # the flow, client first: the same value for its query and its answer
               "community_id": (community_id(dst, src, dport, sport, proto) if m.qr
                                else community_id(src, dst, sport, dport, proto)),
               "dns": dns}
        if self.sensor:
            rec["sensor"] = self.sensor
        self._write(json.dumps(rec, ensure_ascii=True, separators=(", ", ": ")) + "\n")

    def _write(self, line: str) -> None:
        out = self._fh if self._fh is not None else self.stream
        try:
            out.write(line)
            self.written += 1
            now = time.monotonic()
            if now >= self._next_flush:
                self._next_flush = now + FLUSH_EVERY
                out.flush()
        except (OSError, ValueError) as e:
            self.errors += 1
            if self.errors == 1 or not self.errors % 10_000:
                log.error("%s: cannot write the DNS log (%s): %d records lost so far",
                          self.path or "stream", getattr(e, "strerror", None) or e,
                          self.errors)

    def summary(self) -> dict:
        return {"written": self.written, "dropped_by_rate": self.dropped,
                "write_errors": self.errors}

    def reopen(self) -> None:
        """After logrotate moved the file (SIGHUP)."""
        if self.path is None:
            return
        old, self._fh = self._fh, self._open()
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()

    def close(self) -> None:
        out = self._fh if self._fh is not None else self.stream
        with contextlib.suppress(OSError, ValueError):
            out.flush()
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
