"""The long-horizon model (dnsguard/detect/longmodel.py): its evidence gate, its files, and the
shipped model on crafted two-hour traffic through the real pipeline — a slow exfiltration
spread over three hosts in short encoded names (below every long-horizon rule by design:
the one-host rules allow at most 2 clients, the multi-host one needs subdomains of 30
characters), and benign long keys that must stay quiet. ~10 s."""

from __future__ import annotations

import base64
import random

import pytest

from conftest import dns_query, eth, udp4
from dnsguard.detect import longmodel as LM
from dnsguard.detect.model import ModelError
from dnsguard.settings import Settings

T0 = 1_700_000_000.0
ZONE = "quiet-ledger.net"  # names right under it: subdomains of ~27 characters
shipped = pytest.mark.skipif(not LM.DEFAULT_LONG_MODEL.exists(),
                             reason="no shipped long-horizon model (dnsguard train builds it)")


def _trickle(rng: random.Random, hosts: list[str], minutes: int = 90):
    """One chunk of 15 random bytes every ~75 s from one of ``hosts``, as one 24-character
    Base32 label (encoded) and a sequence label: subdomains of ~27 characters, under the
    multi-host rule's 30."""
    t, i = T0, 0
    while t < T0 + minutes * 60:
        b32 = base64.b32encode(rng.randbytes(15)).decode().lower()
        name = f"{b32}.{i:x}.{ZONE}"
        yield t, rng.choice(hosts), name
        t += rng.uniform(45, 105)
        i += 1


def _browsing(rng: random.Random, minutes: int = 90):
    """A client's ordinary lookups: popular names, asked again and again."""
    names = ["www.example.com", "mail.example.org", "cdn.example.net", "api.example.io",
             "news.example.co.uk", "static.example.com", "login.example.org"]
    t = T0 + 3
    while t < T0 + minutes * 60:
        yield t, "192.0.2.50", rng.choice(names)
        t += rng.uniform(5, 40)


