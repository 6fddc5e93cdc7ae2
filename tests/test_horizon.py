"""Long-horizon state (dnsguard.features.horizon): what it measures, its bounds, its
checkpoint, and the beacon score. Costs well under a second."""

from __future__ import annotations

import base64
import json
import math
import random
from datetime import UTC

import pytest

from dnsguard.domain import RegisteredDomains
from dnsguard.features.horizon import RING, Horizon, beacon_score
from dnsguard.features.horizon import record_of as hz_record

CLIENT = bytes([10, 0, 0, 7])
OTHER = bytes([10, 0, 0, 8])


@pytest.fixture(scope="module")
def analyze():
    from dnsguard.features.payload import NameAnalyzer

    na = NameAnalyzer(RegisteredDomains())
    return lambda name: na.analyze(tuple(x.encode() for x in name.split(".")))


def _exfil(h: Horizon, analyze, encode, n: int, size: int, zone: str = "x.example.com",
           step: float = 60.0, t0: float = 0.0, seed: int = 1) -> int:
    rng = random.Random(seed)
    sent = 0
    for i in range(n):
        chunk = bytes(rng.randrange(256) for _ in range(size))
        h.observe_query(t0 + i * step, CLIENT, analyze(f"{encode(chunk)}.{zone}"), 1, 80, True)
        sent += size
    return sent


ENCODERS = {
    "base32": lambda b: base64.b32encode(b).decode().rstrip("=").lower(),
    "hex": lambda b: b.hex(),
    "base64": lambda b: base64.b64encode(b, altchars=b"-_").decode().rstrip("="),
}


@pytest.mark.parametrize("enc", sorted(ENCODERS))
def test_new_bytes_up_estimates_the_decoded_data(analyze, enc):
    """Entropy-weighted bytes of new names: within 25% below the data actually carried
    (never above it by more than the zone's few characters), for 20–36-byte chunks."""
    h = Horizon(tau=1e12)
    sent = _exfil(h, analyze, ENCODERS[enc], 60, 30)
    f = h.domain_features("example.com")
    assert 0.75 * sent <= f["new_bytes_up"] <= 1.1 * sent, (enc, f["new_bytes_up"], sent)
    assert f["new_names"] == 60 and f["new_encoded_share"] == 1.0


def test_repeated_names_carry_no_new_data(analyze):
    h = Horizon(tau=1e12)
    for i in range(500):
        h.observe_query(i * 30.0, CLIENT, analyze(f"host{i % 5}.example.com"), 1, 40, True)
    f = h.domain_features("example.com")
    assert f["new_names"] == 5 and f["long_queries"] == 500
    assert f["new_bytes_up"] < 10  # five short host names


def test_name_cap_bounds_the_set_and_only_over_counts(analyze):
    h = Horizon(tau=1e12, name_cap=16)
    for rnd in range(3):
        for i in range(40):
            h.observe_query(rnd * 1000 + i, CLIENT, analyze(f"n{i}.example.com"), 1, 40, True)
    r = h.domains["example.com"]
    assert len(r.names) <= 16
    assert 40 <= r.new_total <= 120  # exact would be 40; past the cap, names count again


def test_decay_and_idle_restart(analyze):
    tau = 3600.0
    h = Horizon(tau=tau, idle=86400.0)
    _exfil(h, analyze, ENCODERS["hex"], 10, 20, step=1.0)
    r = h.domains["example.com"]
    before, since = r.new, r.t_dec  # decay is applied at most every DECAY_STEP seconds
    f = h.domain_features("example.com", now=since + tau)
    assert f["new_names"] == pytest.approx(before * math.exp(-1), abs=0.01)
    # A day of silence: the key starts afresh (first_seen moves), counted.
    _exfil(h, analyze, ENCODERS["hex"], 1, 20, t0=200_000.0, seed=2)
    r = h.domains["example.com"]
    assert r.first == 200_000.0 and r.q_total == 1 and h.restarted == 2  # domain and pair


