"""DNS wire parsing: header, questions, records, compression, EDNS0, presentation format, and
each way a message can be broken (with its precise exception and fixed reason)."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT

from conftest import dns_query, dns_response, header, wire_name
from dnsguard.dns import rdatatype
from dnsguard.dns.exception import (
    REASONS,
    BadLabelType,
    BadOpt,
    BadPointer,
    DNSError,
    NameTooLong,
    NotDNS,
    PointerLoop,
    ShortHeader,
    Truncated,
)
from dnsguard.dns.message import parse
from dnsguard.dns.name import label_text, read_name, skip_name, to_text

QTAIL = b"\x00\x01\x00\x01"  # type A, class IN


def rr(owner: bytes, rtype: int, rdata: bytes, cls: int = 1, ttl: int = 60) -> bytes:
    return owner + struct.pack("!HHIH", rtype, cls, ttl, len(rdata)) + rdata


# --- ordinary messages --------------------------------------------------------------------------
def test_query():
    m = parse(dns_query("www.Example.com", qtype="TXT", qid=0xBEEF))
    assert (m.id, m.qr, m.opcode, m.rcode) == (0xBEEF, False, 0, 0)
    assert m.qname == "www.Example.com"  # case kept
    assert m.qlabels == (b"www", b"Example", b"com")
    assert (m.qtype, m.qclass) == (16, 1)
    assert (m.qdcount, m.ancount, m.nscount, m.arcount) == (1, 0, 0, 0)
    assert m.answers == [] and m.edns_size == 0 and not m.partial


def test_response_with_answers():
    raw = dns_response("t.example.org", answers=(("A", "192.0.2.1"), ("TXT", "hello"),
                                                 ("AAAA", "2001:db8::1")))
    m = parse(raw)
    assert m.qr and m.rcode == 0 and m.qname == "t.example.org"
    assert [t for t, _, _ in m.answers] == [1, 16, 28]
    assert m.rdata(0) == bytes([192, 0, 2, 1])
    assert m.rdata(1) == b"\x05hello"
    assert len(m.rdata(2)) == 16
    assert m.answer_bytes() == {1: 4, 16: 6, 28: 16}
    assert m.size == len(raw)


def test_nxdomain_and_no_question():
    m = parse(header(flags=0x8183, qd=0))
    assert m.rcode == 3 and m.qname is None and m.qlabels is None


def test_root_question():
    m = parse(header() + b"\x00" + QTAIL)
    assert m.qlabels == () and m.qname == "."


def test_compression_pointers():
    msg = DNS(id=1, qr=1, qd=DNSQR(qname="www.example.com"),
              an=[DNSRR(rrname="www.example.com", type="CNAME", rdata="web.example.com"),
                  DNSRR(rrname="web.example.com", type="A", rdata="192.0.2.7")]).compress()
    raw = bytes(msg)
    assert raw.count(b"example") == 1  # really compressed
    m = parse(raw)
    assert m.qname == "www.example.com"
    assert [t for t, _, _ in m.answers] == [5, 1]
    _, cname_off, _ = m.answers[0]
    labels, end = read_name(raw, cname_off)
    assert to_text(labels) == "web.example.com"
    assert end == cname_off + m.answers[0][2]  # the pointer ends the rdata
    assert m.rdata(1) == bytes([192, 0, 2, 7])


def test_read_name_follows_pointer_and_returns_end_after_it():
    data = header() + wire_name(b"www", b"example", b"com") + b"\x04mail\xc0\x10"
    off = 12 + 17
    labels, end = read_name(data, off)
    assert labels == (b"mail", b"example", b"com")
    assert end == off + 7
    assert skip_name(data, off) == end


# --- compression pointer abuse ------------------------------------------------------------------
def test_pointer_loop():
    data = header() + b"\xc0\x0e" + b"\xc0\x0c"  # 14 -> 12 -> 14 -> ...
    with pytest.raises(PointerLoop) as ei:
        read_name(data, 14)
    assert ei.value.reason == "pointer_loop"


def test_pointer_back_into_own_name_is_a_loop():
    raw = header() + b"\x01a\xc0\x0c" + QTAIL  # a.a.a.a... forever
    with pytest.raises(PointerLoop):
        parse(raw)


def test_forward_pointer():
    raw = header() + b"\xc0\x12" + QTAIL + wire_name(b"x")
    with pytest.raises(BadPointer) as ei:
        parse(raw)
    assert ei.value.reason == "forward_pointer"


def test_self_pointer():
    with pytest.raises(BadPointer):
        parse(header() + b"\xc0\x0c" + QTAIL)
    with pytest.raises(BadPointer):
        read_name(header() + wire_name(b"abc") + b"\x01z\xc0\x13", 17)


def test_long_chain_of_backward_pointers():
    """Each pointer strictly before the last: finite however long, and decoded in full."""
    data = bytearray(b"\x00")  # the root at 0
    prev = 0
    for _ in range(2000):  # pointer to pointer to ... to the root
        at = len(data)
        data += bytes([0xC0 | prev >> 8, prev & 0xFF])
        prev = at
    assert read_name(bytes(data), prev) == ((), prev + 2)
    for i in range(100):  # now labels on top: 100 labels of one octet = 201 octets
        at = len(data)
        data += b"\x01" + bytes([0x61 + i % 26]) + bytes([0xC0 | prev >> 8, prev & 0xFF])
        prev = at
    labels, end = read_name(bytes(data), prev)
    assert len(labels) == 100
    assert labels[0] == bytes([0x61 + 99 % 26]) and labels[-1] == b"a"
    assert end == prev + 4


def test_pointer_cut():
    with pytest.raises(Truncated):
        parse(header() + b"\x01a\xc0")


# --- names ---------------------------------------------------------------------------------------
def test_name_length_limit():
    ok = [b"a" * 63] * 3 + [b"b" * 61]  # 3*64 + 62 + 1 = 255 octets
    assert len(wire_name(*ok)) == 255
    m = parse(header() + wire_name(*ok) + QTAIL)
    assert m.qlabels == tuple(ok)
    too_long = [b"a" * 63] * 3 + [b"b" * 62]  # 256 octets
    with pytest.raises(NameTooLong) as ei:
        parse(header() + wire_name(*too_long) + QTAIL)
    assert ei.value.reason == "name_too_long"


def test_name_too_long_through_pointers():
    first = wire_name(*[b"x" * 63] * 3)  # 193 octets
    data = header(qd=0) + first
    with pytest.raises(NameTooLong):
        read_name(data + b"\x3f" + b"y" * 63 + b"\xc0\x0c", len(data))


@pytest.mark.parametrize("bits", [0x40, 0x80])
def test_bad_label_type(bits):
    with pytest.raises(BadLabelType) as ei:
        parse(header() + b"\x03www" + bytes([bits | 3]) + b"abc\x00" + QTAIL)
    assert ei.value.reason == "bad_label_type"
    owner = bytes([bits | 1]) + b"a\x00"
    raw = header(flags=0x8180, an=1) + wire_name(b"q") + QTAIL + rr(owner, 1, b"\0" * 4)
    with pytest.raises(BadLabelType):
        parse(raw)


def test_raw_label_bytes_presentation():
    labels = (b"\x00\xff", b"a.b", b"back\\slash", b"sp ace", b'q"()@;$', b"plain-1_Z")
    raw = header() + wire_name(*labels) + QTAIL
    m = parse(raw)
    assert m.qlabels == labels  # kept unaltered
    assert m.qname == ("\\000\\255.a\\.b.back\\\\slash.sp\\032ace."
                       'q\\"\\(\\)\\@\\;\\$.plain-1_Z')
    assert label_text(b"\x7f~!") == "\\127~!"
    assert to_text(()) == "."


# --- truncation and lying counts ---------------------------------------------------------------
def test_truncated_question():
    full = header() + wire_name(b"www", b"example") + QTAIL
    for n in (13, 16, len(full) - 4, len(full) - 1):
        with pytest.raises(Truncated) as ei:
            parse(full[:n])
        assert ei.value.reason == "truncated"


def test_truncated_record_header_and_rdata():
    q = header(flags=0x8180, an=1) + wire_name(b"a") + QTAIL
    answer = rr(b"\xc0\x0c", 16, b"\x04data")
    for n in (len(q) + 1, len(q) + 2, len(q) + 11):  # owner, record header
        with pytest.raises(Truncated, match="record header|pointer"):
            parse((q + answer)[:n])
    with pytest.raises(Truncated, match="rdata"):
        parse((q + answer)[:-1])
    assert parse(q + answer).answers == [(16, len(q) + 12, 5)]


@pytest.mark.parametrize(("counts", "exc"), [
    ({"qd": 2}, Truncated), ({"an": 5}, Truncated), ({"ns": 1}, Truncated),
    ({"ar": 65535}, Truncated), ({"an": 0}, None),
])
def test_counts_that_lie(counts, exc):
    base = header(flags=0x8180, **{"an": 1, **counts}) + wire_name(b"a") + QTAIL
    raw = base + rr(b"\xc0\x0c", 1, b"\x01\x02\x03\x04")
    if exc is None:
        m = parse(raw)  # trailing bytes past the counted sections are ignored
        assert m.answers == []
    else:
        with pytest.raises(exc):
            parse(raw)


def test_cut_keeps_question_and_marks_partial():
    raw = dns_response("big.example.com",
                       answers=tuple(("TXT", "z" * 100) for _ in range(3)))
    whole = parse(raw)
    assert len(whole.answers) == 3
    for n in (len(raw) - 1, len(raw) - 120, 12 + 17 + 4 + 3):
        with pytest.raises(Truncated):
            parse(raw[:n])
        m = parse(raw[:n], cut=True)
        assert m.partial
        assert m.qname == "big.example.com" and m.qtype == 1
        assert m.answers == whole.answers[:len(m.answers)]
    assert len(parse(raw[:len(raw) - 1], cut=True).answers) == 2


def test_cut_inside_second_question_keeps_first():
    raw = header(qd=2) + wire_name(b"one") + QTAIL + wire_name(b"two")[:3]
    m = parse(raw, cut=True)
    assert m.partial and m.qname == "one"


def test_cut_inside_first_question_still_raises():
    raw = header() + wire_name(b"www", b"example")[:6]
    with pytest.raises(Truncated):
        parse(raw, cut=True)


def test_cut_does_not_hide_other_errors():
    raw = header(flags=0x8180, an=1) + wire_name(b"a") + QTAIL + b"\x80x"
    with pytest.raises(BadLabelType):
        parse(raw, cut=True)


# --- EDNS0 ---------------------------------------------------------------------------------------
def test_edns0_opt():
    m = parse(bytes(DNS(id=2, qd=DNSQR(qname="a.example"),
                        ar=[DNSRROPT(rclass=1232, extrcode=0, z=0x8000)])))
    assert m.edns_size == 1232 and m.rcode == 0
    m = parse(bytes(DNS(id=2, qr=1, rcode=0, qd=DNSQR(qname="a.example"),
                        ar=[DNSRROPT(rclass=4096, extrcode=1)])))
    assert m.edns_size == 4096
    assert m.rcode == 16  # BADVERS: extended RCODE 1 << 4 | 0
    m = parse(bytes(DNS(id=2, qr=1, rcode=3, qd=DNSQR(qname="a.example"),
                        ar=[DNSRROPT(rclass=512, extrcode=0xFF)])))
    assert m.rcode == 0xFF3


def test_opt_with_non_root_owner():
    raw = header(ar=1) + wire_name(b"a") + QTAIL + rr(wire_name(b"evil"), 41, b"", cls=1232)
    with pytest.raises(BadOpt) as ei:
        parse(raw)
    assert ei.value.reason == "bad_opt"
    raw = header(ar=1) + wire_name(b"a") + QTAIL + rr(b"\xc0\x0c", 41, b"", cls=1232)
    with pytest.raises(BadOpt):
        parse(raw)


def test_other_additional_records_do_not_set_edns():
    raw = header(ar=1) + wire_name(b"a") + QTAIL + rr(b"\x00", 1, b"\0" * 4, cls=1232)
    assert parse(raw).edns_size == 0


# --- record types --------------------------------------------------------------------------------
def test_unknown_record_types_kept_by_number():
    q = header(flags=0x8180, an=2) + wire_name(b"u", b"example") + struct.pack("!HH", 65280, 1)
    raw = q + rr(b"\xc0\x0c", 65280, b"\x01\x02\x03") + rr(b"\xc0\x0c", 65399, b"")
    m = parse(raw)
    assert m.qtype == 65280
    assert [t for t, _, _ in m.answers] == [65280, 65399]
    assert rdatatype.to_text(m.qtype) == "TYPE65280"
    assert rdatatype.to_text(65399) == "PRIVATE"
    assert rdatatype.from_text("TYPE65280") == 65280
    assert rdatatype.from_text(" null ") == rdatatype.NULL


@pytest.mark.parametrize("text", ["TYPE65536", "TYPE", "TYPEx", "BOGUS", ""])
def test_rdatatype_from_text_rejects(text):
    with pytest.raises(ValueError):
        rdatatype.from_text(text)


def test_rdatatype_round_trip():
    for n in (*range(0, 300), 32768, 65399, 65535):
        assert rdatatype.from_text(rdatatype.to_text(n)) == n


# --- not DNS at all ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 11])
def test_short_header(n):
    with pytest.raises(ShortHeader) as ei:
        parse(header()[:n])
    assert isinstance(ei.value, NotDNS)
    assert ei.value.reason == "short_header"


@pytest.mark.parametrize("opcode", [3, 7, 8, 15])
def test_impossible_opcode(opcode):
    raw = header(flags=opcode << 11) + wire_name(b"a") + QTAIL
    with pytest.raises(NotDNS) as ei:
        parse(raw)
    assert ei.value.reason == "not_dns"


@pytest.mark.parametrize("opcode", [0, 1, 2, 4, 5, 6])
def test_valid_opcodes(opcode):
    assert parse(header(flags=opcode << 11) + wire_name(b"a") + QTAIL).opcode == opcode


def test_question_count_limit():
    one = wire_name(b"a") + QTAIL
    assert parse(header(qd=16) + one * 16).qdcount == 16
    with pytest.raises(NotDNS):
        parse(header(qd=17) + one * 17)


def test_iodine_raw_mode_is_not_dns():
    """iodine's raw-UDP mode: 3-octet magic 10 d1 9e, then command|user; the flags word has
    opcode 3, which no DNS client sends."""
    for cmd in (0x10, 0x20, 0x30):  # login, data, ping
        pkt = b"\x10\xd1\x9e" + bytes([cmd | 1]) + bytes(range(32))
        with pytest.raises(NotDNS):
            parse(pkt)
    with pytest.raises(NotDNS):
        parse(b"\x10\xd1\x9e\x31\x00")  # short: a ShortHeader is NotDNS too


def test_reasons_are_distinct_and_cover_subclasses():
    classes = [Truncated, BadPointer, PointerLoop, NameTooLong, BadLabelType, BadOpt,
               ShortHeader]
    assert len({c.reason for c in classes}) == len(classes)
    assert set(REASONS) == {c.reason for c in classes}
    assert all(issubclass(c, DNSError) for c in (*classes, NotDNS))
