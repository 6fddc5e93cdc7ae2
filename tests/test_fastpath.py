"""The hot path's shortcuts give what the general code gives.

- ``Pipeline.feed``'s UDP/IPv4 fast path against the general path (decode_frame + parse);
- ``Pipeline.feed_frames`` reading a pcap file's records in place against feeding them one
  by one;
- ``RegisteredDomains``' two-label shortcut against publicsuffixlist;
- ``DistinctCounter``'s own HyperLogLog registers against datasketch's.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from publicsuffixlist import PublicSuffixList

from conftest import ng_block, ng_epb, ng_idb, ng_shb, ng_spb, pcap_header, pcap_record
from dnsguard.capture.pcapfile import CaptureReader
from dnsguard.detect.rules import load_dir
from dnsguard.domain import RegisteredDomains
from dnsguard.features.namehash import hash_str
from dnsguard.features.sketch import DistinctCounter, _hash32
from dnsguard.pipeline import Pipeline
from dnsguard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PCAPS = sorted((ROOT / "pcaps").glob("*.pcap"))


def _run(path: Path, fast: bool) -> tuple[dict, list[dict]]:
    s = Settings()
    s.use_model = False
    alerts: list[dict] = []
    p = Pipeline(s, load_dir(s.rules), alerts.append)
    p.fast_path = fast  # False: every frame through decode_frame + parse
    outcomes = []
    for ts, lt, data, wirelen in CaptureReader.open(path):
        outcomes.append(p.feed(ts, lt, data, wirelen))
    p.finish()
    summary = p.summary()
    summary.pop("caches")
    summary.pop("registered_domains")  # a HyperLogLog estimate: hash salted per process
    summary["outcome_list"] = outcomes
    return summary, alerts


@pytest.mark.parametrize("path", PCAPS, ids=[p.name for p in PCAPS])
def test_fast_path_same_as_general_path(path: Path) -> None:
    fast, fast_alerts = _run(path, True)
    slow, slow_alerts = _run(path, False)
    assert fast == slow
    assert [(a["scope"], a["domain"], a["detectors"]) for a in fast_alerts] == \
        [(a["scope"], a["domain"], a["detectors"]) for a in slow_alerts]


def _variants() -> list[tuple[str, bytes]]:
    """pcaps/'s mixed capture re-written in every pcap flavour (byte order, nanoseconds,
    the modified format's longer headers), and cut inside a record."""
    frames = [(ts, data, wirelen) for ts, _, data, wirelen in
              CaptureReader.open(ROOT / "pcaps" / "mixed_iodine_and_benign.pcap")]
    out = []
    for endian in "<>":
        for kind in ("micro", "nano", "modified"):
            unit = 1e9 if kind == "nano" else 1e6
            body = b"".join(
                pcap_record(int(ts), int(round((ts - int(ts)) * unit)), d, w, endian=endian,
                            modified=kind == "modified") for ts, d, w in frames)
            out.append((f"{endian}{kind}", pcap_header(1, endian, kind == "nano",
                                                       modified=kind == "modified") + body))
    out.append(("cut", out[0][1][:-7]))
    # pcapng: each byte order; two interfaces (Ethernet in microseconds, raw IP in
    # nanoseconds with a time offset) alternating, so runs end at every block, with simple
    # packet blocks and statistics blocks between runs; a second section in the other byte
    # order; cut inside a block; a broken block length after 300 packets.
    for endian in "<>":
        body = ng_shb(endian) + ng_idb(1, endian=endian)
        body += b"".join(ng_epb(0, int(round(ts * 1e6)), d, w, endian) for ts, d, w in frames)
        out.append((f"ng{endian}", body))
    two = ng_shb() + ng_idb(1) + ng_idb(101, tsresol=9, tsoffset=-5)
    for i, (ts, d, w) in enumerate(frames):
        if i % 3 == 2:
            two += ng_epb(1, int(round((ts + 5) * 1e9)), d[14:], w - 14)
        else:
            two += ng_epb(0, int(round(ts * 1e6)), d, w)
        if i % 50 == 49:
            two += ng_block(5, b"\x00" * 12) + ng_spb(d)
    out.append(("ng-mixed", two))
    mixed_be = ng_shb() + ng_idb(1)
    for i, (ts, d, w) in enumerate(frames):
        if i == 150:
            mixed_be += ng_shb(">") + ng_idb(1, endian=">")
        e = ">" if i >= 150 else "<"
        mixed_be += ng_epb(0, int(round(ts * 1e6)), d, w, e)
    out.append(("ng-sections", mixed_be))
    out.append(("ng-cut", out[-4][1][:-9]))
    ng = out[-5][1]
    at = len(ng_shb() + ng_idb(1)) + sum(len(ng_epb(0, 0, d, w)) for _, d, w in frames[:300])
    out.append(("ng-bad-length", ng[:at + 4] + b"\x07\x00\x00\x00" + ng[at + 8:]))
    return out