def test_least_informative_keys_leave_first(analyze):
    """A full table drops one-off lookups before the key carrying data; evictions counted;
    the table never exceeds its cap."""
    h = Horizon(tau=6 * 3600.0, max_domains=256, max_pairs=256)
    _exfil(h, analyze, ENCODERS["base32"], 30, 30, zone="t.slow-exfil.net", step=60.0)
    for i in range(5000):  # two lookups each: a pair gets a record at its second query
        for k in (0.0, 0.1):
            h.observe_query(1800.0 + i * 0.5 + k, OTHER, analyze(f"www.site{i}.com"), 1, 40,
                            True)
        assert len(h.domains) <= 256 and len(h.pairs) <= 256 and len(h.once) <= 256
    assert "slow-exfil.net" in h.domains
    assert (CLIENT, "slow-exfil.net") in h.pairs
    assert h.evicted["long_domain"] >= 5000 + 1 - 256
    assert h.evicted["long_client_domain"] >= 5000 + 1 - 256
    assert h.summary()["evicted"] == h.evicted


def test_checkpoint_round_trip(analyze):
    h = Horizon(tau=6 * 3600.0)
    _exfil(h, analyze, ENCODERS["base64"], 40, 30, zone="a.cdn-sync.org")
    h.observe_response(2400.0, CLIENT, "cdn-sync.org", 120, True)
    state = json.loads(json.dumps(h.to_state()))  # what the daemon writes
    g = Horizon(tau=6 * 3600.0)
    assert g.restore(state) == 2
    for fn, key in ((Horizon.domain_features, "cdn-sync.org"),
                    (Horizon.pair_features, (CLIENT, "cdn-sync.org"))):
        assert fn(g, key, 3000.0) == fn(h, key, 3000.0)
    assert g.moved(g.domains["cdn-sync.org"]) == h.moved(h.domains["cdn-sync.org"])
    # The clock goes on: a query after the restore extends the same key.
    g.observe_query(3000.0, CLIENT, analyze("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.a.cdn-sync.org"),
                    1, 80, True)
    assert g.domains["cdn-sync.org"].first == 0.0 and g.domains["cdn-sync.org"].q_total == 41


@pytest.mark.parametrize("bad", [None, {}, {"format": "x"},
                                 {"format": "dnsguard-horizon-1", "domains": {"a.com": [1]}},
                                 {"format": "dnsguard-horizon-1", "pairs": [["zz", "a", []]]}])
def test_restore_refuses_what_it_did_not_write(bad):
    h = Horizon()
    with pytest.raises(ValueError):
        h.restore(bad)
    assert len(h) == 0


def test_restore_keeps_the_most_informative_when_caps_shrank(analyze):
    h = Horizon(tau=1e12)
    _exfil(h, analyze, ENCODERS["hex"], 30, 24, zone="q.exfil-zone.net")
    for i in range(100):
        h.observe_query(2000.0 + i, OTHER, analyze(f"www.site{i}.com"), 1, 40, True)
    g = Horizon(tau=1e12, max_domains=20, max_pairs=20)
    g.restore(h.to_state())
    assert len(g.domains) <= 20 and "exfil-zone.net" in g.domains


def test_beacon_score_follows_rita():
    """RITA's six scores: a regular sleeper is near 1; Poisson arrivals and bursts are not."""
    rng = random.Random(3)
    jitter = [round(60 * rng.uniform(0.85, 1.15)) for _ in range(RING)]
    s = beacon_score(jitter, [74] * RING, 200, 200 * 60.0)
    assert s["beacon_score"] >= 0.9 and s["interval_median"] in range(55, 66)
    poisson = [round(rng.expovariate(1 / 60)) for _ in range(RING)]
    sizes = [rng.randrange(40, 200) for _ in range(RING)]
    assert beacon_score(poisson, sizes, 200, 200 * 60.0)["beacon_score"] < 0.7
    # Bowley's skew is 0 when Q2 equals Q1 (RITA: unreliable there), not a division by 0.
    s = beacon_score([10, 10, 10, 50], [70, 70, 70, 70], 5, 80.0)
    assert s["interval_skew"] == 0.0
    assert beacon_score([60], [70], 2, 60.0)["beacon_score"] == 0.0  # too few intervals


