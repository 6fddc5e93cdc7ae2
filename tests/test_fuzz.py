"""Property tests: hostile bytes anywhere in the input path never raise anything but the
documented exceptions (DNSError from parse) and never crash decoding, reassembly, capture
reading or the pipeline."""

from __future__ import annotations

import gzip
import io
import re
import struct
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting

from conftest import (
    RULES_DIR,
    eth,
    ng_epb,
    ng_idb,
    ng_shb,
    pcap_header,
    pcap_record,
    tcp4,
    udp4,
    udp6,
)
from dnsguard.capture.pcapfile import CaptureError, CaptureReader
from dnsguard.decode import packet as pk
from dnsguard.decode.tcpstream import FIN, TcpReassembler
from dnsguard.detect.rules import load_dir
from dnsguard.dns.exception import DNSError
from dnsguard.dns.message import parse
from dnsguard.dns.name import MAX_NAME, label_text, read_name
from dnsguard.pipeline import Pipeline
from dnsguard.settings import Settings

FAST = hsettings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
PORTS = frozenset({53})

# A realistic message to mutate: compression, several sections, EDNS0.
REAL = bytes(DNS(id=7, qr=1, rd=1, ra=1, qd=DNSQR(qname="data.t.example.com", qtype="TXT"),
                 an=[DNSRR(rrname="data.t.example.com", type="CNAME", rdata="x.example.com"),
                     DNSRR(rrname="x.example.com", type="TXT", rdata="payload"),
                     DNSRR(rrname="x.example.com", type="A", rdata="192.0.2.9")],
                 ar=[DNSRROPT(rclass=1232)]).compress())


def check_message(m, data: bytes) -> None:
    """What a parsed message promises: spans inside the data, a sane name."""
    assert m.size == len(data)
    for _t, off, ln in m.answers:
        assert off >= 12 and off + ln <= len(data)
    if m.qlabels is not None:
        assert sum(len(x) + 1 for x in m.qlabels) + 1 <= MAX_NAME
        assert isinstance(m.qname, str)


def parse_or_dnserror(data: bytes, cut: bool) -> None:
    try:
        m = parse(data, cut)
    except DNSError:
        return
    check_message(m, data)


# --- DNS parsing ------------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=600), st.booleans())
def test_parse_arbitrary_bytes(data, cut):
    parse_or_dnserror(data, cut)


@FAST
@given(st.binary(min_size=12, max_size=600), st.booleans())
def test_parse_arbitrary_body_behind_plausible_header(body, cut):
    # Opcode 0 and at most 16 questions, so parsing goes past the NotDNS check.
    data = bytearray(body)
    data[2] &= 0x87
    data[4] = 0
    data[5] &= 0x0F
    parse_or_dnserror(bytes(data), cut)


