"""Training: labels from ground truth, class balance, the ``train`` command, the model it
writes. Small synthetic captures crafted with scapy (``make_captures`` is shared with
test_model.py and test_feedback.py)."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from dnsguard.cli import main
from dnsguard.detect import model as M
from dnsguard.evaluate import Truth, Tunnel
from dnsguard.train import BENIGN, SKIP, TUNNEL, CaptureSamples, label_row, weighted

TUNNEL_DOMAIN = "t.exfil-lab.test"
BENIGN_NAMES = ["www.example.com", "mail.example.org", "cdn.example.net", "api.example.io",
                "static.example.com", "news.example.co.uk", "img.example.org", "example.com"]


def _frames(rng: random.Random, t0: float, client: str, server: str, names_types,
            gap: float, answer: bytes):
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    out = []
    t = t0
    for i, (name, qtype) in enumerate(names_types):
        qid = rng.randrange(65536)
        q = (Ether() / IP(src=client, dst=server) / UDP(sport=40000 + i % 2000, dport=53)
             / DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype)))
        q.time = t
        if qtype == "TXT":
            rr = DNSRR(rrname=name, type="TXT", rdata=[answer])
        else:
            rr = DNSRR(rrname=name, type="A", rdata="93.184.216.34")
        r = (Ether() / IP(src=server, dst=client) / UDP(sport=53, dport=40000 + i % 2000)
             / DNS(id=qid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype=qtype), an=rr))
        r.time = t + 0.01
        out += [q, r]
        t += gap
    return out


def tunnel_names(rng: random.Random, n: int, domain: str = TUNNEL_DOMAIN):
    out = []
    for _ in range(n):
        blob = base64.b32encode(rng.randbytes(40)).decode().rstrip("=").lower()
        out.append((f"{blob[:32]}.{blob[32:]}.{domain}", "TXT"))
    return out


def benign_names(rng: random.Random, n: int):
    return [(rng.choice(BENIGN_NAMES), "A") for _ in range(n)]


def make_captures(d: Path, seed: int = 1) -> dict[str, Path]:
    """tunnel.pcap (a TXT tunnel under TUNNEL_DOMAIN plus background) and benign.pcap, with
    truth.yaml; returns their paths."""
    from scapy.utils import wrpcap

    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    tun = _frames(rng, 1000.0, "10.0.0.5", "10.0.0.53", tunnel_names(rng, 80), 0.25,
                  base64.b64encode(rng.randbytes(150)))
    bg = _frames(rng, 1000.1, "10.0.0.6", "10.0.0.53", benign_names(rng, 40), 0.5, b"")
    wrpcap(str(d / "tunnel.pcap"), sorted(tun + bg, key=lambda p: p.time))
    ben = []
    for i in range(4):
        ben += _frames(rng, 2000.0 + i, f"10.0.1.{i + 1}", "10.0.1.53",
                       benign_names(rng, 60), 0.3, b"")
    wrpcap(str(d / "benign.pcap"), sorted(ben, key=lambda p: p.time))
    (d / "truth.yaml").write_text(
        "captures:\n"
        "- file: tunnel.pcap\n  class: tunnel\n  tunnels:\n"
        f"  - domain: {TUNNEL_DOMAIN}\n"
        "- file: benign.pcap\n  class: benign\n")
    return {"tunnel": d / "tunnel.pcap", "benign": d / "benign.pcap",
            "truth": d / "truth.yaml"}


def empty_rules(d: Path) -> Path:
    """A rules directory with no rules (the model alone)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "none.yaml").write_text("rules: []\n")
    return d


def train_model(d: Path, caps: dict[str, Path]) -> Path:
    out = d / "model" / "m.pkl"
    rc = main(["train", "--truth", str(caps["truth"]), "-o", str(out), "--min-queries", "4",
               "--epochs", "4", str(caps["tunnel"]), str(caps["benign"])])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    caps = make_captures(d)
    return caps, train_model(d, caps)