def test_interval_jitter_tells_poisson_from_a_sleeper():
    """RITA's MADM/30 s calls any seconds-scale process regular: Poisson arrivals with a
    14 s mean (a mail server's DNSBL lookups, one per inbound message) score a timing score
    near the beacon rule's bar. The unit-free jitter (MADM / median) does not depend on the
    rate: ~0.69 for Poisson (over the 64-interval ring: 99.5% of draws above 0.45), under
    0.35 for a sleeper with 50% jitter (at 80%: about half)."""
    rng = random.Random(5)
    for mean in (14, 60, 600):
        poisson = [round(rng.expovariate(1 / mean)) for _ in range(RING)]
        assert 0.4 <= beacon_score(poisson, [60] * RING, RING, sum(poisson))[
            "interval_jitter"] <= 0.9, mean
        # Cobalt Strike-style jitter: the sleep cut by up to 50% at random
        cut = [round(mean * (1 - 0.5 * rng.random())) for _ in range(RING)]
        assert beacon_score(cut, [60] * RING, RING, sum(cut))["interval_jitter"] <= 0.35, mean
    assert beacon_score([0] * 10, [60] * 10, 10, 1.0)["interval_jitter"] == 1.0  # no median


def test_pair_features_use_the_ring_of_intervals(analyze):
    h = Horizon(tau=1e12)
    for i in range(200):  # more check-ins than the ring holds
        h.observe_query(i * 60.0, CLIENT, analyze(f"s{i}.c2.example.net"), 16, 70, True)
    f = h.pair_features((CLIENT, "example.net"))
    assert f["checkins"] == 200 and f["beacon_score"] >= 0.95 and f["interval_median"] == 60
    assert f["new_name_share"] == 1.0


def test_time_going_backwards_or_huge_gaps_are_clamped(analyze):
    """Merged captures and reordered packets: intervals stay in range, no exception."""
    h = Horizon(tau=1e12, idle=1e12)
    for ts in (1000.0, 10.0, 500_000.0, 499_999.0, 2e6, 0.0):
        h.observe_query(ts, CLIENT, analyze(f"n{int(ts)}.example.com"), 1, 70000, True)
    p = h.pairs[(CLIENT, "example.com")]
    n = min(p.n_ivals, RING)
    assert max(p.ivals[:n]) == 65535 and min(p.ivals[:n]) == 0
    assert max(p.ivals[RING:RING + n]) == 65535
    assert h.pair_features((CLIENT, "example.com"))["checkins"] == 6


def test_vantage_keeps_resolver_queries_out_of_pairs(analyze):
    h = Horizon()
    for ts in (0.0, 1.0):  # a domain is recorded from its second query (the doorkeeper)
        h.observe_query(ts, CLIENT, analyze("a.example.com"), 1, 40, False)
    assert "example.com" in h.domains and not h.pairs and not h.once


def _slow_frames(start: int, n: int, seed: int, zone: str = "up.slow-sync.net"):
    from conftest import dns_query, eth, udp4

    rng = random.Random(seed)
    for i in range(start, start + n):
        chunk = bytes(rng.randrange(256) for _ in range(30))
        name = f"{ENCODERS['base32'](chunk)}.{i:x}.{zone}"
        jitter = rng.uniform(-40, 40) if i else 0.0  # 35–115 s apart: no beacon
        yield 1_700_000_000.0 + i * 75.0 + jitter, eth(udp4(dns_query(name, qid=i)))


def _pipe(tmp_path, alerts: list):
    from conftest import RULES_DIR
    from dnsguard.detect.rules import load_dir
    from dnsguard.pipeline import Pipeline
    from dnsguard.settings import Settings

    s = Settings(use_model=False, series=False, long_state=tmp_path / "long.json.gz")
    return Pipeline(s, load_dir(RULES_DIR), alerts.append)


def test_restart_does_not_reset_the_clock(tmp_path):
    """Half of a slow exfiltration, a restart (checkpoint, new pipeline that restores it),
    the other half: the alert counts both halves and says since when. Without the
    checkpoint, the second half alone stays below the rule."""
    alerts: list = []
    p = _pipe(tmp_path, alerts)
    for ts, fr in _slow_frames(0, 14, 1):
        p.feed(ts, 1, fr, len(fr))
    p.close()  # checkpoints
    assert (tmp_path / "long.json.gz").exists() and not alerts
    p2 = _pipe(tmp_path, alerts)
    for ts, fr in _slow_frames(14, 14, 2):
        p2.feed(ts, 1, fr, len(fr))
    long = [a for a in alerts if a["scope"] == "long_domain"]
    assert long, alerts
    a = long[0]
    assert a["domain"] == "slow-sync.net" or a["domain"].endswith(".slow-sync.net")
    assert a["first_seen"] == "2023-11-14T22:13:20.000000Z"  # the first query's time
    assert a["stats"]["queries"] > 14 and a["bytes_up"] >= 300  # both halves
    # The control: no checkpoint, no memory of the first half.
    (tmp_path / "long.json.gz").unlink()
    alerts.clear()
    p3 = _pipe(tmp_path, alerts)
    for ts, fr in _slow_frames(14, 14, 2):
        p3.feed(ts, 1, fr, len(fr))
    assert not [a for a in alerts if a["scope"] == "long_domain"]


