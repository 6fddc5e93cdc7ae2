"""Suppression policy, and eval's truth matching."""

from __future__ import annotations

from dnsguard.detect.policy import Policy, combine
from dnsguard.evaluate import Tunnel, _related, load_truth


def test_one_alert_per_key_per_suppression_window():
    p = Policy(suppress=100)
    assert p.admit(("d", "a.com"), 0)
    assert not p.admit(("d", "a.com"), 50)
    assert p.admit(("d", "b.com"), 50)
    assert p.admit(("d", "a.com"), 101)
    assert p.suppressed == 1


def test_policy_state_is_bounded():
    p = Policy(suppress=100, max_keys=10)
    for i in range(1000):
        p.admit(("d", f"{i}.com"), 0)
    assert len(p._until) == 10


def test_alert_storm_is_rate_limited_and_counted_not_lost():
    p = Policy(suppress=3600, rate=5.0, burst=10)
    admitted = sum(p.admit(("d", f"{i}.example"), i * 0.01) for i in range(1000))
    # 10 s of capture time: the burst plus about 5 per second, the rest counted
    assert 10 <= admitted <= 10 + 5 * 10 + 1
    assert p.rate_limited == 1000 - admitted
    # a held-back key is not muted: it alerts once tokens return
    assert p.admit(("d", "999.example"), 100.0)


def test_combine_takes_highest_severity_and_noisy_or_score():
    sev, score, det, reasons = combine([("a", "medium", 0.5, ["x"]), ("b", "high", 0.5,
                                                                      ["x", "y"])])
    assert sev == "high" and score == 0.75 and det == ["a", "b"] and reasons == ["x", "y"]


def test_related_is_label_wise():
    assert _related("t1.example.com", "example.com")
    assert _related("example.com", "t1.example.com")
    assert not _related("badexample.com", "example.com")


def test_tunnel_hits():
    t = Tunnel(domain="t.example.com")
    assert t.hit_by({"domain": "example.com"})
    assert not t.hit_by({"domain": None, "src_ip": "1.2.3.4"})
    a = Tunnel(client="10.0.0.1", server="10.0.0.2")
    assert a.hit_by({"domain": None, "src_ip": "10.0.0.1", "dest_ip": "9.9.9.9"})
    assert a.hit_by({"domain": "x.com", "src_ip": "9.9.9.9", "dest_ip": "10.0.0.2"})
    assert not a.hit_by({"domain": None, "src_ip": "10.0.0.2", "dest_ip": "10.0.0.1"})


def test_load_truth_errors_name_the_line(tmp_path):
    p = tmp_path / "truth.yaml"
    p.write_text("captures:\n- file: a.pcap\n  class: tunnel\n")
    import pytest

    from dnsguard.detect.yamlsrc import SourceError

    with pytest.raises(SourceError) as e:
        load_truth(p)
    assert "truth.yaml:2" in str(e.value) and "tunnels" in str(e.value)


def test_escalation_gets_through_and_names_the_earlier_alert():
    """(issue #14, item 1) A weaker alert must not hide a stronger one for the whole window:
    a higher severity or a new detector for the key gets through, saying which alert it
    escalates; a repeat is suppressed and counted."""
    p = Policy(suppress=3600)
    k = ("d", "t.example")
    assert p.admit(k, 0.0, "medium", ["single-name-exfil"]) and p.escalates is None
    p.note_id(k, "id-1")
    assert not p.admit(k, 1.0, "medium", ["single-name-exfil"])  # the same again
    assert not p.admit(k, 1.0, "low", ["single-name-exfil"])  # weaker
    assert p.suppressed == 2
    assert p.admit(k, 1.5, "high", ["rare-type-unique-names", "model:hoeffding"])
    assert p.escalates == "id-1" and p.escalated == 1
    p.note_id(k, "id-2")
    # Now high, with three detectors seen: a medium from a known detector is a repeat …
    assert not p.admit(k, 2.0, "medium", ["single-name-exfil"])
    # … a new detector family escalates again (the series tests count as one family).
    assert p.admit(k, 3.0, "low", ["series:mad"]) and p.escalates == "id-2"
    assert not p.admit(k, 4.0, "low", ["series:cusum"])
    # Other keys are independent; the window restarts at each escalation.
    assert p.admit(("d", "other.example"), 5.0, "low", ["x"])
    assert p.admit(k, 3.0 + 3600, "low", ["single-name-exfil"]) and p.escalates is None
