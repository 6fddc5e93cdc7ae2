"""dnstap payloads read in place: the Protocol Buffers wire format walked for the fields the
pipeline takes, with no message object.

:class:`DnstapScanner` does what :class:`~dnsguard.capture.dnstap.DnstapMapper` does (the
same mapping, the same counters, the same outcome for every payload: tests/test_dnstapwire.py
holds the two equal on real BIND and Unbound output, on generated messages and on mutated and
random payloads) but reads the payload where it lies: :meth:`DnstapScanner.message` looks at
``data[start:stop]`` (a payload inside a chunk of a Frame Streams file) and fills in its
fields (``ts``, ``src``/``dst``, ``sport``/``dport``, the DNS message's span ``ws``/``we``,
``tcp``), which :meth:`Pipeline.feed_dnstap` hands on without a tuple or a bytes object for
the DNS message. Compiled (setup.py), a message costs about a tenth of the protobuf runtime
plus the Python objects its field reads make (bench/README.md); interpreted it is slower
than the runtime, so files are read with the runtime then (``DnstapFile.feed``).

The wire format (https://protobuf.dev/programming-guides/encoding/) as the protobuf runtime
(upb) reads it, which is the reference: every length is checked before reading; a varint of
more than ten octets (a tag: five, of 32 bits), a length past the end of its message, field
number 0 (outside a group), an END_GROUP without its START_GROUP, wire types 6 and 7 are
*corrupt* (the whole payload is counted under ``protobuf``, as a DecodeError is); unknown
fields (including groups, nested up to
:data:`MAX_GROUP_DEPTH`) and known fields with another wire type are skipped; an enum value
the schema does not name leaves the field unset (proto2); a repeated scalar field's last
value counts and repeated ``message`` fields merge; ``uint32`` fields keep the low 32 bits of
their varint, enums the low 32 bits as a signed number.

Example:
    >>> from dnsguard.capture import dnstap_pb2 as pb
    >>> from dnsguard.capture.dnstap import DnstapCounters, encode_message
    >>> p = encode_message(pb.Message.CLIENT_QUERY, b"wire", bytes([192, 0, 2, 7]),
    ...                    bytes([192, 0, 2, 53]), 40000, 53, 1700000000.5)
    >>> s = DnstapScanner(DnstapCounters())
    >>> s.message(p, 0, len(p)), s.ts, s.src, s.sport, s.dport, p[s.ws:s.we], s.tcp
    (True, 1700000000.5, b'\\xc0\\x00\\x02\\x07', 40000, 53, b'wire', False)
    >>> s.decode(b"\\x72\\x05\\x08")  # a length past the end: counted, no message
    >>> s.c.errors
    {'protobuf': 1}
"""

from __future__ import annotations

from collections.abc import Callable

#: Message type number → metric label (dnstap.proto's names, lower case; as
#: ``dnstap.TYPE_NAMES``, written out so that this module needs no protobuf runtime).
TYPE_LABELS = ("", "auth_query", "auth_response", "resolver_query", "resolver_response",
               "client_query", "client_response", "forwarder_query", "forwarder_response",
               "stub_query", "stub_response", "tool_query", "tool_response", "update_query",
               "update_response")
#: Socket protocol number → transport label (``dnstap.TRANSPORTS``).
TRANSPORT_LABELS = ("", "udp", "tcp", "dot", "doh", "dnscryptudp", "dnscrypttcp", "doq")
MAX_GROUP_DEPTH = 32  # groups inside groups in an unknown field (upb allows ~100; none seen)
MAX_PORT = 65535

_ZERO4, _ZERO16 = bytes(4), bytes(16)
_MASK64 = 0xFFFFFFFFFFFFFFFF
_MASK32 = 0xFFFFFFFF


