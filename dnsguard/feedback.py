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


def read_feedback(path: str | Path) -> Iterator[dict]:
    """Valid verdicts of a feedback file, in order, each with its ``line`` number. A missing
    file has none."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as e:
        log.error("%s: cannot read feedback: %s", p, e.strerror)
        return
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            rec = json.loads(s)
            if not isinstance(rec, dict) or rec.get("label") not in LABELS:
                raise ValueError("needs 'target' and 'label' (tunnel or benign)")
            rec["target"] = normalize_target(str(rec["target"]))
        except (ValueError, KeyError) as e:
            log.warning("%s:%d: bad feedback line skipped: %s", p, n, e)
            continue
        rec["line"] = n
        yield rec
