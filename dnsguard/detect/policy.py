"""Policy, kept apart from measurement as Zeek keeps Notice apart from SumStats: it turns
detector hits into alerts, one per key per suppression window, and combines the detectors
that fired together into one record.

A key in its suppression window still alerts when the new alert *escalates*: a higher
severity than the key's alerts so far, or a detector (a rule, the model, the series tests)
that has not alerted on it yet. ``escalates`` then names the earlier alert (its id, given
with :meth:`Policy.note_id`), and the window starts again. Everything else is suppressed,
and counted.

Example:
    >>> p = Policy(suppress=60)
    >>> p.admit(("d", "x.com"), 10.0), p.admit(("d", "x.com"), 20.0), p.admit(("d", "x.com"), 71.0)
    (True, False, True)
    >>> p = Policy(suppress=60)
    >>> p.admit(("d", "t.example"), 0.0, "medium", ["single-name-exfil"])
    True
    >>> p.note_id(("d", "t.example"), "first")
    >>> p.admit(("d", "t.example"), 1.0, "medium", ["single-name-exfil"]), p.suppressed
    (False, 1)
    >>> p.admit(("d", "t.example"), 1.5, "high", ["rare-type-unique-names"]), p.escalates
    (True, 'first')
    >>> p = Policy(rate=1.0, burst=2)
    >>> [p.admit(("d", f"{i}.com"), 0.0) for i in range(3)], p.rate_limited
    ([True, True, False], 1)
    >>> p.admit(("d", "2.com"), 1.0)   # a token back after one second; its key was not muted
    True
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from dnsguard.detect.base import reasons_of
from dnsguard.ratelimit import TokenBucket

log = logging.getLogger(__name__)

_SEV_RANK = {"low": 0, "medium": 1, "high": 2}


def family(detector: str) -> str:
    """What counts as one detector for escalation: each rule, the model, the series tests
    (``series:mad`` and ``series:cusum`` are one family: each firing is not news)."""
    return detector.split(":", 1)[0] if ":" in detector else detector


def escalates_past(held: list, severity: str, detector: str) -> bool:
    """Whether a hit of ``severity`` from ``detector`` would escalate past a key's
    suppression entry (:meth:`Policy.held`): a higher severity, or a detector family that
    has not alerted on the key yet. An alert escalates if any of its hits does.

    >>> p = Policy(suppress=60)
    >>> p.admit(("d", "t.example"), 0.0, "medium", ["model:hoeffding"])
    True
    >>> held = p.held(("d", "t.example"), 1.0)
    >>> escalates_past(held, "medium", "model:hoeffding"), escalates_past(held, "high", "model:x")
    (False, True)
    >>> escalates_past(held, "low", "encoded-subdomains")
    True
    """
    return _SEV_RANK.get(severity, -1) > held[1] or family(detector) not in held[2]


def severity_of(hits: list) -> str:
    """The highest severity among hits (``(detector, severity, score, reasons)``); the
    first of equals."""
    best = hits[0][1]
    top = _SEV_RANK.get(best, 0)
    for h in hits:
        r = _SEV_RANK.get(h[1], 0)
        if r > top:
            best, top = h[1], r
    return best


class Policy:
    """Per-key suppression that lets escalations through, plus an overall rate limit (a
    token bucket in capture time).

    An alert refused by the rate limit is counted in ``rate_limited`` and logged in a
    periodic summary; its key does not start a suppression window, so it alerts as soon as
    the bucket allows. Nothing is dropped silently: ``suppressed`` counts the alerts a
    window held back, ``escalated`` those let through as escalations.
    """

    def __init__(self, suppress: float = 3600.0, max_keys: int = 100_000,
                 rate: float = 10.0, burst: int = 100) -> None:
        self.suppress = suppress
        self.max_keys = max_keys
        # key → [window end, highest severity rank, detector families, last alert id]
        self._until: OrderedDict[tuple, list] = OrderedDict()
        self.suppressed = 0
        self.escalated = 0
        self.escalates: str | None = None  # after admit(): the alert the admitted one escalates
        self.rate, self.burst = rate, burst
        self.bucket = TokenBucket(rate, burst)
        self.rate_limited = 0
        self._logged_limited = 0
        self._next_log = 0.0

    def is_suppressed(self, ident: tuple, ts: float) -> bool:
        """Whether ``ident`` is in its suppression window (an escalation would still pass)."""
        e = self._until.get(ident)
        return e is not None and ts < e[0]

    def held(self, ident: tuple, ts: float) -> list | None:
        """``ident``'s suppression entry while it is in its window, else None: what an
        alert on it must beat to escalate (:func:`escalates_past`). The judge asks this
        before consulting a costly detector whose hit could only be suppressed."""
        e = self._until.get(ident)
        return e if e is not None and ts < e[0] else None

    def repeat(self, ident: tuple, ts: float, hits) -> bool:
        """Whether an alert from ``hits`` on ``ident`` now is a repeat its window holds back
        (no hit escalates); counted in ``suppressed`` if so, as :meth:`admit` would. The
        judge asks before it builds what only a raised alert needs."""
        e = self.held(ident, ts)
        if e is None:
            return False
        for h in hits:
            if escalates_past(e, h[1], h[0]):
                return False
        self.suppressed += 1
        return True

    def admit(self, ident: tuple, ts: float, severity: str | None = None,
              detectors=()) -> bool:
        """True if an alert for ``ident`` with this severity and these detectors may be
        raised now; starts (or, escalating, restarts) its suppression window."""
        self.escalates = None
        rank = _SEV_RANK.get(severity, -1) if severity is not None else -1
        fams = {family(d) for d in detectors}
        e = self._until.get(ident)
        earlier = None
        if e is not None and ts < e[0]:
            if rank <= e[1] and fams <= e[2]:
                self.suppressed += 1
                return False
            earlier = e
        if not self.bucket.take(ts):
            self.rate_limited += 1
            if ts >= self._next_log:
                log.warning("alert rate limit (%g/s, burst %d): %d alerts held back so far",
                            self.rate, self.burst, self.rate_limited)
                self._next_log = ts + 60.0
            return False
        if earlier is not None:
            self.escalated += 1
            self.escalates = earlier[3]
            rank = max(rank, earlier[1])
            fams |= earlier[2]
        self._until[ident] = [ts + self.suppress, rank, fams, None]
        self._until.move_to_end(ident)
        if len(self._until) > self.max_keys:
            self._until.popitem(last=False)
        return True

    def note_id(self, ident: tuple, alert_id: str) -> None:
        """The id of the alert just admitted for ``ident`` (what a later escalation names)."""
        e = self._until.get(ident)
        if e is not None:
            e[3] = alert_id


def combine(hits: list[tuple]) -> tuple[str, float, list[str], list[str]]:
    """Severity (highest), score (noisy-or), detectors, reasons of hits fired together.

    Each hit is ``(detector id, severity, score, reasons)``; reasons may be deferred (a
    callable: ``detect.base.reasons_of``), built here, for an alert that is raised.
    """
    sev = severity_of(hits)
    miss = 1.0
    for h in hits:
        miss *= 1.0 - h[2]
    reasons: list[str] = []
    for h in hits:
        for r in reasons_of(h):
            if r not in reasons:
                reasons.append(r)
    return sev, round(1.0 - miss, 4), [h[0] for h in hits], reasons
