"""The HTML report: self-contained (no script, nothing fetched), escapes what packets carry,
draws its plots; headless Chromium opens it, the screenshot is not blank and the rendered DOM
holds the SVG plots. The stream is crafted in memory: two clients for 30 minutes, one of them
stepping its volume up five-fold, so the report has a volume anomaly to show."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from dnsguard.cli import main
from dnsguard.report import render, write_report
from dnsguard.series.monitor import EVENT_VOLUME
from dnsguard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _name(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0"


def _frame(dns: bytes, src: str, dst: str, sport: int, dport: int) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(dns), 0) + dns
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + udp


def _query(name: str, qid: int) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _name(name) + b"\0\x01\0\x01"


def _response(name: str, qid: int) -> bytes:
    q = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + _name(name) + b"\0\x01\0\x01"
    return q + b"\xc0\x0c\0\x01\0\x01\0\0\0\x3c\0\x04" + bytes([192, 0, 2, 1])


def stream():
    """(ts, frame) for 30 minutes: 10.0.0.5 asks 200 names a minute across 20 domains, then
    1000 from minute 22; 10.0.0.6 asks 150 a minute throughout."""
    out = []
    for minute in range(30):
        for client, n in (("10.0.0.5", 1000 if minute >= 22 else 200), ("10.0.0.6", 150)):
            for i in range(n):
                ts = T0 + minute * 60 + i * (55.0 / n)
                name = f"h{i % 40}.site{i % 20}.example"
                qid = (minute * 1000 + i) & 0xFFFF
                out.append((ts, _frame(_query(name, qid), client, "10.0.0.53", 40000, 53)))
                out.append((ts + 0.002, _frame(_response(name, qid), "10.0.0.53", client, 53,
                                               40000)))
    return out


@pytest.fixture(scope="module")
def replayed(ruleset):
    from dnsguard.pipeline import Pipeline

    s = Settings()
    s.use_model = False
    alerts: list[dict] = []
    pipe = Pipeline(s, ruleset, alerts.append)
    pipe.source = "crafted"
    for ts, frame in stream():
        pipe.feed(ts, 1, frame, len(frame))
    pipe.finish()
    return pipe, alerts


def test_stream_has_a_volume_anomaly(replayed):
    _, alerts = replayed
    vol = [a for a in alerts if a["event_type"] == EVENT_VOLUME]
    assert any(a["src_ip"] == "10.0.0.5" for a in vol), alerts
    assert not any(a["src_ip"] == "10.0.0.6" for a in vol)


def test_volume_alert_severity_is_the_documented_one(replayed):
    """The severity scale (docs/alerts.md, the README's alert table) says what a volume
    anomaly's severity means: the stepped-up client's alert (six tests on two metrics) is
    ``medium``, and both documents name ``dns_volume_anomaly`` at that severity (they once
    said volume alone is always ``low``)."""
    _, alerts = replayed
    vol = [a for a in alerts if a["event_type"] == EVENT_VOLUME]
    assert vol
    doc = (ROOT / "docs" / "alerts.md").read_text()
    rows = dict(re.findall(r"^\| `(high|medium|low)` \| ([^|]*) \|", doc, re.M))
    readme = (ROOT / "README.md").read_text()
    cell = next(ln for ln in readme.splitlines() if ln.startswith("| `severity`, `score` |"))
    said = dict(re.findall(r"`(high|medium|low)` \(([^)]*)\)", cell))
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "dnsguard" / "data" / "alert.schema.json").read_text())
    v = jsonschema.Draft202012Validator(schema)
    for a in vol:
        assert not [e.message for e in v.iter_errors(a)], a  # the shipped schema's record
        assert "dns_volume_anomaly" in rows[a["severity"]], a["severity"]
        assert "volume" in said[a["severity"]], (a["severity"], said)


def test_report_is_self_contained_and_has_its_plots(replayed):
    pipe, alerts = replayed
    doc = render(pipe, alerts, sources=["crafted"])
    assert doc.startswith("<!DOCTYPE html>")
    assert "<script" not in doc.lower() and "<link" not in doc.lower()
    # the only URL is the SVG namespace, which is never fetched
    urls = set(re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", doc))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert not re.search(r"""\b(?:src|href)\s*=""", doc)
    assert doc.count("<svg") >= 10
    assert "client 10.0.0.5" in doc  # its timeline
    assert "Feature distributions" in doc and "mean_sub_len" in doc
    assert "top clients by queries" in doc and "10.0.0.6" in doc
    assert "dns_volume_anomaly" in doc


def test_report_escapes_packet_strings(replayed):
    pipe, _ = replayed
    evil = {"timestamp": "2023-11-14T22:20:00.000000Z", "event_type": "dns_tunnel",
            "severity": "high", "score": 1.0, "domain": "<script>alert(1)</script>.x",
            "src_ip": None, "dest_ip": None, "detectors": ["r"], "reasons": ["<b>"]}
    doc = render(pipe, [evil])
    assert "<script>" not in doc and "&lt;script&gt;" in doc and "<b>" not in doc


def test_report_without_alerts_still_draws_the_busiest_series(replayed):
    pipe, _ = replayed
    doc = render(pipe, [])
    assert "No alerts." in doc and "busiest series" in doc and "polyline" in doc


def test_cli_replay_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report.html"
    rc = main(["replay", "-q", "--no-model", "--report", str(out),
               str(ROOT / "pcaps" / "mixed_iodine_and_benign.pcap")])
    assert rc == 0
    doc = out.read_text()
    assert "<svg" in doc and "dns_tunnel" in doc
    assert '"event_type": "dns_tunnel"' in capsys.readouterr().out
    # unwritable report path: refused before the replay
    rc = main(["replay", "-q", "--no-model", "--report", str(tmp_path / "no" / "r.html"),
               str(ROOT / "pcaps" / "mixed_iodine_and_benign.pcap")])
    assert rc == 2 and "cannot write the report" in capsys.readouterr().err


def _png_pixels_vary(png: bytes) -> tuple[int, float]:
    """(distinct byte values, share of bytes unlike the commonest) of the decompressed image
    data: a blank page is one colour."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    counts = [0] * 256
    for b in raw[::7]:  # a sample is plenty
        counts[b] += 1
    total = sum(counts)
    return sum(1 for c in counts if c), 1 - max(counts) / total


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package "
                    "'chromium': apt-get install chromium)")