def _host_lookups(rng: random.Random, minutes: int = 90):
    """One client (a monitor) looking up its company's internal host names: each new, short,
    no data shape; and a time server polled every 64 s (the same name: no new data)."""
    kinds = ["printer-{}", "desktop-{}", "android-{}", "laptop-{}", "nas-{}"]
    t = T0 + 7
    while t < T0 + minutes * 60:
        k = rng.choice(kinds)
        tag = (str(rng.randrange(100)) if k.startswith(("printer", "nas")) else
               rng.randbytes(8).hex() if k.startswith("android") else
               "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(7)))
        yield t, "192.0.2.60", f"{k.format(tag)}.corp.lan-example.net"
        t += rng.uniform(60, 150)
    t = T0 + 11
    while t < T0 + minutes * 60:
        yield t, "192.0.2.61", "time.ntp-example.org"
        t += 64.0


def _run(events, **settings) -> list[dict]:
    from conftest import RULES_DIR
    from dnsguard.detect.rules import load_dir
    from dnsguard.pipeline import Pipeline

    alerts: list[dict] = []
    p = Pipeline(Settings(series=False, **settings), load_dir(RULES_DIR), alerts.append)
    for qid, (ts, client, name) in enumerate(sorted(events)):
        fr = eth(udp4(dns_query(name, qid=qid & 0xFFFF), src=client))
        p.feed(ts, 1, fr, len(fr))
    p.close()
    return alerts


def _on(alerts: list[dict], zone: str) -> list[dict]:
    return [a for a in alerts if a.get("domain") and (a["domain"] == zone
                                                      or a["domain"].endswith("." + zone)
                                                      or zone.endswith("." + a["domain"]))]


@shipped
def test_multi_host_short_label_trickle_found_by_the_long_model_only():
    """Three hosts send a file in 24-character Base32 labels, one chunk every ~75 s: no rule
    fires (with the long model off, nothing on the zone), the long model finds it within
    the hour and the alert says what moved since when, from which hosts, and why."""
    rng = random.Random(5)
    hosts = ["192.0.2.21", "192.0.2.22", "192.0.2.23"]
    events = list(_trickle(rng, hosts)) + list(_browsing(rng))
    first = min(ts for ts, _c, n in events if n.endswith(ZONE))
    assert not _on(_run(events, use_long_model=False), "quiet-ledger.net")
    found = _on(_run(events), "quiet-ledger.net")
    assert found, "the long model missed the trickle"
    a = found[0]
    assert "model-long" in a["detectors"] and a["scope"] == "long_domain", a
    assert a["timestamp"] and a["stats"]["span"] <= 3600, a
    assert a["first_seen"].startswith("2023-11-14T22:13:2")  # its first chunk's time
    assert a["stats"]["queries"] >= 16 and a["bytes_up"] >= 150, a
    assert set(a["stats"]["clients"]) == set(hosts), a
    assert any(r.startswith("model-long: P(tunnel)") for r in a["reasons"]), a["reasons"]
    assert any("learned" in r for r in a["reasons"]), a["reasons"]
    assert first <= T0 + 60


@shipped
def test_benign_long_keys_stay_quiet():
    """A monitor's internal host-name lookups (every name new, ~8 bytes each: the shape
    that raised a false alarm, at P 0.999, while the gate let names of no data shape through
    on volume), a time server polled every 64 s and a browsing client, for two hours: no
    alert at all."""
    rng = random.Random(6)
    events = list(_host_lookups(rng, 120)) + list(_browsing(rng, 120))
    alerts = _run(events)
    assert not alerts, [(a["domain"], a["detectors"]) for a in alerts]
    # The host names pass the rules' and the gate's counts of names and span, not its shape
    hosts = [n for _t, c, n in events if c == "192.0.2.60"]
    assert len(set(hosts)) >= 40


def test_gate_needs_names_data_and_history():
    f = {"new_names": 30.0, "new_bytes_up": 900.0, "span": 1200.0, "new_encoded_share": 0.9,
         "new_name_share": 0.95}
    assert LM.judged("long_domain", f)
    assert not LM.judged("long_domain", dict(f, new_name_share=0.3))  # tokens asked again
    assert not LM.judged("long_domain", dict(f, span=300.0))  # a short history
    assert not LM.judged("long_domain", dict(f, new_names=8.0))  # few names
    assert not LM.judged("long_domain", dict(f, new_bytes_up=100.0))  # little data
    plain = dict(f, new_encoded_share=0.0, new_mean_sub_entropy=3.3, new_bytes_up=300.0)
    assert not LM.judged("long_domain", plain)  # no data shape …
    assert not LM.judged("long_domain", dict(plain, new_names=60.0, new_bytes_up=500.0))
    # … nor high entropy and ~20 bytes a name alone (a hex digest per ad frame)
    assert not LM.judged("long_domain", dict(plain, new_mean_sub_entropy=3.9,
                                             new_bytes_up=600.0))
    beacon = {"checkins": 40, "span": 2400.0, "timing_score": 0.91, "interval_jitter": 0.07}
    assert LM.judged("long_client_domain", beacon)
    assert not LM.judged("long_domain", beacon)  # check-ins are a pair's evidence
    # Lookups at random times are not check-ins (jitter ~0.69 for Poisson arrivals) …
    assert not LM.judged("long_client_domain", dict(beacon, timing_score=0.49,
                                                    interval_jitter=0.7))
    # … nor every 60-150 s (a monitor, or a beacon sleeping ±40 %: too irregular to tell)
    assert not LM.judged("long_client_domain", dict(beacon, timing_score=0.7,
                                                    interval_jitter=0.22))
    # A long period with small jitter: RITA's timing score (against 30 s) is low, the
    # jitter relative to the period is not
    assert LM.judged("long_client_domain", dict(beacon, timing_score=0.3,
                                                interval_jitter=0.08))
    # Lookups every ~13 s at random: RITA's timing score is high at that scale, the jitter
    # says they are not regular (host names with addresses on benign seed 101)
    assert not LM.judged("long_client_domain", dict(beacon, timing_score=0.84,
                                                    interval_jitter=1.0))


def _tiny(tmp_path):
    """A long model fitted on a few hand-made vectors, saved."""
    b = LM.new_bundle(grace_period=5)
    m = LM.LongModel(b)
    rng = random.Random(1)
    for _ in range(200):
        tun = rng.random() < 0.5
        f = {"new_names": 40.0, "new_bytes_up": 1200.0 if tun else 200.0,
             "new_name_share": 1.0 if tun else 0.3, "long_queries": 40.0 if tun else 130.0}
        m.learn_one(LM.vectorize("long_domain", f), tun)
    path = tmp_path / "long.pkl"
    LM.save(b, {"threshold": 0.9}, path)
    return path


def test_files_round_trip_and_refuse_tampering(tmp_path):
    path = _tiny(tmp_path)
    bundle, meta = LM.load(path)
    m = LM.LongModel(bundle, meta)
    x = LM.vectorize("long_domain", {"new_names": 40.0, "new_bytes_up": 1200.0,
                                     "new_name_share": 1.0, "long_queries": 40.0})
    p = m.predict_proba_one(x)[True]
    assert 0.5 < p < 1.0  # smoothed: never 1.000 from a finite leaf
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ModelError, match="does not match"):
        LM.load(path)


def test_model_for_other_inputs_is_refused(tmp_path):
    import json

    path = _tiny(tmp_path)
    mp = path.with_name(path.name + ".json")
    meta = json.loads(mp.read_text())
    meta["features"] = meta["features"][:-1]
    mp.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="other inputs"):
        LM.load(path)


@shipped
def test_shipped_long_model_loads():
    bundle, meta = LM.load(LM.DEFAULT_LONG_MODEL)
    assert meta["features"] == LM.INPUTS and meta["training"]["snapshots"]["tunnel"] > 0


def test_train_builds_both_models_in_one_run(tmp_path):
    """``dnsguard train`` writes the window model and, beside it, the long-horizon model from
    the same replays; ``--long-only`` writes only the latter. On the lab's slow captures
    (two hours each: tunnel keys and the browsing client's benign ones). ~5 s."""
    from conftest import ROOT
    from dnsguard.cli import main

    slow = ROOT / "pcaps" / "slow"
    out = tmp_path / "model.pkl"
    assert main(["train", "--truth", str(slow / "truth.yaml"), "-o", str(out), str(slow)]) == 0
    assert out.exists() and (tmp_path / "long_model.pkl").exists()
    bundle, meta = LM.load(tmp_path / "long_model.pkl")
    snaps = meta["training"]["snapshots"]
    assert snaps["tunnel"] > 0 and snaps["benign"] > 0, snaps
    # The multi-host capture's domain key is among the tunnel keys it learnt from
    assert any(c["file"] == "slow_exfil_multi.pcap" and c["samples"]
               for c in meta["training"]["captures"])
    only = tmp_path / "only"
    assert main(["train", "--long-only", "--truth", str(slow / "truth.yaml"), "-o",
                 str(only / "m.pkl"), str(slow)]) == 0
    assert (only / "long_m.pkl").exists() and not (only / "m.pkl").exists()
