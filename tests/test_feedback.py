"""Analyst feedback: the file, ``dnsguard label``, and verdicts that change later alerts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from test_train import TUNNEL_DOMAIN, empty_rules, make_captures, train_model

from dnsguard.cli import main
from dnsguard.detect import model as M
from dnsguard.detect.rules import load_dir
from dnsguard.feedback import append_label, normalize_target, read_feedback
from dnsguard.pipeline import Pipeline
from dnsguard.replay import replay
from dnsguard.settings import Settings


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("fb")
    caps = make_captures(d, seed=3)
    return caps, train_model(d, caps), empty_rules(d / "rules")


def _run(caps, model, rules, feedback=None, files=("tunnel",)):
    s = replace(Settings(), model=model, feedback=feedback)
    rs = load_dir(rules)
    alerts: list[dict] = []
    pipe = Pipeline(s, rs, alerts.append)
    replay([caps[f] for f in files], s, rs, alerts.append, pipeline=pipe)
    pipe.close()
    return alerts, pipe.extra_detectors[0]


def _about(alerts, domain):
    d = domain.split(".", 1)[1] if domain.count(".") > 1 else domain
    return [a for a in alerts if a["domain"] and (a["domain"] == d
                                                  or a["domain"].endswith("." + d))]


def test_file_format_last_verdict_wins(tmp_path, caplog):
    p = tmp_path / "fb.jsonl"
    append_label(p, "Example.COM.", "tunnel", by="a")
    append_label(p, "10.0.0.5", "tunnel", by="a", note="beacon")
    with open(p, "a") as fh:
        fh.write("# comment\n\nnot json\n" + json.dumps({"target": "x.org"}) + "\n")
    append_label(p, "example.com", "benign", by="b")
    recs = list(read_feedback(p))
    assert [(r["target"], r["label"]) for r in recs] == [
        ("example.com", "tunnel"), ("10.0.0.5", "tunnel"), ("example.com", "benign")]
    assert recs[1]["note"] == "beacon"
    assert "bad feedback line skipped" in caplog.text
    fb = M.Feedback(p)
    assert fb.for_domain("example.com") == ("benign", "example.com")
    assert fb.for_domain("www.example.com") == ("benign", "example.com")
    assert fb.for_domain("example.org") is None
    assert fb.for_address("10.0.0.5") == ("tunnel", "10.0.0.5")
    assert list(read_feedback(tmp_path / "absent.jsonl")) == []
    with pytest.raises(ValueError):
        normalize_target("not a name")


def test_label_command(tmp_path, capsys):
    p = tmp_path / "sub" / "fb.jsonl"
    assert main(["label", "Evil.Example.", "--tunnel", "--feedback", str(p),
                 "--note", "seen in IR"]) == 0
    rec = json.loads(p.read_text())
    assert rec["target"] == "evil.example" and rec["label"] == "tunnel"
    assert rec["note"] == "seen in IR" and rec["by"]
    with pytest.raises(SystemExit):
        main(["label", "x.com", "--feedback", str(p)])  # needs --tunnel or --benign


def test_benign_verdict_silences_the_model_and_is_learned(trained, tmp_path):
    caps, model, rules = trained
    before, _ = _run(caps, model, rules)
    assert _about(before, TUNNEL_DOMAIN), "precondition: the model flags the tunnel"
    fb = tmp_path / "fb.jsonl"
    assert main(["label", TUNNEL_DOMAIN, "--benign", "--feedback", str(fb)]) == 0
    after, det = _run(caps, model, rules, feedback=fb)
    assert not _about(after, TUNNEL_DOMAIN)
    assert det.learned > 0  # it learned from the verdict, not only obeyed it
    x = M.vectorize("domain", json.loads(json.dumps(before[0]["stats"])))
    base = M.detector_for(replace(Settings(), model=model))
    assert det.proba(x) <= base.proba(x)


def test_tunnel_verdict_makes_a_missed_domain_alert(trained, tmp_path):
    caps, model, rules = trained
    before, _ = _run(caps, model, rules, files=("benign",))
    assert not _about(before, "example.com"), "precondition: the model misses it"
    fb = tmp_path / "fb.jsonl"
    assert main(["label", "example.com", "--tunnel", "--feedback", str(fb)]) == 0
    after, det = _run(caps, model, rules, feedback=fb, files=("benign",))
    hits = _about(after, "example.com")
    assert hits and hits[0]["detectors"] == [M.DETECTOR_ID]
    assert hits[0]["score"] == 1.0
    assert any("analyst verdict" in r and str(fb) in r for r in hits[0]["reasons"])
    assert det.learned > 0


def test_cli_replay_reads_feedback(trained, tmp_path):
    caps, model, rules = trained
    fb = tmp_path / "fb.jsonl"
    append_label(fb, TUNNEL_DOMAIN, "benign")
    out = tmp_path / "a.jsonl"
    assert main(["replay", "-q", "--rules", str(rules), "--model", str(model), "--feedback",
                 str(fb), "--alerts", str(out), str(caps["tunnel"])]) == 0
    alerts = [json.loads(x) for x in out.read_text().splitlines()]
    assert not _about(alerts, TUNNEL_DOMAIN)


def test_reload_feedback_and_allowlist_learning(trained, tmp_path):
    _, model, _ = trained
    fb = tmp_path / "fb.jsonl"
    det = M.detector_for(replace(Settings(), model=model, feedback=fb))
    f = {"queries": 30, "encoded_share": 1.0, "mean_sub_len": 60, "txt_share": 1.0}
    assert det.score("domain", dict(f), ("d", "later.test")) is not None or True
    append_label(fb, "later.test", "benign")
    det.reload_feedback()  # the daemon calls this on SIGHUP
    det.observe("domain", dict(f), ("d", "later.test"))
    assert det.score("domain", dict(f), ("d", "later.test")) is None
    n = det.learned
    det.observe("domain", dict(f), ("d", "cdn.test"), factor=5.0)  # allowlist 'raise' entry
    assert det.learned == n + 1
    assert det.score("domain", dict(f), ("d", "cdn.test")) is None


def test_learn_from_rules_only_when_configured(trained):
    _, model, _ = trained
    f = {"queries": 30, "encoded_share": 1.0, "mean_sub_len": 60}
    hits = [("some-rule", "high", 0.9, ["x"])]
    off = M.detector_for(replace(Settings(), model=model))
    off.observe("domain", dict(f), ("d", "r.test"), hits=hits)
    assert off.learned == 0
    on = M.detector_for(replace(Settings(), model=model, learn_from_rules=True))
    on.observe("domain", dict(f), ("d", "r.test"), hits=hits)
    on.observe("domain", dict(f), ("d", "r.test"), hits=[("r", "medium", 0.5, ["y"])])
    assert on.learned == 1  # high-severity hits only
    g = dict(f)
    on.observe("domain", g, ("d", "r.test"), hits=hits)
    assert "model_p" not in g  # computed only for an alert the policy raises …
    on.annotate("domain", g, ("d", "r.test"), hits)
    assert "model_p" in g and "model_anomaly" in g  # … as context for the rule's alert