def test_headless_chromium_renders_the_plots(replayed, tmp_path):
    pipe, alerts = replayed
    report = tmp_path / "report.html"
    write_report(report, pipe, alerts, sources=["crafted"])
    shot = Path(os.environ.get("DNSGUARD_REPORT_SHOT", tmp_path / "report.png"))
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,2000"]
    url = report.resolve().as_uri()
    r = subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, timeout=60)
    assert shot.exists() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    distinct, varied = _png_pixels_vary(shot.read_bytes())
    assert distinct > 30 and varied > 0.01, (distinct, varied)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, timeout=60,
                         text=True).stdout
    assert dom.count("<svg") >= 10, dom[:500]
    assert "<polyline" in dom and "<rect" in dom
    assert "client 10.0.0.5" in dom


# --- input spanning days (issue #14, item 2) ---------------------------------------------------
def _pcap(records) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts, frame in records:
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
        out.append(frame)
    return b"".join(out)


def _tunnel(t0: float, client: str, zone: str, n: int = 120) -> list:
    import random

    rnd = random.Random(zone)
    out = []
    for i in range(n):
        label = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(40))
        out.append((t0 + i * 5.0, _frame(_query(f"{label}.{zone}", i), client, "10.9.0.53",
                                         41000, 53)))
    return out


def _busy(t0: float, client: str, n: int) -> list:
    return [(t0 + i * (3000.0 / n), _frame(_query(f"www{i % 50}.site{i % 7}.example", i),
                                           client, "10.9.0.53", 42000, 53)) for i in range(n)]


def test_report_of_input_spanning_days(tmp_path, capsys):
    """Two captures two days apart: each alerted key's timeline shows its own traffic with
    its own dated range; the busiest client of the first day tops the talkers though the
    series (24 h) no longer hold it; the header dates both ends; the size stays bounded."""
    day1, day3 = T0, T0 + 2 * 86400  # each within its own date (T0 is 22:13 UTC)
    a, b = tmp_path / "day1.pcap", tmp_path / "day3.pcap"
    a.write_bytes(_pcap(sorted(_busy(day1, "10.1.0.1", 3000)
                               + _tunnel(day1 + 600, "10.1.0.2", "tun-one.example"))))
    b.write_bytes(_pcap(sorted(_busy(day3, "10.1.0.3", 100)
                               + _tunnel(day3 + 60, "10.1.0.4", "tun-two.example"))))
    out = tmp_path / "r.html"
    assert main(["replay", "-q", "--no-model", "--report", str(out), str(a), str(b)]) == 0
    alerts = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert any("tun-one.example" in x for x in alerts)
    doc = out.read_text()
    text = re.sub(r"<[^>]+>", " ", doc)
    d1, d3 = (time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (day1, day3))
    assert re.search(rf"{d1} \d\d:\d\d – {d3} \d\d:\d\d UTC", text), "header: both dates"
    heads = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h3>(.*?)</h3>", doc)]
    one = next(h for h in heads if h.startswith("domain tun-one.example"))
    assert d1 in one
    assert float(re.search(r"peak ([\d.]+) queries/step", one).group(1)) >= 5  # not flat
    # The top clients table: the first day's busy client first, with its whole count.
    top = doc[doc.index("top clients by queries"):]
    first_row = re.findall(r"<tr><td>([^<]*)</td><td class=\"n\">([^<]*)</td>", top)[0]
    assert first_row == ("10.1.0.1", "3000"), first_row
    assert len(doc) < 1_000_000  # the documented bound (docs/timeseries.md)