@st.composite
def mutated(draw):
    data = bytearray(REAL)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "counts", "pointer", "insert", "byte"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "counts" and len(data) >= 12:
            j = draw(st.sampled_from([4, 6, 8, 10]))
            data[j:j + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif op == "pointer":
            target = draw(st.integers(0, 0x3FFF))
            data[i:i + 2] = bytes([0xC0 | target >> 8, target & 0xFF])
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@FAST
@given(mutated(), st.booleans())
def test_parse_mutations_of_a_real_message(data, cut):
    parse_or_dnserror(data, cut)


def test_real_message_parses():
    m = parse(REAL)
    assert m.qname == "data.t.example.com" and len(m.answers) == 3 and m.edns_size == 1232


@FAST
@given(st.binary(max_size=300), st.integers(0, 310))
def test_read_name_arbitrary(data, off):
    try:
        labels, end = read_name(data, off)
    except DNSError:
        return
    assert off < end <= len(data)
    assert sum(len(x) + 1 for x in labels) + 1 <= MAX_NAME
    assert all(0 < len(x) < 64 for x in labels)


_ESC = re.compile(rb"\\(\d{3}|.)", re.S)


def unescape(text: str) -> bytes:
    def one(m: re.Match) -> bytes:
        g = m.group(1)
        return bytes([int(g)]) if len(g) == 3 else g

    return _ESC.sub(one, text.encode("ascii"))


@FAST
@given(st.binary(min_size=1, max_size=63))
def test_label_presentation_is_printable_and_reversible(label):
    text = label_text(label)
    assert all(0x21 <= ord(c) < 0x7F for c in text)
    assert unescape(text) == label
    assert "." not in text.replace("\\.", "")  # every dot is escaped: names stay splittable


# --- decoding and reassembly ---------------------------------------------------------------------
LINKTYPES = st.one_of(st.sampled_from(sorted(pk.SUPPORTED_LINKTYPES)), st.integers(0, 300))

SEEDS = [
    eth(udp4(REAL, sport=53, dport=40000)),
    eth(udp6(REAL, sport=53, dport=40000)),
    eth(tcp4(struct.pack("!H", len(REAL)) + REAL, seq=1)),
    eth(IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["::1"])
        / IPv6ExtHdrDestOpt() / UDP(dport=53) / REAL),
]


@st.composite
def frames(draw):
    """Arbitrary bytes, or a real frame with bytes changed or cut (reaches deeper code)."""
    if draw(st.booleans()):
        return draw(LINKTYPES), draw(st.binary(max_size=200))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return 1, bytes(data[:cut])


@FAST
@given(frames(), st.integers(0, 70000))
def test_decode_frame_never_raises(frame, wirelen):
    linktype, data = frame
    d = pk.decode_frame(linktype, data, wirelen, PORTS)
    if isinstance(d, pk.Datagram):
        assert d.payload in data
        assert 53 in (d.sport, d.dport)
        assert len(d.src) == len(d.dst) in (4, 16)
    else:
        assert isinstance(d, pk.Dropped)
        assert d.outcome in pk.OUTCOMES


SEGMENTS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2**32 - 1), st.integers(0, 255),
              st.binary(max_size=120)),
    max_size=40)


@FAST
@given(SEGMENTS)
def test_tcp_feed_arbitrary_segments(segments):
    r = TcpReassembler(max_flows=2, max_bytes=150)
    for k, seq, flags, payload in segments:
        for msg in r.feed((b"c", k, b"s", 53), seq, flags, payload):
            assert 0 < len(msg) <= 65535
        assert r.buffered == sum(len(s[1]) for s in r.flows.values())
        assert r.buffered <= r.max_bytes and len(r.flows) <= r.max_flows


@FAST
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=8),
       st.integers(0, 2**32 - 1), st.data())
def test_tcp_stream_split_anywhere_gives_back_the_messages(msgs, isn, data):
    """However the stream is cut into segments, wherever the sequence numbers wrap, and with
    any segment sent twice, the same messages come out, once each."""
    stream = b"".join(struct.pack("!H", len(m)) + m for m in msgs)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    dup = data.draw(st.sets(st.integers(0, len(bounds) - 2), max_size=3))
    r = TcpReassembler()
    key = (b"c", 1, b"s", 53)
    out = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        for _ in range(2 if i in dup else 1):
            out += r.feed(key, (isn + a) & 0xFFFFFFFF, 0x18, stream[a:b])
    out += r.feed(key, (isn + len(stream)) & 0xFFFFFFFF, FIN | 0x10, b"")
    assert out == msgs
    assert r.counters["gaps"] == 0 and r.counters["incomplete_at_close"] == 0
    assert not r.flows and r.buffered == 0


