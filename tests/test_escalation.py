"""A weaker alert no longer hides a stronger one, and the alert names the zone to block
(issue #14, item 1). Replays the bundled dns2tcp capture (pcaps/, a real dns2tcp session made
by make_pcaps.sh), whose first alert is a single query and whose names start with dns2tcp's
own ``=auth`` label; the tunnel's domain comes from pcaps/truth.yaml, not from this file.
A real Prometheus scrape of the exporter checks the counts. Cost: ~3 s."""

from __future__ import annotations

import re
import urllib.request

import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT
from dnsguard import __version__
from dnsguard.detect.rules import load_dir
from dnsguard.domain import block_zone
from dnsguard.metrics import Metrics
from dnsguard.pipeline import Pipeline
from dnsguard.replay import replay
from dnsguard.settings import Settings

PCAP = ROOT / "pcaps" / "dns2tcp_key.pcap"
LDH = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", re.I)


def _truth_domain(name: str) -> str:
    truth = yaml.safe_load((ROOT / "pcaps" / "truth.yaml").read_text())
    cap = next(c for c in truth["captures"] if c["file"] == name)
    return cap["tunnels"][0]["domain"]


def _related(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def test_escalation_zone_and_counts():
    # One record per detector crossing its bar (settle 0): the escalation chain itself. With
    # the default settle interval the chain is one record: test_settled_into_one_record.
    s = Settings(rules=ROOT / "rules", settle=0.0)
    alerts: list[dict] = []
    m = Metrics(version=__version__)

    def emit(a: dict) -> None:
        alerts.append(a)
        m.count_alert(a)

    rs = load_dir(s.rules)
    pipe = Pipeline(s, rs, emit)
    m.pipeline = pipe
    res = replay([PCAP], s, rs, emit, pipeline=pipe)
    tunnel = _truth_domain(PCAP.name)
    assert len(alerts) >= 2, alerts
    first = alerts[0]
    # The single query came first and is medium; the tunnel's breadth then escalates it.
    assert first["severity"] == "medium" and first["escalates"] is None
    ids = [a["alert_id"] for a in alerts]
    high = [a for a in alerts if a["severity"] == "high"]
    assert high and high[0]["escalates"] in ids[:ids.index(high[0]["alert_id"])]
    assert all(a["escalates"] in ids for a in alerts[1:])  # each later one says which
    # Every alert names the tunnel's zone or a parent of it, through hostname labels only:
    # never a label of the tunnel's own syntax (dns2tcp's "=auth").
    for a in alerts:
        assert _related(a["domain"], tunnel), (a["domain"], tunnel)
        assert all(LDH.match(label) for label in a["domain"].split(".")), a["domain"]
    assert any(a["domain"] == tunnel for a in alerts)  # the deepest zone, once evident
    # Repeats are counted after the rules ran: in the summary and in the metrics.
    summ = res.summary
    assert summ["suppressed_alerts"] > 0 and summ["escalated_alerts"] == len(alerts) - 1
    host, port = m.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        m.close()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["dnsguard_alerts_suppressed"].samples[0].value == summ["suppressed_alerts"]
    assert fams["dnsguard_alerts_escalated"].samples[0].value == summ["escalated_alerts"]


def test_settled_into_one_record():
    """The same capture with the default settle interval: the detectors that crossed their
    bars within a second of the first alert are one record, with every detector and reason
    of the chain above, its highest severity, the first alert's time; nothing escalates."""
    chain: list[dict] = []
    s0 = Settings(rules=ROOT / "rules", settle=0.0)
    replay([PCAP], s0, load_dir(s0.rules), chain.append)
    s = Settings(rules=ROOT / "rules")
    assert s.settle > 0
    alerts: list[dict] = []
    res = replay([PCAP], s, load_dir(s.rules), alerts.append)
    t0 = chain[0]["timestamp"]
    settled = [a for a in chain if _seconds(a["timestamp"]) - _seconds(t0) < s.settle]
    assert len(settled) >= 2
    first = alerts[0]
    assert first["timestamp"] == t0 and first["escalates"] is None
    assert first["merged"] == len(settled) and first["severity"] == "high"
    assert first["detectors"] == list(dict.fromkeys(d for a in settled for d in a["detectors"]))
    assert set(first["reasons"]) == {r for a in settled for r in a["reasons"]}
    assert len(alerts) == len(chain) - len(settled) + 1
    assert res.summary["merged_alerts"] == len(settled) - 1
    assert res.summary["escalated_alerts"] == len(alerts) - 1


def _seconds(iso: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def test_block_zone_stops_at_a_tunnels_own_syntax():
    # dns2tcp, iodine-style raw octets, a made-up control label: never part of the zone.
    assert block_zone("=auth.t.example.net", "example.net", 50) == "t.example.net"
    assert block_zone("\\200x.t.example.net", "example.net", 50) == "t.example.net"
    assert block_zone("ctl_.t.example.net", "example.net", 50) == "t.example.net"
    assert block_zone("a.=auth.t.example.net", "example.net", 50) == "t.example.net"
    assert block_zone("zone2.t.example.net", "example.net", 50) == "zone2.t.example.net"
    assert block_zone("t.example.net", "example.net", 7) == "example.net"


def test_a_flow_alert_names_the_zone_of_its_handshake(tmp_path):
    """A tunnel in raw mode (non-DNS on port 53 after a DNS handshake, iodine's raw UDP):
    the flow's alert names the zone its handshake's names share, as a domain alert would
    (it named the registered domain, a parent of the tunnel's zone)."""
    import random

    from conftest import dns_query, dns_response, eth, pcap_bytes, udp4

    cl, srv, t0 = "10.53.2.30", "10.53.2.10", 1_700_000_000
    frames = []
    for i in range(12):  # the handshake: ordinary hostname labels under the tunnel's zone
        name = f"h{i}x.t1.example.net"
        frames += [(t0 + i, 0, eth(udp4(dns_query(name, qid=i), sport=41000 + i, src=cl,
                                        dst=srv))),
                   (t0 + i, 5000, eth(udp4(dns_response(name, qid=i), sport=53,
                                           dport=41000 + i, src=srv, dst=cl)))]
    rnd = random.Random(7)
    for i in range(80):  # then raw data both ways on the DNS port, one flow
        up = i % 2 == 0
        data = bytes(rnd.randrange(256) for _ in range(120))
        frames.append((t0 + 20 + i // 4, (i % 4) * 1000, eth(udp4(
            data, sport=42000 if up else 53, dport=53 if up else 42000,
            src=cl if up else srv, dst=srv if up else cl))))
    cap = tmp_path / "raw.pcap"
    cap.write_bytes(pcap_bytes(frames))
    s = Settings(rules=ROOT / "rules", settle=0.0)
    s.use_model = False
    alerts: list[dict] = []
    replay([cap], s, load_dir(s.rules), alerts.append)
    flow = [a for a in alerts if a["scope"] == "flow"]
    assert flow, alerts
    assert {a["domain"] for a in flow} == {"t1.example.net"}, flow
