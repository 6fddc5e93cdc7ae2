"""``Pipeline.feed_message``: a DNS message without a frame (a resolver's log such as dnstap)
is measured and judged exactly as the same message decoded from a captured frame."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conftest import dns_query
from dnsguard.capture.pcapfile import CaptureReader
from dnsguard.decode.packet import Datagram, decode_frame
from dnsguard.detect.rules import load_dir
from dnsguard.pipeline import Pipeline
from dnsguard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PCAPS = sorted((ROOT / "pcaps").glob("*.pcap"))


def _pipeline() -> tuple[Pipeline, list[dict]]:
    s = Settings()
    s.use_model = False
    alerts: list[dict] = []
    return Pipeline(s, load_dir(s.rules), alerts.append), alerts


@pytest.mark.parametrize("path", PCAPS, ids=[p.name for p in PCAPS])
def test_feed_message_same_as_frame(path: Path) -> None:
    """Every UDP DNS-port datagram of the capture fed as a message, the rest as frames: the
    same outcomes, summary and alerts as feeding every frame."""
    ref, ref_alerts = _pipeline()
    msg, msg_alerts = _pipeline()
    fed = 0
    for ts, lt, data, wirelen in CaptureReader.open(path):
        want = ref.feed(ts, lt, data, wirelen)
        d = decode_frame(lt, data, wirelen, msg.ports)
        if d.__class__ is Datagram and not d.tcp and not d.cut:
            got = msg.feed_message(ts, d.src, d.dst, d.sport, d.dport, d.payload)
            fed += 1
        else:
            got = msg.feed(ts, lt, data, wirelen)
        assert got == want
    ref.finish()
    msg.finish()
    assert fed
    assert msg.summary() == ref.summary()
    assert msg_alerts == ref_alerts


def test_feed_message_outcomes_and_counts() -> None:
    p, _ = _pipeline()
    c, r = socket.inet_pton(socket.AF_INET6, "2001:db8::1"), socket.inet_aton("192.0.2.53")
    assert p.feed_message(1.0, c, r, 40000, 53, dns_query("www.example.com")) == "dns_query"
    assert p.feed_message(2.0, c, r, 40000, 53, b"\x00\x01garbage", tcp=True) in (
        "not_dns", "malformed")
    s = p.summary()
    assert s["queries"] == 1
    assert s["outcomes"]["dns_query"] == 1 and s["packets"] == 2
    assert (s["first_ts"], s["last_ts"]) == (1.0, 2.0)
    assert s["tracked_keys"]["flow"] == 1  # the broken message counts to its flow