def test_a_damaged_checkpoint_is_reported_and_replaced(tmp_path, caplog):
    (tmp_path / "long.json.gz").write_bytes(b"\x1f\x8b garbage")
    alerts: list = []
    p = _pipe(tmp_path, alerts)
    assert "cannot restore the long-horizon state" in caplog.text
    assert len(p.horizon) == 0
    for ts, fr in _slow_frames(0, 3, 1):
        p.feed(ts, 1, fr, len(fr))
    p.checkpoint()
    g = Horizon()
    from dnsguard.features.horizon import load

    assert load(g, tmp_path / "long.json.gz") == 2


SLOW = ("slow_exfil_b32.pcap", "slow_exfil_hex.pcap", "slow_exfil_b64.pcap", "slow_beacon.pcap",
        "slow_exfil_multi.pcap")
LONG_RULES = {"slow-encoded-exfil": "long_domain", "slow-high-entropy-names": "long_domain",
              "slow-multi-host-exfil": "long_domain", "cache-busting-beacon": "long_client_domain"}


def test_lab_slow_captures_detected_within_the_hour():
    """The lab's two-hour captures (pcaps/slow/, made by lab/slow_exfil.py through Unbound, beside
    a browsing client): each tunnel found within 60 minutes of its first query by a
    long-horizon rule, its zone named, nothing else alerting. ~1 s. (The long-horizon model,
    trained on these captures, is off: tests/test_longmodel.py checks it.)"""
    from conftest import ROOT, RULES_DIR
    from dnsguard.detect.rules import load_dir
    from dnsguard.evaluate import evaluate, load_truth
    from dnsguard.settings import Settings

    pc = ROOT / "pcaps" / "slow"
    truth = load_truth(pc / "truth.yaml")
    res = evaluate([pc / f for f in SLOW], truth, Settings(use_long_model=False),
                   load_dir(RULES_DIR))
    assert len(res["captures"]) == len(SLOW)
    for r in res["captures"]:
        (t,) = r["tunnels"]
        assert t["hit"], r
        assert t["time_to_detect"] <= 3600, r
        assert set(LONG_RULES) & set(t["detectors"]), r
        assert not r["false_positive_keys"], r
    # The multi-host trickle: the domain across its five hosts, none of them alone.
    multi = next(r for r in res["captures"] if r["file"] == "slow_exfil_multi.pcap")
    assert multi["tunnels"][0]["detectors"] == ["slow-multi-host-exfil"], multi


def _slow_alerts(name: str, workers: int = 1) -> tuple[list, list]:
    """The alerts of a slow capture (rules only), and its queries ``(ts, client, name)``."""
    from test_workers import frames

    from conftest import ROOT, RULES_DIR
    from dnsguard.detect.rules import load_dir
    from dnsguard.pipeline import Pipeline
    from dnsguard.settings import Settings
    from dnsguard.workers import ShardedPipelines

    alerts: list = []
    s = Settings(use_model=False)
    rs = load_dir(RULES_DIR)
    p = Pipeline(s, rs, alerts.append) if workers == 1 else ShardedPipelines(
        s, rs, alerts.append, workers)
    queries: list = []
    (p.judge if workers > 1 else p).measure.on_query = (
        lambda ts, c, _sv, q: queries.append((ts, c, q)))
    for f in frames(ROOT / "pcaps" / "slow" / name):
        p.feed(*f)
    p.finish()
    return alerts, queries


