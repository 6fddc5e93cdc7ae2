"""Names written by attackers: they must not forge alert lines, log lines or terminal output."""

from __future__ import annotations

import json
import logging

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from dnsguard.detect.rules import load_dir
from dnsguard.output.alerts import AlertWriter
from dnsguard.pipeline import Pipeline
from dnsguard.settings import DEFAULT_RULES, Settings

EVIL = b'x\n{"event_type": "forged"}\x1b[31mred\x1b[0m\r"quoted"\x00\xff'


def frame(label: bytes) -> bytes:
    # scapy would re-encode the name; put raw label bytes on the wire ourselves.
    qname = bytes([len(label)]) + label + b"\x07example\x03com\x00"
    dns = bytes(DNS(id=1, rd=1, qd=DNSQR(qname="a.b")))[:12] + qname + b"\x00\x10\x00\x01"
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=4000, dport=53)
                 / dns)


def test_hostile_name_is_escaped_in_alerts_and_logs(tmp_path, caplog):
    out = tmp_path / "alerts.jsonl"
    writer = AlertWriter(path=str(out))
    pipe = Pipeline(Settings(), load_dir(DEFAULT_RULES), writer.write)
    with caplog.at_level(logging.DEBUG):
        assert pipe.feed(1.0, 1, frame(EVIL), 100) == "dns_query"
        pipe.finish()
    writer.close()
    text = out.read_text(encoding="ascii")  # 7-bit clean: no raw ESC, CR or high bytes
    lines = text.splitlines()
    assert len(lines) == pipe.alerts >= 1  # the name did not add a line
    alert = json.loads(lines[0])
    assert alert["event_type"] == "dns_tunnel"
    sample = alert["samples"][0]
    assert "\n" not in sample and "\x1b" not in sample and "\r" not in sample
    assert "\\010" in sample and "\\027" in sample and '\\"' in sample and "\\255" in sample
    for rec in caplog.records:
        msg = rec.getMessage()
        assert "\x1b" not in msg and "\n" not in msg


def test_domain_field_is_presentation_format():
    alerts: list[dict] = []
    pipe = Pipeline(Settings(), load_dir(DEFAULT_RULES), alerts.append)
    for i in range(20):
        label = bytes([0xC0 + (i % 16)]) * 10 + f"{i:02d}".encode() + EVIL[:12]
        pipe.feed(1.0 + i, 1, frame(label), 100)
    pipe.finish()
    assert alerts
    for a in alerts:
        assert a["domain"] == "example.com"
        json.dumps(a, ensure_ascii=True)
