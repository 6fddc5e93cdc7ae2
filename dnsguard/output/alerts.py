"""Alert records and where they go.

One JSON object per line with flat, stable keys in the spirit of Suricata's EVE JSON:
``timestamp`` (ISO 8601 UTC, microseconds, ``Z``: the packet that completed the evidence),
``event_type``, ``severity``, ``score``, ``domain``, ``src_ip``, ``dest_ip``, ``detectors``,
``reasons``, ``stats``, ``samples``, ``source``, plus ``key`` (what the alert is about) and
``sensor``. Query names are presentation-format strings (non-printable octets as ``\\DDD``), so
nothing a packet carries can break a line or forge another record. Each line is flushed as it is
written: an alert raised is an alert kept, even if the process dies next.

Example:
    >>> import io
    >>> out = io.StringIO(); w = AlertWriter(out)
    >>> w.write({"timestamp": iso_time(0.5), "event_type": "dns_tunnel", "domain": "a\\nb"})
    True
    >>> out.getvalue()[-18:]
    '"domain": "a\\\\nb"}\\n'
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import TextIO

from dnsguard.decode.packet import ip_text
from dnsguard.output.communityid import PROTO_TCP, PROTO_UDP, community_id

log = logging.getLogger(__name__)

EVENT_TUNNEL = "dns_tunnel"


def iso_time(ts: float) -> str:
    """ISO 8601 UTC with microseconds and ``Z``."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):  # absurd capture timestamps
        return "1970-01-01T00:00:00.000000Z"


#: Alert ids are UUIDs of version 5 in this namespace (a fixed, arbitrary UUID).
ALERT_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")


def alert_id(sensor: str, event_type: str, scope: str, ident, ts: float,
             detectors) -> str:
    """A UUID (version 5) derived from what the alert is: the sensor, the key, the detectors
    and the capture time of the packet that completed the evidence. Unique (two alerts
    differ in one of these), and the same when the same traffic is read again (a replay
    repeated, a restarted sensor re-reading a capture): a ticket can cite it.

    >>> a = alert_id("s", "dns_tunnel", "domain", ("d", "t.example"), 1.5, ["r"])
    >>> a == alert_id("s", "dns_tunnel", "domain", ("d", "t.example"), 1.5, ["r"])
    True
    >>> a == alert_id("s", "dns_tunnel", "domain", ("d", "u.example"), 1.5, ["r"])
    False
    """
    key = "\0".join(str(k.hex() if isinstance(k, bytes) else k) for k in _flat(ident))
    text = "\0".join((sensor, event_type, scope, key, repr(float(ts)), ",".join(detectors)))
    return str(uuid.uuid5(ALERT_NAMESPACE, text))


def _flat(ident) -> list:
    out: list = []
    for k in ident if isinstance(ident, tuple) else (ident,):
        if isinstance(k, tuple):
            out += _flat(k)
        else:
            out.append(k)
    return out