@pytest.mark.parametrize("name", SLOW)
def test_slow_alerts_say_what_moved_and_since_when(name):
    """Every long-horizon alert kind (the exfiltrations', the multi-host one's, the
    beacon's) says since when (``first_seen``: the key's first query, an hour or more before
    the alert is possible), how long (``span``), how many queries, and the bytes up and down
    since then; for a domain, the clients that sent its new names. ~1 s each."""
    from datetime import datetime

    def t(iso: str) -> float:
        return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC).timestamp()

    alerts, queries = _slow_alerts(name)
    long = [a for a in alerts if a["scope"].startswith("long_")]
    assert long and len(long) == len(alerts), alerts
    for a in long:
        assert LONG_RULES[a["detectors"][0]] == a["scope"], a
        rd = ".".join(a["domain"].split(".")[-2:])
        mine = [q for q in queries if q[2].endswith("." + rd)
                and (a["scope"] == "long_domain" or q[1] == a["src_ip"])]
        first, last = min(q[0] for q in mine), max(q[0] for q in mine)
        assert abs(t(a["first_seen"]) - first) < 1e-3, (a, first)
        assert t(a["first_seen"]) <= t(a["last_seen"]) == t(a["timestamp"]) <= last + 1e-3
        st = a["stats"]
        assert st["span"] == pytest.approx(t(a["last_seen"]) - t(a["first_seen"]), abs=1e-3)
        assert st["span"] >= 600 and st["queries"] >= 16
        assert st["queries"] == len([q for q in mine if q[0] <= t(a["last_seen"]) + 1e-6])
        if name == "slow_beacon.pcap":
            # Check-ins, no data: a session id and a counter (12 characters) weigh about 7
            # bytes a name, a quarter of a data chunk; answered with no records.
            assert 0 < a["bytes_up"] < 10 * st["queries"] and a["bytes_down"] == 0, a
        else:  # Base32/hex/Base64 chunks of 18-30 bytes: within 25% below what was sent
            assert a["bytes_down"] > 0  # the A records that answered them
            assert 15 * st["new_names_total"] <= a["bytes_up"] <= 30 * st["new_names_total"]
        if a["scope"] == "long_domain":
            assert sorted(st["clients"]) == sorted({q[1] for q in mine if q[0] <= t(
                a["last_seen"]) + 1e-6}), a


def test_multi_host_trickle_is_merged_across_workers():
    """The multi-host capture split over 4 workers as the kernel would split it: its hosts
    land on three of them, the judge's domain measurement holds all of them, and the
    alerts equal one process's. ~2 s."""
    one, _ = _slow_alerts("slow_exfil_multi.pcap")
    four, _ = _slow_alerts("slow_exfil_multi.pcap", workers=4)
    assert one and [a["detectors"] for a in one] == [["slow-multi-host-exfil"]] * len(one)

    def strip(a: dict) -> dict:
        return {k: v for k, v in a.items() if k != "alert_id"}
    assert [strip(a) for a in four] == [strip(a) for a in one]
    hosts = one[0]["stats"]["clients"]
    assert len(hosts) == 5
    # Their queries (to the lab's resolver, 10.77.0.1) reach three of the four workers.
    import ipaddress

    from dnsguard.capture.fanout import fanout_index
    res = ipaddress.ip_address("10.77.0.1").packed
    assert len({fanout_index(ipaddress.ip_address(h).packed, res, 4) for h in hosts}) == 3


