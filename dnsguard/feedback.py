"""Analyst verdicts the model learns from and honours (``dnsguard label``).

The feedback file is JSON lines, one verdict per line, appended to, never rewritten::

    {"time": "2026-11-21T23:50:00Z", "target": "example.com", "label": "benign",
     "by": "alice", "note": "backup service"}

``target`` is a domain (it covers every key whose registered domain is the same, a parent or a
child of it, label-wise) or an IP address (client and flow keys of that address). ``label`` is
``tunnel`` or ``benign``. The last line for a target wins, so a verdict is revised by labelling
again. Blank lines and lines starting with ``#`` are ignored; a bad line is logged and skipped.

Example:
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "fb.jsonl")
    >>> append_label(p, "Tunnel.Example.COM.", "tunnel", by="t")["target"]
    'tunnel.example.com'
    >>> [(r["target"], r["label"]) for r in read_feedback(p)]
    [('tunnel.example.com', 'tunnel')]
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LABELS = ("tunnel", "benign")


def normalize_target(text: str) -> str:
    t = text.strip().rstrip(".").lower()
    if not t:
        raise ValueError("empty target: give a domain or an IP address")
    try:
        return str(ipaddress.ip_address(t))
    except ValueError:
        pass
    if any(c.isspace() for c in t) or ".." in t or len(t) > 253:
        raise ValueError(f"{text!r} is not a domain name or an IP address")
    return t


def append_label(path: str | Path, target: str, label: str, by: str | None = None,
                 note: str = "") -> dict:
    """Append one verdict (one ``write`` of one line, fsync'd) and return it."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}")
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "target": normalize_target(target), "label": label}
    try:
        rec["by"] = by if by is not None else getpass.getuser()
    except (KeyError, OSError):
        rec["by"] = str(os.getuid()) if hasattr(os, "getuid") else "?"
    if note:
        rec["note"] = note
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(rec, sort_keys=False) + "\n").encode()
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return rec


#: A feedback line longer than this is skipped (a verdict is ~150 bytes): a huge line must
#: not make the sensor allocate without bound.
MAX_LINE = 64 * 1024
#: Bad lines reported individually per read; the rest are counted in one summary line.
MAX_WARNINGS = 20


@dataclass
class FeedbackRead:
    """What one read of a feedback file found."""

    records: list[dict] = field(default_factory=list)
    bad: int = 0  # lines skipped (invalid JSON, unknown label, bad target, too long …)
    error: str | None = None  # the file could not be read at all (None: it could, or missing)
    missing: bool = False


def _check(rec) -> dict:
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if rec.get("label") not in LABELS:
        raise ValueError(f"unknown label {str(rec.get('label'))[:40]!r}: needs 'target' and "
                         "'label' (tunnel or benign)")
    if not isinstance(rec.get("target"), str):
        raise ValueError("needs 'target' (a domain or an IP address, a string) and 'label'")
    rec["target"] = normalize_target(rec["target"][:300])
    return rec


def load_feedback(path: str | Path) -> FeedbackRead:
    """Read a feedback file line by line; never raises. A bad line is skipped with a warning
    naming ``FILE:LINE`` (the first :data:`MAX_WARNINGS`, then a count); a line longer than
    :data:`MAX_LINE` is skipped without being held in memory."""
    p = Path(path)
    out = FeedbackRead()
    try:
        fh = open(p, "rb")  # noqa: SIM115
    except FileNotFoundError:
        out.missing = True
        return out
    except OSError as e:
        out.error = e.strerror or str(e)
        log.error("%s: cannot read feedback: %s", p, out.error)
        return out
    warned = 0

    def bad(n: int, why: str) -> None:
        nonlocal warned
        out.bad += 1
        warned += 1
        if warned <= MAX_WARNINGS:
            log.warning("%s:%d: bad feedback line skipped: %s", p, n, why)

    try:
        with fh:
            n = 0
            while True:
                chunk = fh.readline(MAX_LINE + 1)
                if not chunk:
                    break
                n += 1
                if len(chunk) > MAX_LINE and not chunk.endswith(b"\n"):
                    while chunk and not chunk.endswith(b"\n"):  # skip the rest of the line
                        chunk = fh.readline(MAX_LINE + 1)
                    bad(n, f"line longer than {MAX_LINE} bytes")
                    continue
                s = chunk.decode("utf-8", "replace").strip()
                if not s or s.startswith("#"):
                    continue
                try:
                    rec = _check(json.loads(s))
                except (ValueError, KeyError, TypeError, RecursionError) as e:
                    bad(n, str(e)[:200])
                    continue
                rec["line"] = n
                out.records.append(rec)
    except OSError as e:  # e.g. EISDIR, EIO part-way
        out.error = e.strerror or str(e)
        log.error("%s: cannot read feedback: %s", p, out.error)
        return out
    if warned > MAX_WARNINGS:
        log.warning("%s: %d bad feedback lines skipped in all", p, out.bad)
    return out


def read_feedback(path: str | Path) -> Iterator[dict]:
    """Valid verdicts of a feedback file, in order, each with its ``line`` number. A missing
    file has none; bad lines are logged and skipped (see :func:`load_feedback`)."""
    yield from load_feedback(path).records
