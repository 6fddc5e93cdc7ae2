"""The Prometheus exporter: a real HTTP scrape on 127.0.0.1, parsed with prometheus_client's
parser; metric names, label names and label values (never a name or an address)."""

from __future__ import annotations

import struct
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dnsguard import __version__
from dnsguard.decode.packet import OUTCOMES
from dnsguard.detect.rules import load_dir
from dnsguard.metrics import QTYPE_LABELS, SCOPES, Metrics, qtype_bucket
from dnsguard.pipeline import Pipeline
from dnsguard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CLIENT, SERVER = "192.0.2.77", "198.51.100.53"
NAMES = ["www.example-shop.test", "mail.example-shop.test", "a.secret-domain.test",
         "txt.example-shop.test", "null.other-zone.test", "odd.other-zone.test"]


def _name(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0"


def _frame(dns: bytes, src: str = CLIENT, dst: str = SERVER, sport: int = 40000,
           dport: int = 53) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(dns), 0) + dns
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + udp


def query(name: str, qtype: int, qid: int = 7) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _name(name) + struct.pack(
        "!HH", qtype, 1)


def response(name: str, qid: int = 7) -> bytes:
    q = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + _name(name) + b"\0\x01\0\x01"
    return q + b"\xc0\x0c\0\x01\0\x01\0\0\0\x3c\0\x04" + bytes([192, 0, 2, 1])


class FakeInterface:
    name = "eth-test0"
    kind = "ring"
    frames = 11
    kernel_packets = 12
    kernel_drops = 7
    kernel_freezes = 2


@pytest.fixture
def exporter():
    s = Settings(rules=ROOT / "rules")
    if hasattr(s, "use_model"):
        s.use_model = False
    m = Metrics(version=__version__)
    pipe = Pipeline(s, load_dir(s.rules), m.count_alert)
    m.pipeline = pipe
    m.interfaces = [FakeInterface()]
    host, port = m.serve("127.0.0.1", 0)
    try:
        yield m, pipe, f"http://{host}:{port}/metrics"
    finally:
        m.close()


def scrape(url: str) -> tuple[str, dict]:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    return text, fams