def test_doorkeeper_records_what_a_record_from_the_first_query_would(analyze):
    """A domain's first query is held, not recorded (the doorkeeper); its second replays it.
    Against a horizon without the doorkeeper, on queries and answers to 400 domains (1-6
    queries each, gaps past the decay step and past the idle restart, several clients, carrier
    types, service and UUID names): the same due flags on every query and, for every domain
    queried twice or more, the same record, features and pair; domains seen once are only
    held. Held domains are bounded (two generations of max_domains / 2)."""
    rng = random.Random(4)
    door, ref = Horizon(tau=3600.0, idle=5000.0), Horizon(tau=3600.0, idle=5000.0,
                                                            doorkeeper=False)
    assert door.door and not ref.door
    events = []
    for d in range(400):
        t = rng.uniform(0, 20_000)
        for _ in range(rng.choice((1, 1, 1, 2, 3, 6))):
            t += rng.choice((0.01, 3.0, 30.0, 600.0, 6000.0))
            label = rng.choice((f"h{rng.randrange(3)}", "_dmarc",
                                "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
                                base64.b32encode(rng.randbytes(20)).decode().lower()))
            events.append((t, 0, rng.choice((CLIENT, OTHER)), f"{label}.d{d}.net",
                           rng.choice((1, 1, 16, 28, 10))))
            if rng.random() < 0.7:
                events.append((t + 0.001, 1, CLIENT, f"d{d}.net", rng.randrange(300)))
    events.sort()
    for ts, kind, client, name, x in events:
        if kind == 0:
            nf = analyze(name)
            assert door.observe_query(ts, client, nf, x, 60, True) == \
                ref.observe_query(ts, client, nf, x, 60, True), (ts, name)
        else:
            door.observe_response(ts, client, name, x, True)
            ref.observe_response(ts, client, name, x, True)
    once = 0
    sd, sr = door.to_state(), ref.to_state()
    for rd, r in ref.domains.items():
        if r.q_total < 2 and rd not in door.domains:
            once += 1
            continue
        assert sd["domains"][rd] == sr["domains"][rd], rd
        assert door.domain_features(rd) == ref.domain_features(rd)
    assert once > 100 and door.summary()["held_domains"] >= once
    assert sd["pairs"] == sr["pairs"]
    assert door.restarted == ref.restarted and ref.restarted > 0
    small = Horizon(max_domains=64)
    for i in range(1000):
        small.observe_query(float(i), CLIENT, analyze(f"a.once{i}.org"), 1, 40, True)
    assert small.summary()["held_domains"] <= 64 and not small.domains
    assert small.summary()["forgotten_domains"] >= 1000 - 64


def test_an_idle_restart_is_a_new_record(analyze):
    """A key idle past ``idle`` starts afresh in place (``LongStats.restart``: the record
    and its name set and lists reused): from then on it is what a horizon that never saw the
    earlier traffic records (domains: the same records, features and due flags; the pair:
    the same as a new record fed the same queries), on names, clients, samples, answers."""
    rng = random.Random(9)

    def day(t0: float) -> list:
        ev = []
        for i in range(300):
            t = t0 + i * rng.choice((1.0, 15.0, 40.0))
            d = rng.randrange(12)
            label = rng.choice((f"w{rng.randrange(4)}", "_dmarc",
                                base64.b32encode(rng.randbytes(15)).decode().lower()))
            ev.append((t, rng.choice((CLIENT, OTHER)), f"{label}.d{d}.org",
                       rng.choice((1, 16, 28)), f"d{d}.org", rng.randrange(200)))
        return ev

    first, second = day(0.0), day(100_000.0)
    used, fresh = Horizon(tau=3600.0, idle=86400.0), Horizon(tau=3600.0, idle=86400.0)
    for ts, client, name, qt, rd, down in first:
        used.observe_query(ts, client, analyze(name), qt, 60, True)
        used.observe_response(ts + 0.01, client, rd, down, True)
    assert all(r.names for r in used.domains.values())  # sets and lists to be reused
    for ts, client, name, qt, rd, down in second:
        nf = analyze(name)
        assert used.observe_query(ts, client, nf, qt, 60, True) == \
            fresh.observe_query(ts, client, nf, qt, 60, True), (ts, name)
        used.observe_response(ts + 0.01, client, rd, down, True)
        fresh.observe_response(ts + 0.01, client, rd, down, True)
    assert used.restarted >= 12
    su, sf = used.to_state(), fresh.to_state()
    assert su["domains"] == sf["domains"]
    for rd in fresh.domains:
        assert used.domain_features(rd) == fresh.domain_features(rd)
    # A pair's record (with an interval ring), restarted in place, against a new record:
    # the same checkpoint record.
    from dnsguard.features.horizon import LongStats

    p = used.pairs[(CLIENT, "d0.org")]
    assert p.ivals is not None and p.n_ivals
    p.restart(5.0)
    assert hz_record(p) == hz_record(LongStats(5.0))
    # A domain's record (a name set, clients, samples) likewise, then names after it.
    p = used.domains["d0.org"]
    assert p.names and p.clients and p.samples
    p.restart(5.0)
    q = LongStats(5.0)
    assert hz_record(p) == hz_record(q)
    hashes = [rng.randrange(40) for _ in range(400)]
    seen = []
    for r in (p, q):
        out = []
        for h in hashes:
            out.append(r.is_new(h, 16))
            r.q_total += 1
        seen.append(out)
    assert seen[0] == seen[1] and 16 < sum(seen[0]) < 400
