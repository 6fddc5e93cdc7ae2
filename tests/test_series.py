"""The series store (steps in capture time, ring buffers, bounded keys), the monitor's alert
path through the pipeline's policy, and an integration test: a real capture whose busiest
client's volume is stepped up mid-stream raises a ``dns_volume_anomaly`` naming that client."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from dnsguard.capture.pcapfile import CaptureReader
from dnsguard.decode.packet import Datagram, decode_frame, ip_text
from dnsguard.series import detectors as det
from dnsguard.series.monitor import EVENT_VOLUME, SeriesMonitor
from dnsguard.series.store import CUR_CAP, OTHER, SeriesStore
from dnsguard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
STEPPED = CORPUS / "ggy_benign_top1m_resolution_00000.pcap"
FALLBACK = ROOT / "pcaps" / "benign_lookups.pcap"


# --- store -------------------------------------------------------------------------------------
def test_steps_follow_packet_time_and_empty_steps_are_zero():
    s = SeriesStore(step=10, span=100, max_keys=4)
    for ts in (1.0, 2.0, 3.0, 12.0, 35.0, 36.0):  # steps 0 (3), 1 (1), 2 (0), 3 (2)
        s.observe_query(ts, b"c", "a.com", hash(ts), 30, 1)
    s.observe_response(36.5, b"c", "a.com", 100, 3)
    s.flush()
    t = s.tables["client"]
    slot = t.slot_of[b"c"]
    assert t.values(slot, "queries", 10).tolist() == [3, 1, 0, 2]
    assert t.values(slot, "names", 10).tolist() == [3, 1, 0, 2]
    assert t.values(slot, "bytes_up", 10).tolist() == [90, 30, 0, 60]
    assert t.values(slot, "bytes_down", 10).tolist() == [0, 0, 0, 100]
    assert t.values(slot, "nxdomain", 10).tolist() == [0, 0, 0, 1]


def test_ring_buffer_keeps_only_the_span():
    s = SeriesStore(step=1, span=5, max_keys=2)
    for i in range(12):
        for _ in range(i):
            s.observe_query(i + 0.5, b"c", "a.com", 1, 10, 1)
    s.flush()
    t = s.tables["domain"]
    assert t.values(t.slot_of["a.com"], "queries", 100).tolist() == [7, 8, 9, 10, 11]


def test_one_wild_timestamp_does_not_move_the_clock():
    s = SeriesStore(step=60, span=3600, max_keys=2)
    s.observe_query(10.0, b"c", "a.com", 1, 10, 1)
    s.observe_query(9000.0, b"c", "a.com", 2, 10, 1)  # a straggler hours ahead
    s.observe_query(11.0, b"c", "a.com", 3, 10, 1)
    assert s.cur_step == 0 and s.held == 1
    assert s._c.cur[b"c"].q == 3  # counted in the current step
    s.observe_query(9000.0, b"c", "a.com", 4, 10, 1)  # an idle gap: two packets confirm
    s.observe_query(9001.0, b"c", "a.com", 5, 10, 1)
    assert s.cur_step == 150 and s._c.cur[b"c"].q == 2


def test_keys_are_bounded_and_the_rest_is_other():
    """A flood of spoofed clients and random domains: tracked rows stay at max_keys, the
    current step at CUR_CAP keys, the total is kept in ``other``."""
    s = SeriesStore(step=60, span=3600, max_keys=8)
    mem = s.memory_bytes()
    n = 3 * CUR_CAP
    for i in range(n):
        s.observe_query(5.0, i.to_bytes(4, "big"), f"x{i}.com", i, 50, 1)
    assert len(s.tables["client"].cur) <= CUR_CAP
    s.flush()
    for t in s.tables.values():
        assert len(t) == 8
        assert float(t.data[:, 0, 0].sum()) == n  # every query is somewhere
        assert t.values(t.other, "queries", 1)[0] == n - 8
        assert len(t.cand) <= 1024
    assert s.memory_bytes() == mem


def test_heavy_hitter_replaces_the_weakest_tracked_key():
    s = SeriesStore(step=1, span=100, max_keys=2)
    for i in range(30):
        ts = i + 0.5
        s.observe_query(ts, b"a", "a.com", 1, 1, 1)
        s.observe_query(ts, b"b", "b.com", 1, 1, 1)
        if i >= 5:
            for j in range(20):
                s.observe_query(ts, b"heavy", "heavy.com", j, 1, 1)
    s.flush()
    t = s.tables["client"]
    assert b"heavy" in t.slot_of and len(t) == 2
    assert t.demoted >= 1
    # its history starts when it is tracked; it was in "other" before
    assert t.history_len(t.slot_of[b"heavy"]) < 30
    # the replaced key's history went to "other": its total over the run is every query
    # but the two tracked keys'
    total = sum(float(t.values(sl, "queries", 100).sum()) for sl, _ in t.rows())
    assert total == 30 * 2 + 25 * 20
    assert len({b"a", b"b"} - set(t.slot_of)) == 1
    # before "heavy" came, "other" holds exactly the replaced key's one query per step
    assert t.values(t.other, "queries", 100)[:5].tolist() == [1.0] * 5


# --- monitor -----------------------------------------------------------------------------------
class Raised:
    def __init__(self):
        self.calls = []

    def __call__(self, *a, **k):
        self.calls.append((a, k))


def feed_steps(m: SeriesMonitor, counts, client=b"\xc0\x00\x02\x07", domain="ex.com"):
    for step, n in enumerate(counts):
        for i in range(n):
            ts = step * 60 + 1 + i * (50.0 / max(n, 1))
            m.observe_query(ts, client, domain, hash((step, i)), 60, 1 if i % 3 else 28)
            m.observe_response(ts + 0.01, client, domain, 120, 0)


def test_monitor_alerts_on_a_step_up_and_not_on_a_steady_series():
    r = Raised()
    m = SeriesMonitor(raise_fn=r)
    rng = np.random.default_rng(1)
    feed_steps(m, [int(v) for v in rng.normal(300, 15, 20)] + [300])
    assert r.calls == []
    feed_steps_from = 21
    counts = [int(v) for v in rng.normal(300, 15, 20)] + [1500, 1500, 300]
    for step, n in enumerate(counts, start=feed_steps_from):
        for i in range(n):
            ts = step * 60 + 1 + i * (50.0 / n)
            m.observe_query(ts, b"\xc0\x00\x02\x07", "ex.com", hash((step, i)), 60,
                            1 if i % 3 else 28)
    assert r.calls, "step-up not reported"
    (scope, ident, stats, hits, ts, client, server, domain, st, samples), kw = r.calls[0]
    assert kw == {"event_type": EVENT_VOLUME}
    assert {scope for (scope, *_), _ in r.calls} == {"client", "domain"}
    assert any(c[0][7] == "ex.com" for c in r.calls)
    cl = next(c for c in r.calls if c[0][0] == "client")[0]
    assert cl[5] == b"\xc0\x00\x02\x07" and cl[7] is None and cl[6] == b""
    assert cl[1] == ("v", "c", b"\xc0\x00\x02\x07")
    st = cl[2]
    assert st["series"] == "client:192.0.2.7" and "queries" in st["metrics"]
    assert st["last_points"]["queries"][-1] == 1500
    assert all(h[0].startswith("series:") for h in cl[3])
    assert len(cl[3]) >= m.cfg.consensus
    json.dumps(st)


def test_tick_closes_steps_without_packets():
    r = Raised()
    m = SeriesMonitor(raise_fn=r)
    feed_steps(m, [300] * 20)
    m.tick(19 * 60 + 30.0)  # inside the last step: nothing to close
    assert m.store.cur_step == 19
    m.tick(25 * 60.0)
    assert m.store.cur_step == 25
    t = m.store.tables["client"]
    assert t.values(t.slot_of[b"\xc0\x00\x02\x07"], "queries", 6).tolist() == [300] + [0] * 5


def test_no_alert_below_the_volume_floor_or_without_history():
    r = Raised()
    m = SeriesMonitor(raise_fn=r)
    feed_steps(m, [2] * 30 + [60, 60])  # 30× up, but 60 queries/min is under the floor
    assert r.calls == []
    m = SeriesMonitor(raise_fn=r)
    feed_steps(m, [300] * (det.MIN_HISTORY - 1) + [3000, 300])  # too little history
    assert r.calls == []
    m = SeriesMonitor(raise_fn=r, detect=False)
    feed_steps(m, [300] * 20 + [3000, 300])
    assert r.calls == []


def test_chi2_alerts_on_a_new_query_type_channel():
    r = Raised()
    m = SeriesMonitor(raise_fn=r)
    c, d = b"\x0a\0\0\x05", "ex.com"
    for step in range(25):
        txt = step == 23
        for i in range(200):
            m.observe_query(step * 60 + 1 + i * 0.2, c, d, hash((step, i)), 60,
                            16 if txt else (1 if i % 2 else 28))
    assert r.calls
    found = [t["test"] for call in r.calls for t in call[0][2]["tests"]]
    assert "chi2" in found
    assert r.calls[0][0][2]["last_points"]["qtypes"] == {"TXT": 200}


# --- through the pipeline ----------------------------------------------------------------------
def _frames(path: Path) -> list[tuple[float, int, bytes, int]]:
    r = CaptureReader.open(path)
    try:
        return [(ts, lt, data, wl) for ts, lt, data, wl in r]
    finally:
        r.close()


def _query_client(lt: int, data: bytes, wirelen: int) -> bytes | None:
    d = decode_frame(lt, data, wirelen, frozenset({53}))
    if d.__class__ is Datagram and d.dport == 53 and not d.tcp:
        return d.src
    return None


def test_stepped_up_client_raises_a_volume_anomaly_naming_it(make_pipe):
    """After the midpoint of a real capture, each query of its busiest client is sent k more
    times (timestamps shifted by a few ms): the client's series steps up, and the alert
    names it. Without the step-up the same stream raises no volume alert."""
    if STEPPED.exists():
        frames = _frames(STEPPED)
    elif FALLBACK.exists():
        # Too short for a baseline on its own: tile it every minute for half an hour.
        base = _frames(FALLBACK)
        t0 = base[0][0]
        frames = [(ts - t0 + 60.0 * i + 1e9, lt, d, w) for i in range(30)
                  for ts, lt, d, w in base]
    else:
        pytest.skip(f"neither {STEPPED} nor {FALLBACK} present")
    counts: dict[bytes, int] = {}
    src = []
    for _ts, lt, data, wl in frames:
        c = _query_client(lt, data, wl)
        src.append(c)
        if c is not None:
            counts[c] = counts.get(c, 0) + 1
    client = max(counts, key=counts.get)
    times = sorted(f[0] for f in frames)
    mid = times[len(times) // 2]
    stop = mid + 4 * 60.0  # a few steps past the step-up are enough (and keep it fast)
    k = 3

    def run(step_up: bool) -> list[dict]:
        s = Settings()
        s.use_model = False
        pipe, alerts = make_pipe(s)
        for (ts, lt, data, wl), c in zip(frames, src, strict=True):
            if ts > stop:
                continue
            pipe.feed(ts, lt, data, wl)
            if step_up and c == client and ts > mid:
                for i in range(1, k + 1):
                    pipe.feed(ts + 0.001 * i, lt, data, wl)
        pipe.finish()
        return [a for a in alerts if a["event_type"] == EVENT_VOLUME]

    assert run(False) == []
    vol = run(True)
    assert vol, "no volume anomaly after the step-up"
    named = [a for a in vol if a["src_ip"] == ip_text(client)]
    assert named, vol
    a = named[0]
    assert a["dest_ip"] is None and a["domain"] is None and a["samples"] == []
    assert a["stats"]["series"] == f"client:{ip_text(client)}"
    assert any(d.startswith("series:") for d in a["detectors"])
    assert a["severity"] in ("low", "medium") and 0 < a["score"] <= 1
    assert set(a) >= {"timestamp", "event_type", "severity", "score", "domain", "src_ip",
                      "dest_ip", "detectors", "reasons", "stats", "samples", "source"}
    assert all(r.split(":")[0] in ("queries", "names", "bytes_up", "bytes_down", "nxdomain",
                                   "qtypes") for r in a["reasons"])
    # after the midpoint (capture time), within the steps fed
    t = datetime.strptime(a["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=UTC).timestamp()
    assert mid < t <= stop + 60


def test_volume_alerts_share_the_policy(make_pipe):
    """Suppression and the rate limit of tunnel alerts apply; the identities differ, so a
    volume anomaly never mutes a tunnel alert on the same key."""
    s = Settings()
    s.use_model = False
    pipe, alerts = make_pipe(s)
    stats = {"series": "domain:ex.com"}
    hit = [("series:mad", "low", 0.25, ["queries: x"])]
    pipe.series.raise_fn("domain", ("v", "d", "ex.com"), stats, hit, 100.0, b"", b"",
                         "ex.com", None, [], event_type=EVENT_VOLUME)
    pipe.series.raise_fn("domain", ("v", "d", "ex.com"), stats, hit, 200.0, b"", b"",
                         "ex.com", None, [], event_type=EVENT_VOLUME)
    assert len(alerts) == 1 and pipe.policy.suppressed == 1
    assert alerts[0]["event_type"] == EVENT_VOLUME and alerts[0]["dest_ip"] is None
    assert not pipe.policy.is_suppressed(("d", "ex.com"), 200.0)
    assert OTHER not in (alerts[0]["domain"],)


def test_series_off_costs_nothing(make_pipe):
    s = Settings()
    s.use_model = False
    s.series = False
    pipe, _ = make_pipe(s)
    assert pipe.series is None
    assert pipe.summary()["series"] is None


def _feed(m: SeriesMonitor, step: int, n: int, size: int, client: bytes, domains: list[str],
          qtype: int = 1, salt: int = 0) -> None:
    for i in range(n):
        ts = step * 60 + 1 + i * (50.0 / max(n, 1))
        m.observe_query(ts, client, domains[i % len(domains)], hash((salt, step, i)), size,
                        qtype)
        m.observe_response(ts + 0.01, client, domains[i % len(domains)], size + 60, 0)


def test_a_browsing_burst_after_quiet_spells_is_not_an_anomaly_but_a_channel_is():
    """Issue #12: a desktop idling at a few queries a minute (with the odd page load) then
    browsing for a few minutes (~150 short names a minute over many sites) is activity; the
    same host then sending as many long-named queries (a data channel's bytes up) is not."""
    rng = np.random.default_rng(7)
    c = b"\x0a\x4d\x01\x11"
    sites = [f"site{i}.example" for i in range(60)]
    quiet = [int(v) for v in rng.poisson(6, 40)]
    quiet[12] = quiet[27] = 60  # earlier page loads
    r = Raised()
    m = SeriesMonitor(raise_fn=r)
    for step, n in enumerate(quiet + [150, 160, 140, 5, 5]):
        _feed(m, step, n, 45, c, sites)
    assert [call[0][2]["series"] for call in r.calls] == [], r.calls
    r2 = Raised()
    m = SeriesMonitor(raise_fn=r2)
    for step, n in enumerate(quiet + [150, 160, 140, 5, 5]):
        _feed(m, step, n, 45 if n < 100 else 220, c, sites if n < 100 else ["tun.example"],
              salt=1)
    series = {call[0][2]["series"] for call in r2.calls}
    assert "client:10.77.1.17" in series, r2.calls
    assert any("bytes_up" in call[0][2]["metrics"] for call in r2.calls)
