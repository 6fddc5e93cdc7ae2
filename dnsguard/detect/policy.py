"""Policy, kept apart from measurement as Zeek keeps Notice apart from SumStats: it turns
detector hits into alerts, one per key per suppression window, and combines the detectors
that fired together into one record.

A key in its suppression window still alerts when the new alert *escalates*: a higher
severity than the key's alerts so far, or a detector (a rule, the model, the series tests)
that has not alerted on it yet. ``escalates`` then names the earlier alert (its id), and the
window starts again. Everything else is suppressed, and counted.

**One incident, one record** (as Zeek's notice suppression or Suricata's thresholding give
an analyst one notice per incident): a burst of tunnel traffic makes several detectors
cross their bars on the same key within milliseconds, each an "escalation" of the one
before. So the record of a key's alert is *held* for ``settle`` seconds of capture time
(:meth:`Policy.write`); what other detectors (or a higher severity) find on the key in that
interval is merged into it (:func:`merge_records`: every detector, every reason, the
highest severity), counted in ``merged``. The record is written once the interval has
passed: at the next alert on any key, at :meth:`Policy.flush` (end of input; the daemon's
timer) — never dropped. Only what a detector finds after that escalates.

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

Settling (records are dicts built by ``output.alerts.alert_record``; here, by hand):
    >>> out = []
    >>> p = Policy(suppress=60, settle=1.0, out=out.append)
    >>> rec = lambda t, sev, dets: {"timestamp": t, "alert_id": f"id-{t}",
    ...     "event_type": "dns_tunnel", "scope": "domain", "severity": sev, "score": 0.5,
    ...     "detectors": dets, "reasons": [d + " fired" for d in dets], "mitre": [],
    ...     "escalates": None, "merged": 1, "samples": []}
    >>> k = ("d", "t.example")
    >>> p.admit(k, 0.0, "medium", ["a"]) and p.write(k, 0.0, rec(0.0, "medium", ["a"]))
    >>> p.admit(k, 0.001, "high", ["a", "b"]) and p.write(k, 0.001, rec(0.001, "high", ["a", "b"]))
    >>> out, p.merged, p.escalated   # held: b crossed its bar 1 ms after a
    ([], 1, 0)
    >>> p.flush(5.0)
    >>> [(r["severity"], r["detectors"], r["merged"]) for r in out]
    [('high', ['a', 'b'], 2)]
    >>> p.admit(k, 10.0, "high", ["c"]) and p.write(k, 10.0, rec(10.0, "high", ["c"]))
    >>> p.flush()   # c came after the record was written: an escalation of it
    >>> out[1]["escalates"] == out[0]["alert_id"] != "id-0.0", p.escalated
    (True, 1)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from dnsguard.detect.base import reasons_of
from dnsguard.output.alerts import alert_id, iso_time
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
    token bucket in capture time), plus the settle interval that makes the detectors firing
    together on a key one record.

    An alert refused by the rate limit is counted in ``rate_limited`` and logged in a
    periodic summary; its key does not start a suppression window, so it alerts as soon as
    the bucket allows. Nothing is dropped silently: ``suppressed`` counts the alerts a
    window held back, ``escalated`` those let through as escalations, ``merged`` those
    folded into a record still settling. ``out`` receives each record to write.
    """

    def __init__(self, suppress: float = 3600.0, max_keys: int = 100_000,
                 rate: float = 10.0, burst: int = 100, settle: float = 0.0,
                 out: Callable[[dict], None] | None = None) -> None:
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
        self.settle = settle
        self.out = out
        # Records settling, in the order they were opened (their due times' order):
        # key → [due (capture time), first alert's time, the alert it escalates, records]
        self._open: dict[tuple, list] = {}
        self._merging = False  # after admit(): the alert joins its key's settling record
        self.merged = 0
        # Told the due time of each record it starts to hold (the pipeline's packet clock).
        self.on_open: Callable[[float], None] | None = None

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
        raised now (its record then goes to :meth:`write`); starts (or, escalating,
        restarts) its suppression window. An alert on a key whose record is still settling
        adds to that record: no escalation, no token of the rate limit."""
        self.escalates = None
        self._merging = False
        if self._open:
            self.flush(ts)  # the records that settled are written first, in order
        rank = _SEV_RANK.get(severity, -1) if severity is not None else -1
        fams = {family(d) for d in detectors}
        e = self._until.get(ident)
        earlier = None
        if e is not None and ts < e[0]:
            if rank <= e[1] and fams <= e[2]:
                self.suppressed += 1
                return False
            if ident in self._open:
                if rank > e[1]:
                    e[1] = rank
                e[2] = e[2] | fams
                self._merging = True
                return True
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
        """The id of the alert written for ``ident`` (what a later escalation names)."""
        e = self._until.get(ident)
        if e is not None:
            e[3] = alert_id

    def write(self, ident: tuple, ts: float, record: dict) -> None:
        """The record of the alert :meth:`admit` just let through: held while it settles
        (``settle`` > 0), merged into the key's settling record if there is one, else
        written (``out``) at once."""
        if self._merging:
            self._merging = False
            self._open[ident][3].append(record)
            self.merged += 1
            return
        if ident in self._open:  # its suppression entry was evicted: write the old one
            self._finish(ident, self._open.pop(ident))
        if self.settle > 0.0:
            due = ts + self.settle
            self._open[ident] = [due, ts, self.escalates, [record]]
            if self.on_open is not None:
                self.on_open(due)
            return
        record["escalates"] = self.escalates
        self.note_id(ident, record["alert_id"])
        self.out(record)

    @property
    def pending(self) -> int:
        """Records settling (not written yet)."""
        return len(self._open)

    def next_due(self) -> float:
        """When the first record settling is due (capture time), +inf if none."""
        for inc in self._open.values():
            return inc[0]
        return float("inf")

    def flush(self, now: float | None = None) -> None:
        """Write the records whose settle interval ended by capture time ``now``; all of
        them when ``now`` is None (end of input, shutdown)."""
        opened = self._open
        while opened:
            ident = next(iter(opened))
            inc = opened[ident]
            if now is not None and now < inc[0]:
                break
            del opened[ident]
            self._finish(ident, inc)

    def _finish(self, ident: tuple, inc: list) -> None:
        parts = inc[3]
        rec = parts[0] if len(parts) == 1 else merge_records(parts, ident, inc[1])
        rec["escalates"] = inc[2]
        self.note_id(ident, rec["alert_id"])
        self.out(rec)


def merge_records(parts: list[dict], ident: tuple, ts: float) -> dict:
    """One record for alerts on one key that fired within a settle interval, ``parts`` in
    the order they fired: the fields of the first one with the highest severity (its
    description is then the first detector's at that severity, as ``Judge._describe``
    chooses: the strongest evidence), stamped with the first one's time ``ts`` (when the
    incident was detected); every detector, reason and ATT&CK technique; as samples the
    name each finding quoted first (the one that completed its evidence), then the chosen
    one's; the score the noisy-or of every detector's (each detector's share recovered
    from the records as they came: ``_merged_score``); ``merged`` the number of parts.

    >>> a = {"timestamp": "t0", "alert_id": "", "event_type": "dns_tunnel", "scope":
    ...      "message", "severity": "medium", "score": 0.6, "detectors": ["r1"],
    ...      "reasons": ["x"], "mitre": ["T1071.004"], "merged": 1, "samples": ["q.t.example"]}
    >>> b = dict(a, scope="domain", severity="high", score=0.84, detectors=["r1", "r2"],
    ...          reasons=["x", "y"], mitre=["T1048"], samples=["w.t.example", "e.t.example"])
    >>> m = merge_records([a, b], ("d", "t.example"), 0.0)
    >>> m["scope"], m["severity"], m["score"], m["detectors"], m["reasons"], m["merged"]
    ('domain', 'high', 0.84, ['r1', 'r2'], ['x', 'y'], 2)
    >>> m["samples"]
    ['q.t.example', 'w.t.example', 'e.t.example']
    >>> m["mitre"], m["timestamp"]
    (['T1048', 'T1071.004'], '1970-01-01T00:00:00.000000Z')
    """
    base = parts[0]
    top = _SEV_RANK.get(base["severity"], -1)
    for p in parts[1:]:
        r = _SEV_RANK.get(p["severity"], -1)
        if r > top:
            base, top = p, r
    rec = dict(base)
    dets: list[str] = []
    reasons: list[str] = []
    mitre: set[str] = set()
    for p in parts:
        for d in p["detectors"]:
            if d not in dets:
                dets.append(d)
        for x in p["reasons"]:
            if x not in reasons:
                reasons.append(x)
        mitre.update(p["mitre"])
    rec["timestamp"] = iso_time(ts)
    rec["detectors"] = dets
    rec["reasons"] = reasons
    rec["mitre"] = sorted(mitre)
    samples: list[str] = []
    for p in (*parts, base):
        for x in (p["samples"][:1] if p is not base else p["samples"]):
            if x not in samples:
                samples.append(x)
    rec["samples"] = samples[:3]
    rec["score"] = _merged_score(parts)
    rec["merged"] = sum(p.get("merged", 1) for p in parts)
    rec["alert_id"] = alert_id(rec.get("sensor", ""), rec["event_type"], rec["scope"], ident,
                               ts, dets)
    return rec


def _merged_score(parts: list[dict]) -> float:
    """The noisy-or over the distinct detectors of ``parts``. A record's score is the
    noisy-or of its detectors' (``combine``); a detector's own share is what a record's
    miss leaves once the detectors already known are divided out, shared evenly by the
    detectors new in it. Exact when each record adds its detectors to the ones before at
    the scores they had (rules: fixed scores); never below the best record's score."""
    miss: dict[str, float] = {}
    best = 0.0
    for p in parts:
        s = float(p["score"])
        if s > best:
            best = s
        known = 1.0
        new = []
        for d in p["detectors"]:
            m = miss.get(d)
            if m is None:
                new.append(d)
            else:
                known *= m
        if not new:
            continue
        share = (1.0 - s) / known if known > 0.0 else 0.0
        share = min(max(share, 0.0), 1.0) ** (1.0 / len(new))
        for d in new:
            miss[d] = share
    total = 1.0
    for m in miss.values():
        total *= m
    return round(max(1.0 - total, best), 4)


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