class DnstapScanner:
    """Reads dnstap payloads of one source (a file, a sender connection) in place; see the
    module's description. ``counters`` (a ``DnstapCounters``) gets what it met; ``now`` gives
    a time for messages without one (live: the wall clock; a file: the last message's
    time). After a True :meth:`message`: ``ts``, ``src``/``dst`` (packed addresses of the
    packet that carried the DNS message), ``sport``/``dport``, ``ws``/``we`` (the DNS
    message is ``data[ws:we]``), ``tcp`` (carried over a byte stream)."""

    def __init__(self, counters, now: Callable[[], float] | None = None) -> None:
        self.c = counters
        self.now = now
        self.last_ts = 0.0
        self.saw_client = False  # this source logs its clients' messages
        self.ts = 0.0
        self.src = self.dst = b""
        self.sport = self.dport = 0
        self.ws = self.we = 0
        self.tcp = False
        self._reset()

    def _reset(self) -> None:
        self._p = 0
        self._bad = False
        self._has_message = False
        self._mt = 1  # absent: the schema's first value (AUTH_QUERY), as the runtime reads it
        self._family = 1
        self._proto = 1
        self._qa0 = self._qa1 = self._ra0 = self._ra1 = 0
        self._qm0 = self._qm1 = self._rm0 = self._rm1 = 0
        self._qport = self._rport = 0
        self._qsec = self._rsec = 0
        self._qnsec = self._rnsec = 0

    def decode(self, payload: bytes):
        """``DnstapMapper.decode``: the message ``(ts, src, dst, sport, dport, wire, tcp)``
        or None (counted under a reason)."""
        if not self.message(payload, 0, len(payload)):
            return None
        return (self.ts, self.src, self.dst, self.sport, self.dport,
                payload[self.ws:self.we], self.tcp)

    def message(self, data: bytes, start: int, stop: int) -> bool:
        """The dnstap payload at ``data[start:stop]``: True with the fields set when it
        carries a DNS message to analyse; False when not (counted under a reason)."""
        self._reset()
        buf = data
        c = self.c
        if not self._dnstap(buf, start, stop):
            c.error("protobuf")
            return False
        mt = self._mt
        q = mt & 1  # odd: a query type
        if q:
            w0, w1 = self._qm0, self._qm1
        else:
            w0, w1 = self._rm0, self._rm1
        if w0 == w1 and not self._has_message:
            c.error("no_message")  # another Dnstap payload type (none defined yet)
            return False
        label = TYPE_LABELS[mt]
        msgs = c.messages
        msgs[label] = msgs.get(label, 0) + 1
        proto = self._proto
        tr = TRANSPORT_LABELS[proto]
        trs = c.transports
        trs[tr] = trs.get(tr, 0) + 1
        if mt == 5 or mt == 6:  # CLIENT_*
            self.saw_client = True
        elif (3 <= mt <= 4 or 7 <= mt <= 8) and self.saw_client:  # RESOLVER_*, FORWARDER_*
            c.error("upstream_redundant")
            return False
        if w0 == w1:
            c.error("no_dns_message")
            return False
        if q:
            sec, nsec = self._qsec, self._qnsec
        else:
            sec, nsec = self._rsec, self._rnsec
            if not sec:
                sec, nsec = self._qsec, self._qnsec
        if sec:
            ts = sec + nsec * 1e-9
            self.last_ts = ts
        else:
            c.error("no_time")
            ts = self.now() if self.now is not None else self.last_ts
        qn = self._qa1 - self._qa0
        rn = self._ra1 - self._ra0
        if (qn == 4 or qn == 16) and rn == qn:
            qa = buf[self._qa0:self._qa1]
            ra = buf[self._ra0:self._ra1]
        else:  # missing or of the wrong length (counted): the all-zero address of the family
            c.error("bad_address")
            six = qn == 16 or rn == 16 or self._family == 2
            zero = _ZERO16 if six else _ZERO4
            n = 16 if six else 4
            qa = buf[self._qa0:self._qa1] if qn == n else zero
            ra = buf[self._ra0:self._ra1] if rn == n else zero
        qport, rport = self._qport, self._rport
        if qport > MAX_PORT or rport > MAX_PORT:
            c.error("bad_port")  # no such port: 0, as for a packet it is not
            if qport > MAX_PORT:
                qport = 0
            if rport > MAX_PORT:
                rport = 0
        self.ts = ts
        # carried over a byte stream: TCP, DoT, DoH, DNSCrypt over TCP
        self.tcp = proto == 2 or proto == 3 or proto == 4 or proto == 6
        self.ws = w0
        self.we = w1
        if q:
            self.src, self.dst, self.sport, self.dport = qa, ra, qport, rport
        else:
            self.src, self.dst, self.sport, self.dport = ra, qa, rport, qport
        return True

    # --- the wire format ------------------------------------------------------------------
    def _varint(self, buf: bytes, stop: int) -> int:
        """The varint at ``self._p`` (advanced past it); sets ``_bad`` if it is cut or longer
        than ten octets. Bits past 64 are dropped, as the runtime drops them."""
        p = self._p
        v = 0
        shift = 0
        while True:
            if p >= stop or shift > 63:
                self._bad = True
                return 0
            b = buf[p]
            p += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        self._p = p
        return v & _MASK64

    def _tag(self, buf: bytes, stop: int) -> int:
        """A field's tag at ``self._p``: a varint of at most five octets and 32 bits (the
        runtime refuses longer ones); sets ``_bad`` if not."""
        at = self._p
        tag = self._varint(buf, stop)
        if self._p - at > 5 or tag > _MASK32:
            self._bad = True
        return tag

    def _skip(self, buf: bytes, stop: int, wt: int, field: int, depth: int) -> bool:
        """Past the value of an unknown (or mistyped) field of wire type ``wt``."""
        if wt == 0:
            self._varint(buf, stop)
            return not self._bad
        if wt == 1 or wt == 5:
            n = 8 if wt == 1 else 4
            if stop - self._p < n:
                return False
            self._p += n
            return True
        if wt == 2:
            n = self._varint(buf, stop)
            if self._bad or n > stop - self._p:
                return False
            self._p += n
            return True
        if wt == 3:  # a group: fields up to the END_GROUP of the same number
            if depth >= MAX_GROUP_DEPTH:
                return False
            while True:  # (field number 0 is let pass here, as the runtime lets it)
                tag = self._tag(buf, stop)
                if self._bad:
                    return False
                f = tag >> 3
                w = tag & 7
                if w == 4:
                    return f == field
                if not self._skip(buf, stop, w, f, depth + 1):
                    return False
        return False  # an END_GROUP out of place, or wire type 6 or 7

    def _dnstap(self, buf: bytes, p: int, stop: int) -> bool:
        """The ``Dnstap`` message at ``buf[p:stop]``; False if it is corrupt."""
        self._p = p
        while self._p < stop:
            tag = self._tag(buf, stop)
            if self._bad:
                return False
            f = tag >> 3
            wt = tag & 7
            if f == 0:
                return False
            if f == 14 and wt == 2:  # message (a second one merges into the first)
                n = self._varint(buf, stop)
                if self._bad or n > stop - self._p:
                    return False
                end = self._p + n
                self._has_message = True
                if not self._message(buf, self._p, end):
                    return False
                self._p = end
            elif not self._skip(buf, stop, wt, f, 0):
                return False
        return True

    def _message(self, buf: bytes, p: int, stop: int) -> bool:
        """The ``Message`` at ``buf[p:stop]`` into the scanner's fields."""
        self._p = p
        while self._p < stop:
            tag = self._tag(buf, stop)
            if self._bad:
                return False
            f = tag >> 3
            wt = tag & 7
            if f == 0:
                return False
            if wt == 0 and (f <= 3 or f == 6 or f == 7 or f == 8 or f == 12):
                v = self._varint(buf, stop)
                if self._bad:
                    return False
                if f <= 3:  # enums: the low 32 bits, signed; a value not named is unset
                    e = v & _MASK32
                    if f == 1:
                        if 1 <= e <= 14:
                            self._mt = e
                    elif f == 2:
                        if e == 1 or e == 2:
                            self._family = e
                    elif 1 <= e <= 7:
                        self._proto = e
                elif f == 6:
                    self._qport = v & _MASK32
                elif f == 7:
                    self._rport = v & _MASK32
                elif f == 8:
                    self._qsec = v
                else:
                    self._rsec = v
            elif wt == 2 and (f == 4 or f == 5 or f == 10 or f == 14):
                n = self._varint(buf, stop)
                if self._bad or n > stop - self._p:
                    return False
                a = self._p
                self._p = a + n
                if f == 4:
                    self._qa0, self._qa1 = a, a + n
                elif f == 5:
                    self._ra0, self._ra1 = a, a + n
                elif f == 10:
                    self._qm0, self._qm1 = a, a + n
                else:
                    self._rm0, self._rm1 = a, a + n
            elif wt == 5 and (f == 9 or f == 13):
                a = self._p
                if stop - a < 4:
                    return False
                v = buf[a + 3]  # compiled: a 64-bit unsigned int before the shift
                v = (v << 24) | (buf[a + 2] << 16) | (buf[a + 1] << 8) | buf[a]
                self._p = a + 4
                if f == 9:
                    self._qnsec = v
                else:
                    self._rnsec = v
            elif not self._skip(buf, stop, wt, f, 0):
                return False
        return True


def frames_end(buf: bytes, pos: int, n: int, max_frame: int) -> int:
    """Where the run of whole Frame Streams data frames at ``buf[pos:n]`` ends: at the first
    control frame, frame longer than ``max_frame`` or frame cut by ``n``
    (``framestream.read_file_runs``; compiled here with the payload walk).

    >>> frames_end(b"\\0\\0\\0\\1a\\0\\0\\0\\2bc\\0\\0\\0\\0", 0, 14, 100)
    11
    >>> frames_end(b"\\0\\0\\0\\1a\\0\\0\\0\\2b", 0, 10, 100)  # the second is cut
    5
    """
    p = buf
    while pos + 4 <= n:
        ln = p[pos]  # compiled: a 64-bit unsigned int before the shifts
        ln = (ln << 24) | (p[pos + 1] << 16) | (p[pos + 2] << 8) | p[pos + 3]
        if not ln or ln > max_frame or ln > n - pos - 4:
            break
        pos += 4 + ln
    return pos
