"""What the judge skips on a key whose alert would be suppressed, and what it builds only for
an alert it raises (the replay speed regression of the escalating suppression, 3348512).
Replays the bundled dns2tcp capture (pcaps/) with the shipped rules and a spy detector. Cost:
~2 s."""

from __future__ import annotations

from conftest import ROOT
from dnsguard.detect.base import Detector
from dnsguard.detect.rules import load_dir
from dnsguard.pipeline import Pipeline
from dnsguard.replay import replay
from dnsguard.settings import Settings

PCAP = ROOT / "pcaps" / "dns2tcp_key.pcap"


class Spy(Detector):
    """Fires (medium) on every window of 10 queries or more; counts its calls and the
    reasons built."""

    min_queries = 1
    max_severity = "medium"

    def __init__(self, detector_id: str) -> None:
        self.detector_id = detector_id
        self.scored = 0
        self.built = 0

    def _reasons(self) -> list[str]:
        self.built += 1
        return ["spy: 10 queries or more"]

    def score(self, scope, f, ident):
        self.scored += 1
        if f["queries"] >= 10:
            return ("spy", "medium", 0.6, self._reasons)
        return None


def _run(spy: Spy, settle: float | None = None) -> tuple[list[dict], dict]:
    s = Settings(rules=ROOT / "rules", use_model=False)
    if settle is not None:
        s.settle = settle
    rs = load_dir(s.rules)
    alerts: list[dict] = []
    pipe = Pipeline(s, rs, alerts.append)
    pipe.extra_detectors.append(spy)
    res = replay([PCAP], s, rs, alerts.append, pipeline=pipe)
    return alerts, res.summary


def _seen(alerts: list[dict]) -> list[tuple]:
    return [(a["scope"], a["domain"], a["severity"], a["detectors"], a["reasons"],
             a["escalates"] is None, a["stats"]) for a in alerts]


def test_a_detector_that_cannot_escalate_is_not_consulted_and_nothing_changes():
    # Without a detector_id the judge cannot tell what the spy's hit would be: it always
    # asks. With one, on a key that already alerted with the spy at its highest severity
    # (and that no rule escalates), it does not: the hit could only be suppressed.
    always, skip = Spy(""), Spy("spy")
    a_alerts, a_sum = _run(always)
    b_alerts, b_sum = _run(skip)
    assert any("spy" in a["detectors"] for a in b_alerts)
    assert _seen(a_alerts) == _seen(b_alerts)  # the same alerts, escalations included
    assert skip.scored < always.scored, (skip.scored, always.scored)
    # Repeats found by the rules are still counted; the spy's alone are not looked for.
    assert 0 < b_sum["suppressed_alerts"] <= a_sum["suppressed_alerts"]


def test_reasons_are_built_only_for_alerts_raised():
    # One record per detector crossing (settle 0): reasons built exactly for those records.
    spy = Spy("")
    alerts, summ = _run(spy, settle=0.0)
    raised = sum("spy" in a["detectors"] for a in alerts)
    assert summ["suppressed_alerts"] > 0 and raised > 0 and summ["merged_alerts"] == 0
    assert spy.built == raised, (spy.built, raised)
    # Settling (the default): an alert merged into its key's record still had its reasons
    # built (they are in the record), a suppressed one still not: between the records with
    # the spy and the findings merged into them.
    spy = Spy("")
    alerts, summ = _run(spy)
    with_spy = [a for a in alerts if "spy" in a["detectors"]]
    assert summ["merged_alerts"] > 0 and summ["suppressed_alerts"] > 0
    assert len(with_spy) <= spy.built <= sum(a["merged"] for a in with_spy), (
        spy.built, [(a["detectors"], a["merged"]) for a in with_spy])
    assert len(alerts) < raised_total(settle=0.0)


def raised_total(settle: float) -> int:
    return len(_run(Spy(""), settle=settle)[0])