# --- labels -------------------------------------------------------------------------------
def test_label_rows_follow_eval_matching():
    t = Truth("x", "tunnel", tunnels=[Tunnel(domain="tun.example.com")])
    clients = {"10.0.0.5"}
    def lab(scope, ident, client=None, server=None, domain=None, factor=1.0):
        return (label_row(t, clients, scope, ident, client, server, domain, factor))
    assert lab("domain", ("d", "example.com")) == TUNNEL  # parent of the tunnel domain
    assert lab("client_domain", ("d", "other.org"), "10.0.0.5") == BENIGN
    assert lab("client", ("c", b""), "10.0.0.5") == SKIP  # queried the tunnel: ambiguous
    assert lab("client", ("c", b""), "10.0.0.9") == BENIGN
    assert lab("flow", ("f", None), "10.0.0.5", "1.2.3.4", "example.com") == TUNNEL
    a = Truth("y", "tunnel", tunnels=[Tunnel(client="10.0.0.7", server="10.0.0.8")])
    assert label_row(a, set(), "client", ("c", b""), "10.0.0.7", "10.0.0.53", None,
                     1.0) == TUNNEL
    assert label_row(a, set(), "domain", ("d", "x.com"), "10.0.0.7", "10.0.0.8", None,
                     1.0) == TUNNEL
    assert label_row(a, set(), "domain", ("d", "x.com"), "10.0.0.7", "10.0.0.53", None,
                     1.0) == SKIP
    b = Truth("z", "benign")
    assert label_row(b, set(), "domain", ("d", "x.com"), None, None, None, 1.0) == BENIGN


def test_weights_balance_classes_and_captures():
    x = {"a": 1.0}
    big = CaptureSamples("big", "benign", "0",
                         [((("domain", ("d", f"{i}.com"), None)), "domain", x, 0, 5)
                          for i in range(900)])
    small = CaptureSamples("small", "tunnel", "1",
                           [((("domain", ("d", "t.com"), None)), "domain", x, 1, q)
                            for q in range(1, 200)])
    data = weighted([big, small])
    w_t = sum(w for _, y, w in data if y)
    w_b = sum(w for _, y, w in data if not y)
    assert abs(w_t - w_b) < 1e-6 * (w_t + w_b)
    # one tunnel key is thinned to the first snapshots plus a sample of the rest
    assert sum(1 for _, y, _ in data if y) == 48
    assert abs(sum(w for _, _, w in data) / len(data) - 1.0) < 1e-9


# --- the train command --------------------------------------------------------------------
def test_train_writes_model_and_metadata(trained):
    caps, path = trained
    meta = json.loads(M.meta_path(path).read_text())
    assert meta["features"] == M.INPUTS
    assert meta["classifier"] == "HoeffdingTreeClassifier"
    assert set(meta["versions"]) >= {"river", "python", "dnsguard"}
    assert len(meta["training"]["digest"]) == 64
    assert {c["file"] for c in meta["training"]["captures"]} == {"tunnel.pcap", "benign.pcap"}
    assert meta["training"]["snapshots"]["tunnel"] > 0
    assert path.stat().st_mode & 0o022 == 0
    bundle, meta2 = M.load(path)
    assert meta2["sha256"] == meta["sha256"]


def test_trained_model_detects_alone_and_explains(trained, tmp_path, capsys):
    caps, path = trained
    rules = empty_rules(tmp_path / "rules")
    out = tmp_path / "alerts.jsonl"
    rc = main(["replay", "-q", "--rules", str(rules), "--model", str(path), "--alerts",
               str(out), str(caps["tunnel"]), str(caps["benign"])])
    assert rc == 0
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert alerts, "the model alone should flag the synthetic tunnel"
    assert all(a["detectors"] == [M.DETECTOR_ID] for a in alerts)
    assert any(a["domain"] and a["domain"].endswith("exfil-lab.test") for a in alerts)
    assert not [a for a in alerts if a["domain"] and "example" in a["domain"]]
    a = alerts[0]
    assert 0.0 < a["score"] <= 1.0
    assert any(r.startswith("model: P(tunnel)") for r in a["reasons"])
    assert "model_anomaly" in a["stats"] and "model_p" in a["stats"]


def test_train_refuses_without_truth_match(tmp_path, trained, capsys):
    caps, _ = trained
    t = tmp_path / "t.yaml"
    t.write_text("captures:\n- file: other.pcap\n  class: benign\n")
    rc = main(["train", "--truth", str(t), "-o", str(tmp_path / "m.pkl"), str(caps["tunnel"])])
    assert rc == 2
    assert "no capture with ground truth" in capsys.readouterr().err
