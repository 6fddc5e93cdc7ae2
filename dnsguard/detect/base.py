"""The interface every detector beside the rules implements (the model, a training collector,
a test's spy), as a base class in the spirit of river's ``base.py``: the judge calls these
methods directly, with no ``getattr`` probes, and a subclass overrides what it needs.

At each evaluation of a key the judge calls :meth:`Detector.observe` (what the detector may
learn from: the rules' verdicts, the allowlist factor, the addresses), then
:meth:`Detector.score` on the same feature vector (river's ``learn_one``/``score_one``
pair, with what the sensor knows about the evaluation passed along). When the policy
raises an alert from that evaluation (not suppressed), :meth:`Detector.annotate` adds what
the alert's ``stats`` show from the detector; a hit's reasons may be deferred until then
(a callable), since most hits on a busy tunnel are repeats the policy suppresses.

On a key in its suppression window, when no rule's hit escalates (detect/policy.py), the
judge does not consult a detector whose hit could not escalate either: one with a
``detector_id`` that already alerted on the key at ``max_severity``.

Example:
    >>> class Big(Detector):
    ...     min_queries = 10
    ...     def score(self, scope, f, ident):
    ...         return ("big", "low", 0.3, ["queries >= 100"]) if f["queries"] >= 100 else None
    >>> Big().score("domain", {"queries": 120}, ("d", "a.example"))[0]
    'big'
    >>> Detector().score("domain", {"queries": 120}, ("d", "a.example")) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable

#: What :meth:`Detector.score` returns when it fires: (detector id, severity, score,
#: reasons). The reasons are a list of texts, or a callable returning it: built only for an
#: alert the policy raises (:func:`reasons_of`).
Hit = tuple[str, str, float, list[str] | Callable[[], list[str]]]


def reasons_of(hit: tuple) -> list[str]:
    """A hit's reasons, built now if they were deferred.

    >>> reasons_of(("r", "low", 0.4, ["x"])), reasons_of(("r", "low", 0.4, lambda: ["y"]))
    (['x'], ['y'])
    """
    r = hit[3]
    return r() if callable(r) else r


class Detector:
    """A detector evaluated on the same feature vectors, at the same moments, as the rules
    (windowed scopes and flows; not single messages)."""

    #: Fewest queries in a window before the detector could fire: keys below it (and below
    #: every rule's own minimum) are not evaluated at all.
    min_queries: int = 1
    #: The id its hits carry, what it looks for, and the MITRE ATT&CK techniques its hits
    #: are evidence of: the alert's ``detectors``, ``description`` and ``mitre`` (as a rule's
    #: ``id:``, ``description:`` and ``mitre:``).
    detector_id: str = ""
    description: str = ""
    mitre: tuple[str, ...] = ()
    #: The highest severity its hits carry (with ``detector_id``: when it may be skipped on
    #: a key in its suppression window; see the module docstring).
    max_severity: str = "high"

    def observe(self, scope: str, f: dict, ident: tuple, *, factor: float = 1.0,
                hits: list | None = None, ts: float = 0.0, client: bytes | None = None,
                server: bytes | None = None, domain: str | None = None) -> None:
        """Called before :meth:`score` with the key's scope, features and identity
        (``("d", domain)``, ``("c", client)`` or ``("f", (client, server))``), the allowlist
        factor, the rules' hits so far and the alert's context. Nothing by default."""

    def score(self, scope: str, f: dict, ident: tuple) -> Hit | None:
        """A hit, or None (the default: never fires)."""
        return None

    def annotate(self, scope: str, f: dict, ident: tuple, hits: list) -> None:
        """Called when the policy raises an alert from the evaluation just observed and
        scored (``hits``: all of them), before its record is built: add to ``f`` what the
        alert's ``stats`` should show from this detector. Nothing by default."""

    def close(self) -> None:
        """Before exit: persist what was learned. Nothing by default."""