# --- capture files -------------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=400), st.sampled_from(["pcap-le", "pcap-be-ns", "pcapng"]))
def test_capture_reader_arbitrary_body(body, kind):
    if kind == "pcap-le":
        head = pcap_header(1)
    elif kind == "pcap-be-ns":
        head = pcap_header(101, endian=">", nano=True)
    else:
        head = ng_shb() + ng_idb(1)
    r = CaptureReader(io.BytesIO(head + body), name="fuzz")
    got = list(r)
    assert r.stats.frames == len(got)
    assert r.stats.bytes == sum(len(f[2]) for f in got)
    for ts, lt, data, _wirelen in got:
        assert isinstance(ts, float) and isinstance(lt, int) and isinstance(data, bytes)
    if r.stats.damaged:
        assert re.search(r"at byte \d+$", r.stats.damaged)


GZ_FRAMES = [eth(udp4(REAL, sport=53, dport=1024 + i)) for i in range(60)]
GZ_PLAIN = {
    "pcap": pcap_header(1) + b"".join(pcap_record(i, 0, f) for i, f in enumerate(GZ_FRAMES)),
    "pcapng": ng_shb() + ng_idb(1) + b"".join(ng_epb(0, i, f) for i, f in enumerate(GZ_FRAMES)),
}
GZ = {k: gzip.compress(v, mtime=0) for k, v in GZ_PLAIN.items()}


@hsettings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(GZ)), st.floats(0, 1))
def test_gzip_cut_anywhere(kind, where):
    """A gzip capture cut at any point: a CaptureError, or the frames before the cut (in
    order, none altered) and the damage reported."""
    gz = GZ[kind]
    cut = int(len(gz) * where)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"cut.{kind}.gz"
        path.write_bytes(gz[:cut])
        try:
            r = CaptureReader.open(path)
        except CaptureError as e:
            assert str(path) in str(e)
            return
        got = [f[2] for f in r]
        r.close()
    assert got == GZ_FRAMES[:len(got)]
    if cut < len(gz):
        assert r.stats.damaged and "at byte" in r.stats.damaged
    else:
        assert len(got) == len(GZ_FRAMES) and r.stats.damaged is None


@st.composite
def pcapng_blocks(draw):
    """pcapng made of well-framed blocks with arbitrary types and bodies (interfaces, options,
    packets for interfaces that may not exist, ...)."""
    out = ng_shb()
    for _ in range(draw(st.integers(0, 6))):
        btype = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 0xBAD, 0x1234]))
        body = draw(st.binary(max_size=60))
        body += b"\x00" * (-len(body) % 4)
        out += struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I",
                                                                             12 + len(body))
    return out


@FAST
@given(pcapng_blocks())
def test_capture_reader_arbitrary_pcapng_blocks(data):
    r = CaptureReader(io.BytesIO(data), name="fuzz")
    got = list(r)
    assert r.stats.frames == len(got)


# --- the whole pipeline --------------------------------------------------------------------------
@cache
def pipeline() -> Pipeline:
    return Pipeline(Settings(), load_dir(RULES_DIR), lambda alert: None)


@hsettings(max_examples=200, deadline=None)
@given(frames(), st.floats(0, 2e9, allow_nan=False))
def test_pipeline_feed_never_raises(frame, ts):
    pipe = pipeline()
    before = sum(pipe.counters[o] for o in pk.OUTCOMES)
    linktype, data = frame
    outcome = pipe.feed(ts, linktype, data, len(data))
    assert outcome in pk.OUTCOMES
    assert sum(pipe.counters[o] for o in pk.OUTCOMES) == before + 1


def test_pipeline_finish_after_fuzzing():
    pipe = pipeline()
    for f in SEEDS:
        pipe.feed(1.0, 1, f, len(f))
    pipe.finish()
    assert pipe.summary()["packets"] == sum(pipe.counters[o] for o in pk.OUTCOMES)


def test_seed_frames_are_dns():
    pipe = Pipeline(Settings(), load_dir(RULES_DIR), lambda alert: None)
    assert [pipe.feed(1.0, 1, f, len(f)) for f in SEEDS] == [pk.DNS_RESPONSE] * 4
