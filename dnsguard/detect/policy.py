"""Policy, kept apart from measurement as Zeek keeps Notice apart from SumStats: it turns
detector hits into alerts, one per key per suppression window, and combines the detectors
that fired together into one record.

Example:
    >>> p = Policy(suppress=60)
    >>> p.admit(("d", "x.com"), 10.0), p.admit(("d", "x.com"), 20.0), p.admit(("d", "x.com"), 71.0)
    (True, False, True)
"""

from __future__ import annotations

from collections import OrderedDict

_SEV_RANK = {"low": 0, "medium": 1, "high": 2}


class Policy:
    def __init__(self, suppress: float = 3600.0, max_keys: int = 100_000) -> None:
        self.suppress = suppress
        self.max_keys = max_keys
        self._until: OrderedDict[tuple, float] = OrderedDict()
        self.suppressed = 0

    def is_suppressed(self, ident: tuple, ts: float) -> bool:
        until = self._until.get(ident)
        return until is not None and ts < until

    def admit(self, ident: tuple, ts: float) -> bool:
        """True if an alert for ``ident`` may be raised now; starts its suppression window."""
        if self.is_suppressed(ident, ts):
            self.suppressed += 1
            return False
        self._until[ident] = ts + self.suppress
        self._until.move_to_end(ident)
        if len(self._until) > self.max_keys:
            self._until.popitem(last=False)
        return True


def combine(hits: list[tuple[str, str, float, list[str]]]) -> tuple[str, float, list[str],
                                                                    list[str]]:
    """Severity (highest), score (noisy-or), detectors, reasons of hits fired together.

    Each hit is ``(detector id, severity, score, reasons)``.
    """
    sev = max((h[1] for h in hits), key=lambda s: _SEV_RANK.get(s, 0))
    miss = 1.0
    for h in hits:
        miss *= 1.0 - h[2]
    reasons: list[str] = []
    for h in hits:
        for r in h[3]:
            if r not in reasons:
                reasons.append(r)
    return sev, round(1.0 - miss, 4), [h[0] for h in hits], reasons