@pytest.mark.parametrize("name,blob", _variants(), ids=[n for n, _ in _variants()])
def test_feed_frames_reads_records_in_place_as_feed_does(name: str, blob: bytes) -> None:
    def run(in_place: bool):
        s = Settings()
        s.use_model = False
        alerts: list[dict] = []
        p = Pipeline(s, load_dir(s.rules), alerts.append)
        r = CaptureReader(io.BytesIO(blob), name)
        if in_place:
            n = p.feed_frames(r)
        else:
            n = 0
            for ts, lt, data, wirelen in r:
                p.feed(ts, lt, data, wirelen)
                n += 1
        p.finish()
        summary = p.summary()
        summary.pop("registered_domains")  # a HyperLogLog estimate: hash salted per process
        return n, summary, alerts, (r.stats, r.offset)

    assert run(True) == run(False)
    assert run(True)[0] >= 300


def test_fast_path_odd_messages() -> None:
    """Frames built to hit each fallback: compressed question, uncompressed owners, OPT,
    extended rcode, truncation, a non-DNS payload."""
    import struct

    def frame(dns: bytes) -> bytes:
        udp = struct.pack("!HHHH", 40000, 53, 8 + len(dns), 0) + dns
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         b"\x0a\0\0\1", b"\x0a\0\0\2") + udp
        return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip

    q = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
    ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04"
    own = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04"
    opt = b"\x00\x00\x29\x10\x00\x01\x00\x00\x00\x00\x00"  # extended rcode 1
    bad_opt = b"\xc0\x0c\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"
    msgs = [
        struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + q,
        struct.pack("!6H", 1, 0x8180, 1, 1, 0, 0) + q + ans,
        struct.pack("!6H", 1, 0x8180, 1, 1, 0, 0) + q + own,
        struct.pack("!6H", 1, 0x8183, 1, 0, 0, 1) + q + opt,
        struct.pack("!6H", 1, 0x8180, 1, 0, 0, 1) + q + bad_opt,
        struct.pack("!6H", 1, 0x8180, 1, 2, 0, 0) + q + ans,  # second answer missing
        struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + q[:-3],  # question cut
        struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer
        struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\x41" + b"x" * 65 + b"\x00\x00\x01\x00\x01",
        struct.pack("!6H", 1, 0x7800, 1, 0, 0, 0) + q,  # opcode 15: not DNS
        struct.pack("!6H", 1, 0x0100, 2, 0, 0, 0) + q + q,
        struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01",  # the root
    ]
    for i, m in enumerate(msgs):
        res = []
        for fast in (True, False):
            s = Settings()
            s.use_model = False
            p = Pipeline(s, load_dir(s.rules), lambda a: None)
            p.fast_path = fast
            o = p.feed(1.0, 1, frame(m), 0)
            sm = p.summary()
            res.append((o, sm["outcomes"], sm["malformed"], sm["queries"], sm["responses"],
                        {k: (st.responses, st.bytes_down, st.nxdomain)
                         for k, st in p.tables["domain"].keys.items()}))
        assert res[0] == res[1], (i, res)


