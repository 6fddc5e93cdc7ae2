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
    >>> out.getvalue()[-18:]
    '"domain": "a\\\\nb"}\\n'
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TextIO

log = logging.getLogger(__name__)

EVENT_TUNNEL = "dns_tunnel"


def iso_time(ts: float) -> str:
    """ISO 8601 UTC with microseconds and ``Z``."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):  # absurd capture timestamps
        return "1970-01-01T00:00:00.000000Z"


class AlertWriter:
    """Writes alerts as JSON lines to a stream or file, flushed per line.

    The standard library's ``json`` is used on purpose: alerts are rare (one per key per
    suppression window), so orjson's speed would buy nothing and cost a compiled dependency.
    ``ensure_ascii`` keeps every line 7-bit clean for terminals and log shippers.
    """

    def __init__(self, stream: TextIO | None = None, path: str | None = None) -> None:
        self.path = path
        self.count = 0
        self.errors = 0
        self._stream = stream
        if path is not None:
            self._stream = self._open(path)

    @staticmethod
    def _open(path: str) -> TextIO:
        return open(path, "a", encoding="ascii", buffering=1)  # noqa: SIM115

    def write(self, alert: dict) -> None:
        line = json.dumps(alert, ensure_ascii=True, separators=(", ", ": "), default=str)
        assert self._stream is not None
        self._stream.write(line + "\n")
        self._stream.flush()
        self.count += 1

    def reopen(self) -> None:
        """Reopen the file (after logrotate moved it); streams are left as they are."""
        if self.path is not None:
            old = self._stream
            self._stream = self._open(self.path)
            if old is not None:
                old.close()

    def close(self) -> None:
        if self.path is not None and self._stream is not None:
            try:
                os.fsync(self._stream.fileno())
            except OSError:
                pass
            self._stream.close()
            self._stream = None


def stdout_writer() -> AlertWriter:
    return AlertWriter(sys.stdout)