def alert_record(ts: float, event_type: str, scope: str, severity: str, score: float,
                 detectors: list[str], reasons: list[str], domain: str | None,
                 client: bytes | None, server: bytes | None, stats: dict, samples,
                 source: str, sensor: str = "", *, ident=None, description: str = "",
                 mitre=(), escalates: str | None = None, first_seen: float | None = None,
                 last_seen: float | None = None, bytes_up: int = 0, bytes_down: int = 0,
                 ports: tuple[int, int, bool] | None = None) -> dict:
    """An alert's record: every field, in its order, in one place (docs/alerts.md; the JSON
    schema ``dnsguard/data/alert.schema.json``). ``ident`` is the key (for ``alert_id``);
    ``ports`` the (client port, server port, over TCP) of the packet that completed the
    evidence when known (then ``community_id`` is its flow's).

    >>> r = alert_record(0.0, EVENT_TUNNEL, "domain", "high", 0.9, ["rule"], ["why"],
    ...                  "t.example", bytes([192, 0, 2, 1]), bytes([192, 0, 2, 53]), {},
    ...                  ["a.t.example"], "x", ports=(40000, 53, False))
    >>> r["src_ip"], r["dest_ip"], r["community_id"], "sensor" in r
    ('192.0.2.1', '192.0.2.53', '1:8uhG6bwfUhcPxBohcqJWKZOCqNM=', False)
    """
    if ports is not None and client and server:
        cport, sport, tcp = ports
        cid = community_id(client, server, cport, sport, PROTO_TCP if tcp else PROTO_UDP)
        proto: str | None = "TCP" if tcp else "UDP"
    else:
        cport = sport = cid = proto = None
    rec = {
        "timestamp": iso_time(ts),
        "alert_id": alert_id(sensor, event_type, scope,
                             ident if ident is not None else (domain, client, server), ts,
                             detectors),
        "event_type": event_type,
        "severity": severity,
        "score": score,
        "domain": domain,
        "src_ip": ip_text(client) if client else None,
        "dest_ip": ip_text(server) if server else None,
        "src_port": cport,
        "dest_port": sport,
        "proto": proto,
        "community_id": cid,
        "scope": scope,
        "detectors": detectors,
        "description": description or ", ".join(detectors),
        "mitre": sorted(set(mitre)),
        "reasons": reasons,
        "escalates": escalates,
        "merged": 1,
        "first_seen": iso_time(first_seen if isinstance(first_seen, int | float) else ts),
        "last_seen": iso_time(last_seen if isinstance(last_seen, int | float) else ts),
        "bytes_up": int(bytes_up or 0),
        "bytes_down": int(bytes_down or 0),
        "stats": stats,
        "samples": list(samples)[:3],
        "source": source,
    }
    if sensor:
        rec["sensor"] = sensor
    return rec


#: Alerts kept in memory while the output cannot be written (disk full, read-only, …).
MAX_PENDING = 10_000
#: At most one "cannot write" log line per this many seconds (wall time).
ERROR_LOG_EVERY = 60.0