def test_registered_domain_shortcut_matches_the_psl() -> None:
    rd = RegisteredDomains()
    psl = PublicSuffixList(accept_unknown=True)
    rng = random.Random(5)
    rules = sorted(psl._publicsuffix)
    names = ["host.lan", "a.b.example.co.uk", "x.user.blogspot.com", "city.kobe.jp",
             "a.city.kobe.jp", "www.ck", "a.www.ck", "b.a.ck", "a\\..com", "com", "."]
    for rule in rng.sample(rules, 3000):
        r = rule.lstrip("!").replace("*", "w")
        names += [r, "a." + r, "b.a." + r]
    for n in names:
        assert rd.lookup(n) == (psl.privatesuffix(n) or n), n


def test_hyperloglog_registers_match_datasketch() -> None:
    from datasketch import HyperLogLog

    for n in (129, 3000):
        d = DistinctCounter(128)
        h = HyperLogLog(p=8, hashfunc=_hash32)
        for i in range(n):
            d.add(f"n{i}.example")
            h.update(hash_str(f"n{i}.example"))  # the keyed hash the counter uses
        assert bytes(d._regs) == h.reg.tobytes()
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert len(d) == int(round(h.count()))


def test_hyperloglog_estimate_matches_datasketch_on_random_registers() -> None:
    """sketch._estimate is datasketch's count() without numpy: same value on registers of
    every fill, from a few items (linear counting) to millions (raw estimate)."""
    import random
    import warnings

    import numpy as np
    from datasketch import HyperLogLog

    from dnsguard.features.sketch import _estimate

    rng = random.Random(11)
    h = HyperLogLog(p=8, hashfunc=_hash32)
    for trial in range(2000):
        n = rng.choice((1, 10, 100, 300, 600, 700, 1000, 5000, 10**6))
        regs = bytearray(256)
        for _ in range(min(n, 4000)):
            i = rng.randrange(256)
            regs[i] = max(regs[i], min(25, 1 + int(-np.log2(rng.random() + 1e-12))))
        if n == 10**6:
            regs = bytearray(rng.randrange(10, 26) for _ in range(256))
        h.reg = np.frombuffer(bytes(regs), dtype=np.int8).copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = h.count()
        assert _estimate(regs) == want, (trial, n)


def test_fast_path_matches_general_path_on_mutated_frames() -> None:
    """Real frames from pcaps/ with random bytes changed and random cuts: whatever the fast
    path accepts must give the general path's outcome and counters (it reads the packet
    through a C pointer when compiled, so every length check matters)."""
    rng = random.Random(3)
    frames = []
    for path in PCAPS:
        for i, (_ts, lt, data, _wirelen) in enumerate(CaptureReader.open(path)):
            if i % 7 == 0:
                frames.append((lt, data))
    s = Settings()
    s.use_model = False
    pipes = [Pipeline(s, load_dir(s.rules), lambda a: None) for _ in range(2)]
    pipes[1].fast_path = False

    def state(p: Pipeline) -> tuple:
        sm = p.summary()
        return (sm["outcomes"], sm["malformed"], sm["queries"], sm["responses"],
                {k: (st.queries, st.responses, st.bytes_up, st.bytes_down, st.nxdomain)
                 for k, st in p.tables["domain"].keys.items()})

    for trial in range(5000):
        lt, data = frames[rng.randrange(len(frames))]
        b = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(b))
            b[pos] = rng.choice((0, 1, 0x3F, 0x40, 0xC0, 0xFF, rng.randrange(256)))
        if rng.random() < 0.3:
            b = b[:rng.randrange(len(b) + 1)]
        frame = bytes(b)
        ts = 1.0 + trial * 0.01
        out = [p.feed(ts, lt, frame, len(frame)) for p in pipes]
        assert out[0] == out[1], (trial, frame.hex())
        if trial % 250 == 0:
            assert state(pipes[0]) == state(pipes[1]), trial
    assert state(pipes[0]) == state(pipes[1])
    assert pipes[0].counters["dns_query"] > 500  # the fast path saw real work


