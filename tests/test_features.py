"""Payload features of names and traffic features of windows."""

from __future__ import annotations

import math

import pytest

from dnsguard.domain import RegisteredDomains
from dnsguard.features import window as win
from dnsguard.features.payload import NameAnalyzer, entropy
from dnsguard.features.sketch import DistinctCounter

NA = NameAnalyzer(RegisteredDomains())


def feats(name: str | bytes):
    if isinstance(name, str):
        name = name.encode()
    return NA.analyze(tuple(name.split(b".")))


def test_entropy_matches_shannon():
    assert entropy(b"") == 0 and entropy(b"aaaa") == 0
    assert entropy(b"abcd") == pytest.approx(2.0)
    s = bytes(range(256))
    assert entropy(s) == pytest.approx(8.0)
    expected = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    assert entropy(b"aab") == pytest.approx(expected)


def test_subdomain_part_is_left_of_registered_domain():
    f = feats("www.example.co.uk")
    assert f.regdomain == "example.co.uk" and f.sub_len == 3 and f.sub_labels == 1
    f = feats("example.co.uk")
    assert f.sub_len == 0 and f.max_label == 0
    f = feats("a.b.user.blogspot.com")  # PSL private section
    assert f.regdomain == "user.blogspot.com"


def test_alphabet_fits():
    hexname = feats("0123456789abcdef0123456789abcdef.t.example.com")
    # one MD5-length digest per name is an identifier as often as data (ad frames, hashes):
    # not "encoded"; hex split over several labels is a stream
    assert hexname.hex_fit > 0.9 and not hexname.encoded and hexname.id_shape == 2
    stream = feats("0123456789abcdef0123456789abcdef.0123456789abcdef01234567.t.example.com")
    assert stream.encoded and stream.id_shape == 0
    b64 = feats("aGVsbG8gd29ybGQgdGhpcyBpcyBhIHRlc3Q9PQ.example.com")
    assert b64.b64_fit == 1.0 and b64.upper_share > 0
    plain = feats("mail.example.com")
    assert not plain.encoded and plain.digit_share == 0


def test_identifier_service_and_address_shapes():
    u = feats("f81d4fae-7dec-41d0-a765-00a0c91e6bf6.events.vendor.com")
    assert u.id_shape == 1 and not u.encoded
    assert feats("android-5165a91db7f92d52.corp.example").id_shape == 2
    assert feats("sep00155d0a1b2c.ad.example").id_shape == 2
    dkim = feats("ov5dtimlwgnmp2g34j7vjodzgy2maqyt._domainkey.amazonses.com")
    assert dkim.service and not dkim.encoded
    assert feats("_netblocks2.google.com").service
    assert not feats("_aGVsbG8gd29ybGQgdGhpcyBpcyBh.t.example.com").service
    for n in ("24-48-150-22.city.isp.net", "c-73-22-1-5.hsd1.ca.comcast.net",
              "22.150.48.24.static.isp.net", "ip-10-1-2-3.ec2.internal"):
        assert feats(n).addr, n
    assert not feats("build-2024-11-03.ci.example").addr
    assert not feats("v1-256-300-4.example").addr  # 256, 300 are no octets
    # a base32 label is data, not an id
    assert feats("mzxw6ytboi4dsnzqgezdgnbvgy3tqojq.tunnel.example").encoded


@pytest.mark.parametrize("name", [
    # AWS interface endpoints, regional and zonal; EC2 resource names; a Kubernetes pod
    # (<deployment>-<replica-set hash>-<5>); AKS (formats: payload._RESOURCE_*)
    "vpce-0a1b2c3d4e5f67890-ab12cd34.secretsmanager.us-east-1.vpce.amazonaws.com",
    "vpce-0a1b2c3d4e5f67890-ab12cd34-ap-southeast-2a.logs.ap-southeast-2.vpce.amazonaws.com",
    "i-0123456789abcdef0.us-west-2.compute.internal",
    "kube-prometheus-stack-operator-7d9f8b6c5d-x2k4p.monitoring.svc.cluster.local",
    "payments-api-dns-4f1c2a9e.hcp.westeurope.azmk8s.io"])
def test_cloud_resource_ids_are_identifiers_not_data(name):
    f = feats(name)
    assert f.id_shape == 3 and not f.encoded, f.as_dict()