class AlertWriter:
    """Writes alerts as JSON lines to a stream or file, flushed per line, and loses none
    silently.

    The standard library's ``json`` is used on purpose: alerts are rare (one per key per
    suppression window), so orjson's speed would buy nothing and cost a compiled dependency.
    ``ensure_ascii`` keeps every line 7-bit clean for terminals and log shippers.

    When the output cannot be written (``OSError``: disk full, file system read-only, I/O
    error), the line is kept, in order, in a bounded in-memory queue (``pending``, at most
    ``max_pending`` lines) and retried before the next alert and whenever :meth:`retry` is
    called (the daemon: every second); a partially written line is completed, never
    duplicated. The error is logged at most once per ``ERROR_LOG_EVERY`` seconds with the
    number pending. When the queue is full, the oldest pending line is dropped from the queue,
    counted in ``dropped`` and logged at ERROR with its JSON (so the journal still has it).
    ``count`` is the lines written, ``errors`` the failed write attempts.
    """

    def __init__(self, stream: TextIO | None = None, path: str | None = None,
                 max_pending: int = MAX_PENDING) -> None:
        self.path = path
        self.count = 0
        self.errors = 0
        self.dropped = 0
        self.max_pending = max_pending
        self.pending: deque[bytes] = deque()
        self.last_error: str | None = None
        self._partial = False  # pending[0] is the rest of a line already partly written
        self._partial_line = b""  # … and this the whole line
        self._next_log = 0.0
        self._failing = False
        self._stream = stream
        self._fh = None  # raw file (path mode): write() says how much went out
        if path is not None:
            self._fh = self._open(path)

    @staticmethod
    def _open(path: str):
        return open(path, "ab", buffering=0)  # noqa: SIM115

    def write(self, alert: dict) -> bool:
        """Write one alert (after any pending ones). True if it is in the output now; False
        if it is pending (or, the queue being full, logged to stderr and dropped)."""
        line = json.dumps(alert, ensure_ascii=True, separators=(", ", ": "), default=str)
        self.pending.append((line + "\n").encode("ascii"))
        if len(self.pending) > self.max_pending:
            q = self.pending
            if self._partial:  # the head is the rest of a half-written line: finish it first
                head = q.popleft()
                self._drop(q.popleft())
                q.appendleft(head)
            else:
                self._drop(q.popleft())
        before = self.count
        self._flush_pending()
        return not self.pending and self.count > before

    def retry(self) -> int:
        """Try to write the pending alerts; return how many were written."""
        if not self.pending:
            return 0
        before = self.count
        self._flush_pending()
        return self.count - before

    @property
    def name(self) -> str:
        return self.path if self.path is not None else getattr(self._stream, "name", "stream")

    def _flush_pending(self) -> None:
        q = self.pending
        while q:
            data = q[0]
            try:
                n = self._write_bytes(data)
            except BrokenPipeError:
                if self._fh is None:  # stdout into a closed pipe (`| head`): stop quietly
                    raise
                self.errors += 1
                self._failed(OSError(errno.EPIPE, "broken pipe"))
                return
            except (OSError, ValueError) as e:  # ValueError: write to a closed file
                self.errors += 1
                self._failed(e)
                return
            if n < len(data):  # a short write (disk filled mid-line): keep the rest
                if not self._partial:
                    self._partial_line = data
                q[0] = data[n:]
                self._partial = True
                self.errors += 1
                self._failed(OSError(errno.ENOSPC, "short write"))
                return
            q.popleft()
            self._partial = False
            self.count += 1
        if self._failing:  # the output took everything again
            self._failing = False
            self._next_log = 0.0  # a new outage is logged at once
            log.warning("%s: alert output writable again; all pending alerts written "
                        "(%d dropped in all)", self.name, self.dropped)

    def _write_bytes(self, data: bytes) -> int:
        if self._fh is not None:
            n = self._fh.write(data)
            return len(data) if n is None else n
        assert self._stream is not None
        s = self._stream
        s.write(data.decode("ascii"))
        s.flush()
        return len(data)

    def _failed(self, e: Exception) -> None:
        self._failing = True
        self.last_error = getattr(e, "strerror", None) or str(e)
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + ERROR_LOG_EVERY
            log.error("%s: cannot write alerts (%s): %d pending in memory (at most %d kept, "
                      "retried every second), %d dropped so far", self.name, self.last_error,
                      len(self.pending), self.max_pending, self.dropped)

    def _drop(self, data: bytes) -> None:
        self.dropped += 1
        log.error("alert dropped, the output %s is still unwritable and %d alerts are "
                  "pending: %s", self.name, self.max_pending,
                  data.decode("ascii", "replace").rstrip("\n"))

    def dump_pending(self, stream: TextIO | None = None) -> int:
        """Last resort (replay ending, daemon stopping): print the pending alerts to
        ``stream`` (stderr), count them as dropped from the output, return how many."""
        out = stream if stream is not None else sys.stderr
        n = 0
        if self._partial and self.pending:  # a torn line: its start is in the output
            self.pending[0] = self._partial_line
            self._partial = False
            with contextlib.suppress(OSError, ValueError):
                out.write(f"dnsguard: {self.name}: the last line is incomplete (the disk "
                          "filled while it was written); it is the first alert below\n")
        while self.pending:
            data = self.pending.popleft()
            n += 1
            with contextlib.suppress(OSError, ValueError):
                out.write("dnsguard: alert not written: "
                          + data.decode("ascii", "replace").rstrip("\n") + "\n")
        with contextlib.suppress(OSError, ValueError):
            out.flush()
        self.dropped += n
        return n

    def reopen(self) -> None:
        """Reopen the file (after logrotate moved it); streams are left as they are."""
        if self.path is not None:
            old = self._fh
            self._fh = self._open(self.path)
            if old is not None:
                with contextlib.suppress(OSError):
                    old.close()
            self.retry()

    def close(self) -> None:
        """Flush what can be flushed, fsync and close (pending alerts stay in ``pending``:
        the caller decides, see :meth:`dump_pending`)."""
        self.retry()
        if self._fh is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fh.fileno())
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


def stdout_writer() -> AlertWriter:
    return AlertWriter(sys.stdout)