def _link_forms() -> dict[str, tuple[int, list[bytes]]]:
    """pcaps/' IPv4 UDP frames in every form the fast path takes: IPv4 and IPv6, on Ethernet
    (untagged, 802.1Q, QinQ), Linux cooked v1 and v2, and raw IP."""
    import struct

    v4, v6 = [], []
    for path in PCAPS:
        for _ts, lt, data, _wirelen in CaptureReader.open(path):
            if lt != 1 or data[12:14] != b"\x08\x00" or data[14] != 0x45 or data[23] != 17:
                continue
            ip = data[14:14 + ((data[16] << 8) | data[17])]
            v4.append(ip)
            udp = ip[20:]
            six = b"\x20\x01\x0d\xb8" + b"\0" * 8
            v6.append(struct.pack("!IHBB", 0x60000000, len(udp), 17, 64) + six + ip[12:16]
                      + six + ip[16:20] + udp)
    mac = b"\x02" * 6 + b"\x04" * 6

    def sll1(et: int, ip: bytes) -> bytes:
        return struct.pack("!HHH8sH", 0, 1, 6, b"\x04" * 6 + b"\0\0", et) + ip

    def sll2(et: int, ip: bytes) -> bytes:
        return struct.pack("!HHIHBB8s", et, 0, 2, 1, 0, 6, b"\x04" * 6 + b"\0\0") + ip

    forms = {}
    for fam, et, ips in (("v4", 0x0800, v4), ("v6", 0x86DD, v6)):
        forms[f"eth-{fam}"] = (1, [mac + struct.pack("!H", et) + ip for ip in ips])
        forms[f"vlan-{fam}"] = (1, [mac + struct.pack("!HHH", 0x8100, 7, et) + ip
                                    for ip in ips])
        forms[f"qinq-{fam}"] = (1, [mac + struct.pack("!HHHHH", 0x88A8, 5, 0x8100, 7, et) + ip
                                    for ip in ips])
        forms[f"sll-{fam}"] = (113, [sll1(et, ip) for ip in ips])
        forms[f"sll2-{fam}"] = (276, [sll2(et, ip) for ip in ips])
        forms[f"raw-{fam}"] = (101, list(ips))
    forms["ipv6-linktype"] = (229, list(v6))
    return forms


_FORMS = _link_forms()


@pytest.mark.parametrize("form", sorted(_FORMS))
def test_fast_path_takes_every_common_link_form_as_the_general_path_does(form: str) -> None:
    """Each form's frames, intact and then mutated and cut at random: the fast path takes the
    intact ones, and whatever it takes gives the general path's outcome and counters."""
    lt, frames = _FORMS[form]
    s = Settings()
    s.use_model = False
    pipes = [Pipeline(s, load_dir(s.rules), lambda a: None) for _ in range(2)]
    pipes[1].fast_path = False
    taken = sum(pipes[0].scan.frame(lt, f, 0, len(f)) for f in frames)
    assert taken >= len(frames) * 0.8  # the rest: compressed questions and the like

    def state(p: Pipeline) -> tuple:
        sm = p.summary()
        return (sm["outcomes"], sm["malformed"], sm["queries"], sm["responses"],
                {k: (st.queries, st.responses, st.bytes_up, st.bytes_down, st.nxdomain)
                 for k, st in p.tables["domain"].keys.items()},
                {k: (st.queries, st.responses, st.bytes_up)
                 for k, st in p.tables["client"].keys.items()})

    for i, f in enumerate(frames):
        out = [p.feed(1.0 + i * 0.01, lt, f, len(f)) for p in pipes]
        assert out[0] == out[1], (i, f.hex())
    assert state(pipes[0]) == state(pipes[1])
    rng = random.Random(form)
    for trial in range(800):
        b = bytearray(frames[rng.randrange(len(frames))])
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(b))
            b[pos] = rng.choice((0, 1, 0x3F, 0x40, 0x81, 0xC0, 0xFF, rng.randrange(256)))
        if rng.random() < 0.3:
            b = b[:rng.randrange(len(b) + 1)]
        f = bytes(b)
        out = [p.feed(100.0 + trial * 0.01, lt, f, len(f)) for p in pipes]
        assert out[0] == out[1], (trial, f.hex())
    assert state(pipes[0]) == state(pipes[1])