@pytest.mark.parametrize("label", [
    "mfrggzdfmztwq2lkn-nwg23tpobyxe43u-on2xmzlbmjygk3tb-mzxw6ytb",  # Base32, fields of 17
    "3f9a0c7e41b2d8e6-5a7c9e1f3b2d4a6c-8e0f2a4c6e8a0b2d-4f6a8c0e",  # hex, fields of 16
    "mfrggzdf-mztwq2lk-nnwg23tp-obyxe43u-on2xmzlb-mjygk3tb",  # Base32, fields of 8
    "q2hhbgxlbmdl-lwrhdgetzm9y-lwh5cghlbi1m-awvszhm"])  # Base64url, fields of 12
def test_data_cut_into_hyphen_fields_is_encoded(label):
    f = feats(f"{label}.api.eu-west-1.c2cloud.example")
    assert f.encoded and f.id_shape == 0, f.as_dict()


def test_words_are_not_encoded_but_random_labels_are():
    assert not feats("aks-prod-southeastasia.access-point.cloudmessaging.edge.microsoft.com"
                     ).encoded
    assert feats("mzxw6ytboi4dsnzqgezdgnbvgy3tqojq.tunnel.example").encoded


@pytest.mark.parametrize("label", ["production-europe-west-storage",
                                   "mzxw6ytboi4dsnzqgezdgnbvgy3tqojq",
                                   "settings-win-data-microsoft-telemetry"])
def test_encoded_ignores_case_randomisation(label):
    # DNS 0x20: a resolver flips letter case at random; the verdict must not change with it.
    flipped = "".join(c.upper() if i % 2 else c for i, c in enumerate(label))
    assert feats(f"{flipped}.example.com").encoded == feats(f"{label}.example.com").encoded


def test_raw_octets_are_kept_and_escaped():
    f = NA.analyze((b"ab\x00\xff.cd\x80\x81\x82\x83", b"example", b"com"))
    assert f.non_ldh >= 6 and f.nonprint >= 5 and f.encoded
    assert "\\000" in f.name and "\\255" in f.name and "\\." in f.name


def test_unknown_tld_label_can_carry_the_data():
    f = feats("dnscat.46f4017cfbf4e8921a850f00022eb7ff05")
    assert not f.tld_known and f.reg_encoded
    assert feats("printer.lan").reg_encoded is False


def test_distinct_counter_switches_to_sketch_and_stays_close():
    d = DistinctCounter(cap=16)
    for i in range(10):
        d.add(f"n{i}")
        d.add(f"n{i}")
    assert d.exact and len(d) == 10
    for i in range(5000):
        d.add(f"m{i}")
    assert not d.exact and abs(len(d) - 5010) / 5010 < 0.3  # ±4.6 standard errors


def _query(st, name: str, qtype: int = 1, client: bytes = b"\x0a\x00\x00\x01"):
    nf = feats(name)
    win.note_query(st, nf, qtype, client, b"\x0a\x00\x00\x35")
    return nf


def test_window_features_accumulate_per_key():
    t = win.WindowTable("domain", window=60, max_keys=10)
    st, closed = t.get("example.com", 100.0)
    assert closed is None
    for i in range(10):
        _query(st, f"{'ab' * 16}{i:02d}.t.example.com", qtype=16)
    win.note_response(st, 200, 0)
    win.note_response(st, 0, 3)
    f = win.features(st, "domain")
    assert f["queries"] == 10 and f["distinct_names"] == 10
    assert f["txt_share"] == 1.0 and f["carrier_share"] == 1.0
    assert f["bytes_down"] == 200 and f["nxdomain_share"] == 0.5
    assert f["mean_sub_len"] == 36  # 34-char label + ".t"
    assert st.suffix == (b"t", b"example", b"com")


def test_window_closes_after_its_length_and_returns_the_old_stats():
    t = win.WindowTable("domain", window=60, max_keys=10)
    st, _ = t.get("a.com", 0.0)
    st.queries = 5
    again, closed = t.get("a.com", 30.0)
    assert again is st and closed is None
    new, closed = t.get("a.com", 61.0)
    assert new is not st and closed is st and new.queries == 0


def test_lru_cap_evicts_and_counts():
    t = win.WindowTable("domain", window=60, max_keys=3)
    for i in range(10):
        t.get(f"d{i}.com", float(i))
    assert len(t) == 3 and t.evicted == 7
    assert list(t.keys) == ["d7.com", "d8.com", "d9.com"]


