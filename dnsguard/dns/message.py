"""Parse a DNS message (RFC 1035 §4) into the fields the sensor needs.

Only what the features use is decoded: header, the questions, and per answer record its type
and rdata span (rdata is decoded lazily by whoever needs it). EDNS0 (RFC 6891) is read from the
additional section. Every length and count is checked against the bytes present before use.

``parse(data)`` raises :class:`~dnsguard.dns.exception.NotDNS` when the header is impossible for
DNS (the payload is something else using a DNS port) and another
:class:`~dnsguard.dns.exception.DNSError` subclass when a plausible message is broken. With
``cut=True`` (the capture's snaplen cut the packet) a message that runs out of bytes inside its
records keeps what was read and sets ``partial``.

Example:
    >>> q = bytes.fromhex("1234 0100 0001 0000 0000 0000")
    >>> q += b"\\x03www\\x02ex\\x00\\x00\\x01\\x00\\x01"
    >>> m = parse(q)
    >>> m.qr, m.qname, m.qtype, m.rcode
    (False, 'www.ex', 1, 0)
"""

from __future__ import annotations

import struct

from dnsguard.dns.exception import BadOpt, NotDNS, ShortHeader, Truncated
from dnsguard.dns.name import read_name, skip_name, to_text
from dnsguard.dns.rdatatype import OPT

_hdr = struct.Struct("!HHHHHH").unpack_from
_q = struct.Struct("!HH").unpack_from
_rr = struct.Struct("!HHIH").unpack_from

# Opcodes in use: QUERY, IQUERY (obsolete), STATUS, NOTIFY, UPDATE, DSO (RFC 8490).
VALID_OPCODES = frozenset({0, 1, 2, 4, 5, 6})
MAX_QUESTIONS = 16  # one in practice (RFC 9619); more is not DNS any client sends
NOERROR, NXDOMAIN = 0, 3


class Message:
    """The parsed parts of one DNS message."""

    __slots__ = ("id", "flags", "qr", "opcode", "rcode", "qdcount", "ancount", "nscount",
                 "arcount", "qlabels", "qtype", "qclass", "answers", "edns_size", "size",
                 "partial", "data", "_qname")

    def __init__(self) -> None:
        self.qlabels: tuple[bytes, ...] | None = None
        self.qtype = 0
        self.qclass = 0
        self.answers: list[tuple[int, int, int]] = []  # (type, rdata offset, rdata length)
        self.edns_size = 0  # UDP payload size advertised in OPT, 0 without EDNS
        self.partial = False
        self._qname: str | None = None

    @property
    def qname(self) -> str | None:
        """First question's name in presentation format, case kept (``None`` without one)."""
        if self._qname is None and self.qlabels is not None:
            self._qname = to_text(self.qlabels)
        return self._qname

    def answer_bytes(self) -> dict[int, int]:
        """Answer rdata bytes by record type."""
        out: dict[int, int] = {}
        for t, _, ln in self.answers:
            out[t] = out.get(t, 0) + ln
        return out

    def rdata(self, i: int) -> bytes:
        _, off, ln = self.answers[i]
        return self.data[off:off + ln]


def parse(data: bytes, cut: bool = False) -> Message:
    """Parse ``data`` as one DNS message (see module doc for the errors it raises)."""
    n = len(data)
    if n < 12:
        raise ShortHeader(f"{n} bytes, a DNS header needs 12")
    mid, flags, qd, an, ns, ar = _hdr(data)
    opcode = (flags >> 11) & 0xF
    if opcode not in VALID_OPCODES or qd > MAX_QUESTIONS:
        raise NotDNS(f"opcode {opcode}, {qd} questions")
    m = Message()
    m.id, m.flags, m.qr, m.opcode, m.rcode = mid, flags, bool(flags & 0x8000), opcode, flags & 0xF
    m.qdcount, m.ancount, m.nscount, m.arcount = qd, an, ns, ar
    m.size = n
    m.data = data
    off = 12
    try:
        for i in range(qd):
            labels, off = read_name(data, off)
            if off + 4 > n:
                raise Truncated("question runs past the end")
            if i == 0:
                m.qlabels = labels
                m.qtype, m.qclass = _q(data, off)
            off += 4
    except Truncated:
        if not cut or m.qlabels is None:
            raise
        m.partial = True
        return m
    if an or ns or ar:
        try:
            off = _records(data, off, an, m.answers)
            off = _records(data, off, ns, None)
            off = _additional(data, off, ar, m)
        except Truncated:
            if not cut:
                raise
            m.partial = True
    return m


def _records(data: bytes, off: int, count: int, out: list | None) -> int:
    n = len(data)
    for _ in range(count):
        off = skip_name(data, off)
        if off + 10 > n:
            raise Truncated("record header runs past the end")
        rtype, _cls, _ttl, rdlen = _rr(data, off)
        off += 10
        if off + rdlen > n:
            raise Truncated("rdata runs past the end")
        if out is not None:
            out.append((rtype, off, rdlen))
        off += rdlen
    return off


def _additional(data: bytes, off: int, count: int, m: Message) -> int:
    n = len(data)
    for _ in range(count):
        start = off
        off = skip_name(data, off)
        if off + 10 > n:
            raise Truncated("record header runs past the end")
        rtype, cls, ttl, rdlen = _rr(data, off)
        if rtype == OPT:
            if off != start + 1:
                raise BadOpt("OPT record not owned by the root")
            m.edns_size = cls
            m.rcode |= (ttl >> 24) << 4  # extended RCODE
        off += 10
        if off + rdlen > n:
            raise Truncated("rdata runs past the end")
        off += rdlen
    return off


__all__ = ["Message", "parse", "NOERROR", "NXDOMAIN"]