def value(fams: dict, family: str, sample: str, **labels) -> float:
    for s in fams[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((sample, labels))


EXPECTED = {
    # family: (type, label names of its main samples)
    "dnsguard_packets": ("counter", {"outcome"}),
    "dnsguard_dns_messages": ("counter", {"direction", "qtype"}),
    "dnsguard_parse_errors": ("counter", {"reason"}),
    "dnsguard_alerts": ("counter", {"detector", "severity"}),
    "dnsguard_alert_records": ("counter", set()),
    "dnsguard_alert_write_errors": ("counter", set()),
    "dnsguard_tracked_keys": ("gauge", {"scope"}),
    "dnsguard_evicted_keys": ("counter", {"scope"}),
    "dnsguard_suppressed_alerts": ("counter", set()),
    "dnsguard_alerts_escalated": ("counter", set()),
    "dnsguard_alerts_merged": ("counter", set()),
    "dnsguard_allowlisted_queries": ("counter", set()),
    "dnsguard_kernel_packets": ("counter", {"interface"}),
    "dnsguard_kernel_drops": ("counter", {"interface"}),
    "dnsguard_captured_frames": ("counter", {"interface"}),
    "dnsguard_kernel_freezes": ("counter", {"interface"}),
    "dnsguard_capture_info": ("gauge", {"interface", "kind"}),
    "dnsguard_processing_seconds": ("histogram", set()),
    "dnsguard_processed_batches": ("counter", set()),
    "dnsguard_model_score": ("histogram", set()),
    "dnsguard_model_updates": ("counter", set()),
    "dnsguard_feedback_labels": ("counter", set()),
    "dnsguard_reloads": ("counter", {"result"}),
    "dnsguard_build_info": ("gauge", {"version"}),
    "dnsguard_start_time_seconds": ("gauge", set()),
    "dnsguard_last_packet_timestamp_seconds": ("gauge", set()),
}


def test_names_types_and_labels(exporter):
    m, pipe, url = exporter
    ts = 1_700_000_000.0
    for i, (name, qt) in enumerate(zip(NAMES, (1, 1, 28, 16, 10, 999), strict=True)):
        f = _frame(query(name, qt, qid=i))
        pipe.feed(ts + i, 1, f, len(f))
    f = _frame(response(NAMES[0]), src=SERVER, dst=CLIENT, sport=53, dport=40000)
    pipe.feed(ts + 10, 1, f, len(f))
    broken = struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0) + b"\x3fabc"  # label runs off
    f = _frame(broken)
    pipe.feed(ts + 11, 1, f, len(f))
    m.count_alert({"detectors": ["encoded-subdomains", "model"], "severity": "high"})
    m.alert_records.inc()
    m.processing.observe(0.0004)
    m.model_score.observe(0.93)

    text, fams = scrape(url)
    for fam, (typ, labels) in EXPECTED.items():
        assert fam in fams, fam
        assert fams[fam].type == typ, fam
        for s in fams[fam].samples:
            assert set(s.labels) - {"le"} == labels, (fam, s)
    # The names the issue fixes, as exposed.
    for sample in ("dnsguard_model_score_bucket", "dnsguard_model_updates_total",
                   "dnsguard_feedback_labels_total", "dnsguard_kernel_drops_total",
                   "dnsguard_processing_seconds_bucket", "dnsguard_packets_total",
                   "dnsguard_alerts_total"):
        assert f"\n{sample}" in text, sample
    assert value(fams, "dnsguard_build_info", "dnsguard_build_info",
                 version=__version__) == 1

    # Values.
    assert value(fams, "dnsguard_packets", "dnsguard_packets_total", outcome="dns_query") == 6
    assert value(fams, "dnsguard_packets", "dnsguard_packets_total",
                 outcome="dns_response") == 1
    assert value(fams, "dnsguard_packets", "dnsguard_packets_total", outcome="malformed") == 1
    q = {s.labels["qtype"]: s.value for s in fams["dnsguard_dns_messages"].samples
         if s.labels["direction"] == "query"}
    assert q == {**dict.fromkeys(QTYPE_LABELS, 0), "A": 2, "AAAA": 1, "TXT": 1, "NULL": 1,
                 "other": 1}
    assert value(fams, "dnsguard_dns_messages", "dnsguard_dns_messages_total",
                 direction="response", qtype="A") == 1
    assert value(fams, "dnsguard_parse_errors", "dnsguard_parse_errors_total",
                 reason="truncated") == 1
    assert value(fams, "dnsguard_alerts", "dnsguard_alerts_total",
                 detector="encoded-subdomains", severity="high") == 1
    assert value(fams, "dnsguard_alerts", "dnsguard_alerts_total", detector="model",
                 severity="high") == 1
    assert value(fams, "dnsguard_alert_records", "dnsguard_alert_records_total") == 1
    # Three domains; the one queried only once is held, not tracked (admission:
    # WindowTable.hold), until a second query could make it worth judging.
    assert value(fams, "dnsguard_tracked_keys", "dnsguard_tracked_keys", scope="domain") == 2
    assert value(fams, "dnsguard_kernel_drops", "dnsguard_kernel_drops_total",
                 interface="eth-test0") == 7
    assert value(fams, "dnsguard_kernel_freezes", "dnsguard_kernel_freezes_total",
                 interface="eth-test0") == 2
    assert value(fams, "dnsguard_capture_info", "dnsguard_capture_info",
                 interface="eth-test0", kind="ring") == 1
    assert value(fams, "dnsguard_model_score", "dnsguard_model_score_count") == 1
    assert value(fams, "dnsguard_model_updates", "dnsguard_model_updates_total") == 0
    assert value(fams, "dnsguard_feedback_labels", "dnsguard_feedback_labels_total") == 0

    # Label values come from fixed sets; no name, domain or address appears anywhere.
    allowed = {"outcome": set(OUTCOMES), "direction": {"query", "response"},
               "qtype": set(QTYPE_LABELS), "scope": set(SCOPES), "result": {"ok", "error"},
               "severity": {"low", "medium", "high"}, "interface": {"eth-test0"},
               "kind": {"ring", "socket"},
               "version": {__version__}}
    for fam in fams.values():
        for s in fam.samples:
            for k, v in s.labels.items():
                if k in allowed:
                    assert v in allowed[k], (fam.name, k, v)
    for secret in (*NAMES, "secret-domain", "example-shop", CLIENT, SERVER, "192.0.2.1"):
        assert secret not in text, secret


def test_qtype_buckets_are_bounded():
    assert qtype_bucket(1) == "A" and qtype_bucket(65399) == "PRIVATE"
    assert {qtype_bucket(t) for t in range(65536)} == set(QTYPE_LABELS)


def test_scrape_while_the_pipeline_runs(exporter):
    """The collector reads counters the capture thread is changing: no error, ever."""
    m, pipe, url = exporter
    stop = threading.Event()
    errors: list[BaseException] = []

    def scraper():
        try:
            for _ in range(30):
                if stop.is_set():
                    break
                scrape(url)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=scraper)
    t.start()
    try:
        for i in range(3000):
            f = _frame(query(f"n{i}.zone{i % 300}.test", 1 + i % 300, qid=i & 0xFFFF))
            pipe.feed(1_700_000_000.0 + i * 0.01, 1, f, len(f))
    finally:
        stop.set()
        t.join(timeout=30)
    assert not errors, errors
    _, fams = scrape(url)
    assert value(fams, "dnsguard_packets", "dnsguard_packets_total", outcome="dns_query") == 3000


def test_daemon_counts_model_scores_and_feedback_labels():
    """The daemon wraps the model detector's methods on the instance to feed
    dnsguard_model_score and dnsguard_feedback_labels_total."""
    from dnsguard.config import DaemonConfig
    from dnsguard.daemon import Daemon

    class FakeModel:
        learned = 5

        def proba(self, x):
            return 0.25

        def _feedback(self, scope, ident):
            return ("tunnel", "bad.test") if ident[1] == "bad.test" else None

    d = Daemon(DaemonConfig())
    d.metrics = m = Metrics(version="x")
    det = FakeModel()
    d._instrument(det)
    assert det.proba({}) == 0.25 and det.proba({}) == 0.25
    assert det._feedback("domain", ("d", "bad.test")) == ("tunnel", "bad.test")
    assert det._feedback("domain", ("d", "good.test")) is None
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    assert "dnsguard_model_score_count 2.0" in text
    assert "dnsguard_feedback_labels_total 1.0" in text
