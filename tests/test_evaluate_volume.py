"""`dnsguard eval` counts volume anomalies a user would see (issue #12): a benign capture
whose busiest client steps up raises a dns_volume_anomaly, and eval reports it as a
false-positive volume key (table and JSON), apart from the tunnel alerts' keys; the same
alert on a tunnel's client is not counted as false.

Cost: two replays of ~28k packets built from pcaps/benign_lookups.pcap (a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, pcap_bytes
from dnsguard.capture.pcapfile import CaptureReader
from dnsguard.decode.packet import Datagram, decode_frame, ip_text
from dnsguard.evaluate import Truth, Tunnel, evaluate, format_table
from dnsguard.settings import Settings

SAMPLE = ROOT / "pcaps" / "benign_lookups.pcap"
TILES = 24  # one copy of the 14 s sample per minute: a steady baseline of ~240 queries/min
STEPPED = 6  # the last minutes: the busiest client's queries sent 4 times


def _stepped_capture(path: Path) -> str:
    """Write the tiled, stepped-up capture; return the stepped-up client."""
    r = CaptureReader.open(SAMPLE)
    try:
        base = [(ts, lt, d, w) for ts, lt, d, w in r]
    finally:
        r.close()
    counts: dict[bytes, int] = {}
    src: list[bytes | None] = []
    for _ts, lt, d, w in base:
        x = decode_frame(lt, d, w, frozenset({53}))
        c = x.src if x.__class__ is Datagram and x.dport == 53 else None
        src.append(c)
        if c is not None:
            counts[c] = counts.get(c, 0) + 1
    client = max(counts, key=counts.get)
    t0 = base[0][0]
    frames = []
    for i in range(TILES):
        for (ts, _lt, d, _w), c in zip(base, src, strict=True):
            t = 1_700_000_000.0 + 60.0 * i + (ts - t0)
            copies = 4 if (i >= TILES - STEPPED and c == client) else 1
            for k in range(copies):
                tk = t + 0.001 * k
                frames.append((int(tk), int(round((tk % 1) * 1e6)) % 1_000_000, d))
    frames.sort(key=lambda f: (f[0], f[1]))
    path.write_bytes(pcap_bytes(frames))
    return ip_text(client)


def test_eval_counts_volume_false_positives(tmp_path, ruleset):
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} not present")
    cap = tmp_path / "stepped.pcap"
    client = _stepped_capture(cap)
    s = Settings()
    s.use_model = False

    res = evaluate([cap], {cap.name: Truth(cap.name, "benign")}, s, ruleset)
    r = res["captures"][0]
    assert r["volume_alerts"] >= 1
    assert f"client:{client}" in r["volume_false_positive_keys"], r
    assert all(d.startswith("series:") for v in r["volume_false_positive_keys"].values()
               for d in v)
    t = res["totals"]
    assert t["volume_false_positive_keys"] == len(r["volume_false_positive_keys"]) >= 1
    assert t["benign_captures_volume_alerting"] == 1
    # the tunnel keys' count stays what it was: volume anomalies are reported apart
    assert t["false_positive_keys"] == len(r["false_positive_keys"])
    table = format_table(res)
    assert "volume FP" in table.splitlines()[0]
    assert f"FP volume client:{client}" in table
    assert f"false-positive volume keys: {t['volume_false_positive_keys']}" in table

    # the same alert on a tunnel's own client is about the tunnel, not a false alarm
    res = evaluate([cap], {cap.name: Truth(cap.name, "tunnel", "x", [Tunnel(client=client)])},
                   s, ruleset)
    assert f"client:{client}" not in res["captures"][0]["volume_false_positive_keys"]

    # --no-volume-alerts: nothing to count
    s.volume_alerts = False
    res = evaluate([cap], {cap.name: Truth(cap.name, "benign")}, s, ruleset)
    assert res["totals"]["volume_false_positive_keys"] == 0