def test_client_features_count_encoded_and_unknown_tld_domains():
    st = win.KeyStats(0.0, 64)
    for i in range(30):
        nf = _query(st, f"x{i}q7Zk2mPv9LwR4tYb8NcXe3HjFg5Ds.com")
        win.note_client_domain(st, nf)
    nf = _query(st, "www.google.com")
    win.note_client_domain(st, nf)
    f = win.features(st, "client")
    assert f["distinct_domains"] == 31 and f["encoded_domains"] == 30
    assert f["encoded_domain_share"] == pytest.approx(30 / 31)


def test_pair_memory_keeps_the_pairs_first_seen_last():
    """Measurements' (client, server) -> domain memory (a dict and a ring) holds exactly
    what the OrderedDict it replaced held: the PAIR_MEMORY pairs first seen most recently,
    each with the domain it asked last (asking again does not make a pair younger); the
    client -> suspect domain memory stays least recently used first."""
    import random
    from collections import OrderedDict

    from dnsguard.features.measure import PAIR_MEMORY, Measurements, Observer
    from dnsguard.settings import Settings

    m = Measurements(Settings(series=False, long_horizon=False))
    m.attach(Observer())
    names = NameAnalyzer(RegisteredDomains(64), 64)
    nfs = [names.analyze((b"www", b"d%d" % i, b"com")) for i in range(8)]
    model: OrderedDict = OrderedDict()
    suspect: OrderedDict = OrderedDict()  # client -> domain of its last rare-type query
    rnd = random.Random(3)
    for i in range(3 * PAIR_MEMORY):
        c = rnd.randrange(2 * PAIR_MEMORY)
        client, server = c.to_bytes(4, "big"), bytes([10, 0, 0, c % 3])
        nf = rnd.choice(nfs)
        qtype = rnd.choice((1, 10, 10))  # A, or NULL (rare: the client becomes a suspect)
        m.query(float(i), nf, qtype, 40, client, server)
        model[(client, server)] = nf.regdomain
        if len(model) > PAIR_MEMORY:
            model.popitem(last=False)
        if qtype == 10:
            suspect[client] = nf.regdomain
            suspect.move_to_end(client)
            if len(suspect) > PAIR_MEMORY:
                suspect.popitem(last=False)
    assert len(model) == len(suspect) == PAIR_MEMORY  # both memories full, turning over
    assert m.pair_domain == dict(model)
    assert m.client_suspect == dict(suspect)
    assert m.suspects_lru() == list(suspect)  # the same order (least recent first)
    k = next(iter(model))
    assert m.flow_domain(k) == model[k]
    # A few suspects asking again and again (no eviction: the queue is rebuilt without its
    # stale entries), then new ones pushing them out in least-recently-used order.
    for i in range(6 * PAIR_MEMORY):
        c = rnd.randrange(8) if i < 5 * PAIR_MEMORY else 2 * PAIR_MEMORY + i
        client = c.to_bytes(4, "big")
        nf = rnd.choice(nfs)
        m.query(float(i), nf, 10, 40, client, b"\x0a\0\0\x01")
        suspect[client] = nf.regdomain
        suspect.move_to_end(client)
        if len(suspect) > PAIR_MEMORY:
            suspect.popitem(last=False)
        if i % 997 == 0 or i == 5 * PAIR_MEMORY + 3:
            assert m.suspects_lru() == list(suspect) and m.client_suspect == dict(suspect)
    assert m.suspects_lru() == list(suspect) and m.client_suspect == dict(suspect)
    assert len(m._suspect_q) <= 3 * PAIR_MEMORY + 3  # bounded


def test_take_or_hold_is_take_then_hold():
    """WindowTable.take_or_hold (a query's admission with its record at hand) leaves the
    held generations, the forgotten count and the result as take() followed, when nothing
    was held, by hold() do, also as generations turn over (hold_cap 64, 3,000 keys)."""
    import random

    a, b = (win.WindowTable("client", 60.0, 64) for _ in range(2))
    rnd = random.Random(5)
    for i in range(20_000):
        key = rnd.randrange(3000)
        rec = (float(i), None, 1, -1, b"c", b"s")
        got = a.take_or_hold(key, rec)
        want = b.take(key)
        if want is None:
            b.hold(key, rec)
        assert got is want
        assert a.held == b.held and a.held_old == b.held_old and a.forgotten == b.forgotten
    assert a.forgotten > 0
