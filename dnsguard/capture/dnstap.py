"""dnstap messages → the DNS messages the pipeline takes (:meth:`Pipeline.feed_message`).

A dnstap payload (one Frame Streams data frame, :mod:`dnsguard.capture.framestream`) is a
Protocol Buffers ``Dnstap`` message wrapping one DNS message and where and when a DNS server
saw it. Each becomes ``(ts, src, dst, sport, dport, wire, tcp)`` as if a tap had captured the
packet that carried it, so a tunnel gives the same alert whichever way it was seen:

* ``*_QUERY`` types (odd numbers): the initiator (``query_address``/``query_port``) sent
  ``query_message`` to the responder, at ``query_time``. For ``CLIENT_QUERY`` the source is
  the real client behind the resolver.
* ``*_RESPONSE`` types (even numbers): the responder sent ``response_message`` back to the
  initiator, at ``response_time``; for ``CLIENT_RESPONSE`` the destination is the client.
* ``RESOLVER_*`` and ``FORWARDER_*`` messages are the resolver's own upstream traffic: the
  same names its clients asked, from the resolver's address. A source (one sender
  connection, one file) that also logs its clients' messages has them counted but not
  analysed (``upstream_redundant``), or every tunnel would be measured twice and attributed
  to the resolver too; a source that logs only upstream messages is analysed from the
  resolver's vantage (set ``vantage.resolvers`` so its address is not taken for a client).
* DNS over TLS, HTTPS, QUIC and DNSCrypt count like UDP/TCP; the transport is counted by name.
* A response without its query (or the reverse) is one message like any other; a message
  with no DNS bytes, no time or broken addresses is counted under a reason, never fatal.

Two decoders give the same result for every payload (tests/test_dnstapwire.py):
:class:`DnstapMapper` over the ``protobuf`` runtime (upb, C) with a module generated from the
dnstap schema (``dnstap.proto`` beside this file; how to regenerate is written there), the
reference; and :class:`~dnsguard.capture.dnstapwire.DnstapScanner`, which walks the wire
format in place for the fields used. Compiled, the scanner reads files and live payloads
(:func:`payload_reader`): the runtime makes a Python object per field read, and those reads,
the message tuple and the payload object cost more than the whole pipeline's share of a
message (bench/README.md, "dnstap input"); interpreted, the runtime is the faster one. The
runtime was chosen over the ``dnstap-pb`` package, which is the same runtime with a module
generated from an older schema (no DoQ-era fields) registering ``dnstap.proto`` in the
process-wide descriptor pool.

Example:
    >>> from dnsguard.capture import dnstap_pb2 as pb
    >>> d = pb.Dnstap(type=pb.Dnstap.MESSAGE)
    >>> m = d.message
    >>> m.type, m.socket_family, m.socket_protocol = pb.Message.CLIENT_QUERY, pb.INET, pb.DOT
    >>> m.query_address, m.response_address = bytes([192, 0, 2, 7]), bytes([192, 0, 2, 53])
    >>> m.query_port, m.response_port = 40000, 853
    >>> m.query_time_sec, m.query_time_nsec = 1700000000, 500000000
    >>> m.query_message = b"wire"
    >>> c = DnstapCounters()
    >>> DnstapMapper(c).decode(d.SerializeToString())
    (1700000000.5, b'\\xc0\\x00\\x02\\x07', b'\\xc0\\x00\\x025', 40000, 853, b'wire', True)
    >>> dict(c.messages), dict(c.transports)
    ({'client_query': 1}, {'dot': 1})
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from google.protobuf.message import DecodeError

from dnsguard.capture import dnstap_pb2 as pb
from dnsguard.capture import dnstapwire
from dnsguard.capture.dnstapwire import DnstapScanner
from dnsguard.capture.framestream import (
    FileStats,
    looks_like_framestream,
    read_file_frames,
    read_file_runs,
)
from dnsguard.capture.pcapfile import CaptureError, open_capture

log = logging.getLogger(__name__)

#: Message type number → metric label (the dnstap schema's names, lower case).
TYPE_NAMES = {v.number: v.name.lower() for v in pb.Message.Type.DESCRIPTOR.values}
#: Socket protocol number → transport label.
TRANSPORTS = {v.number: v.name.lower() for v in pb.SocketProtocol.DESCRIPTOR.values}
_STREAM = frozenset({pb.TCP, pb.DOT, pb.DOH, pb.DNSCryptTCP})  # carried over a byte stream
_UPSTREAM = frozenset({pb.Message.RESOLVER_QUERY, pb.Message.RESOLVER_RESPONSE,
                       pb.Message.FORWARDER_QUERY, pb.Message.FORWARDER_RESPONSE})
_CLIENT = frozenset({pb.Message.CLIENT_QUERY, pb.Message.CLIENT_RESPONSE})
_ZERO4, _ZERO16 = bytes(4), bytes(16)
#: Whether the in-place payload reader (:mod:`dnsguard.capture.dnstapwire`) runs compiled:
#: then it reads files and live payloads; interpreted, the protobuf runtime is faster.
WIRE_COMPILED = not str(dnstapwire.__file__).endswith(".py")

#: A DNS message for :meth:`Pipeline.feed_message`: (ts, src, dst, sport, dport, wire, tcp).
Message = tuple[float, bytes, bytes, int, int, bytes, bool]


class DnstapCounters:
    """What the dnstap inputs met, shared by every source (metric values; summary)."""

    def __init__(self) -> None:
        self.frames = {"data": 0, "control": 0}
        self.messages: dict[str, int] = {}  # by message type label
        self.transports: dict[str, int] = {}  # by transport label
        self.errors: dict[str, int] = {}  # decode and framing errors, by reason
        self.bytes = 0
        self.senders = 0  # connected now (live)
        self.connections = 0  # accepted, ever (live)

    def error(self, reason: str, n: int = 1) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + n

    def summary(self) -> dict:
        return {"frames": dict(self.frames), "messages": dict(self.messages),
                "transports": dict(self.transports), "errors": dict(self.errors),
                "bytes": self.bytes}


class DnstapMapper:
    """Decodes the dnstap payloads of one source (a sender connection or a file).

    ``decode`` returns the DNS message to feed, or None (counted under a reason) when the
    payload carries nothing to analyse. ``now`` gives a time for messages without one (live:
    the wall clock; a file: the last message's time)."""

    def __init__(self, counters: DnstapCounters, now: Callable[[], float] | None = None) -> None:
        self.c = counters
        self.now = now
        self.last_ts = 0.0
        self.saw_client = False  # this source logs its clients' messages
        self._d = pb.Dnstap()

    def decode(self, payload: bytes) -> Message | None:
        c = self.c
        d = self._d
        try:
            d.ParseFromString(payload)
        except DecodeError:
            c.error("protobuf")
            return None
        # Each field read costs a few hundred ns (upb makes a Python object per read):
        # HasField only where an absent field is the rare case that matters.
        m = d.message
        mt = m.type
        q = mt & 1  # odd: a query type
        if q:
            wire = m.query_message
        else:
            wire = m.response_message
        if not wire and not d.HasField("message"):
            c.error("no_message")  # another Dnstap payload type (none defined yet)
            return None
        label = TYPE_NAMES.get(mt, "unknown")
        msgs = c.messages
        msgs[label] = msgs.get(label, 0) + 1
        proto = m.socket_protocol  # absent: UDP, the schema's default
        tr = TRANSPORTS.get(proto, "unknown")
        c.transports[tr] = c.transports.get(tr, 0) + 1
        if mt in _CLIENT:
            self.saw_client = True
        elif mt in _UPSTREAM and self.saw_client:
            c.error("upstream_redundant")
            return None
        if not wire:
            c.error("no_dns_message")
            return None
        if q:
            sec, nsec = m.query_time_sec, m.query_time_nsec
        else:
            sec, nsec = m.response_time_sec, m.response_time_nsec
            if not sec:
                sec, nsec = m.query_time_sec, m.query_time_nsec
        if sec:
            ts = sec + nsec * 1e-9
            self.last_ts = ts
        else:
            c.error("no_time")
            ts = self.now() if self.now is not None else self.last_ts
        qa, ra = m.query_address, m.response_address
        if len(qa) not in (4, 16) or len(ra) != len(qa):
            qa, ra = self._addresses(qa, ra)
        tcp = proto in _STREAM
        qport, rport = m.query_port, m.response_port  # uint32 in the schema
        if qport > 65535 or rport > 65535:
            c.error("bad_port")  # no such port: 0, as for a packet that has none
            if qport > 65535:
                qport = 0
            if rport > 65535:
                rport = 0
        if q:
            return ts, qa, ra, qport, rport, wire, tcp
        return ts, ra, qa, rport, qport, wire, tcp

    def _addresses(self, qa: bytes, ra: bytes) -> tuple[bytes, bytes]:
        """Addresses missing or of the wrong length (counted): the all-zero address of the
        family the other one (or ``socket_family``) says."""
        self.c.error("bad_address")
        six = len(qa) == 16 or len(ra) == 16 or self._d.message.socket_family == pb.INET6
        zero = _ZERO16 if six else _ZERO4
        n = len(zero)
        return (qa if len(qa) == n else zero), (ra if len(ra) == n else zero)


def payload_reader(counters: DnstapCounters, now: Callable[[], float] | None = None
                   ) -> DnstapMapper | DnstapScanner:
    """What decodes the payloads of one source (``decode(payload)``): the in-place
    :class:`DnstapScanner` when it runs compiled, else the protobuf runtime's
    :class:`DnstapMapper` (the reference; faster than the scanner interpreted). Both give
    the same message or the same counted reason for every payload
    (tests/test_dnstapwire.py)."""
    return DnstapScanner(counters, now) if WIRE_COMPILED else DnstapMapper(counters, now)


def is_dnstap_file(path: str | Path) -> bool:
    """Whether ``path`` (plain or gzip) starts like a Frame Streams file. Recognised by
    content, not by name: a file that cannot be read says no here and is reported by the
    capture reader."""
    try:
        f = open_capture(path)
    except CaptureError:
        return False
    try:
        return looks_like_framestream(f.read(12))
    except (OSError, EOFError, ValueError):
        return False
    finally:
        f.close()


class DnstapFile:
    """The DNS messages of one dnstap file (Frame Streams, as BIND's ``dnstap-output file``
    and the ``dnstap`` tool write it), plain or gzip-compressed. Damage stops the file where
    it is (``stats.damaged``), never raises."""

    def __init__(self, path: str | Path, counters: DnstapCounters,
                 f: BinaryIO | None = None) -> None:
        self.name = str(path)
        # ``f``: already opened (replay tells the format by a peek at the open stream)
        self.f = f if f is not None else open_capture(path)  # CaptureError names the file
        self.stats = FileStats()
        self.counters = counters
        self.mapper = payload_reader(counters)

    def messages(self) -> Iterator[Message]:
        decode = self.mapper.decode
        c = self.counters
        n = 0
        try:
            for payload in read_file_frames(self.f, self.stats):
                n += 1
                m = decode(payload)
                if m is not None:
                    yield m
        finally:
            c.frames["data"] += n
            c.bytes += self.stats.bytes
        if self.stats.damaged:
            log.warning("%s: %s; messages before it were read", self.name, self.stats.damaged)

    def feed(self, pipe) -> int:
        """Feed every message to ``pipe`` (a :class:`~dnsguard.pipeline.Pipeline`): what
        :meth:`messages` yields, without a generator step or tuple per message (replay of
        one file). Compiled, the payloads are read in place
        (:meth:`Pipeline.feed_dnstap` with a :class:`DnstapScanner`); interpreted, the
        protobuf runtime is faster than the scanner and decodes them. Returns the number of
        data frames read."""
        st = self.stats
        try:
            if WIRE_COMPILED:
                st.frames += pipe.feed_dnstap(read_file_runs(self.f, st), self.mapper)
            else:
                decode, sink = self.mapper.decode, pipe.feed_message
                for payload in read_file_frames(self.f, st):
                    m = decode(payload)
                    if m is not None:
                        sink(*m)
        finally:
            self.counters.frames["data"] += st.frames
            self.counters.bytes += st.bytes
        if st.damaged:
            log.warning("%s: %s; messages before it were read", self.name, st.damaged)
        return st.frames

    def close(self) -> None:
        self.f.close()


def encode_message(mtype: int, wire: bytes, query_address: bytes, response_address: bytes,
                   query_port: int = 0, response_port: int = 53, ts: float = 0.0,
                   protocol: int = pb.UDP, identity: bytes = b"") -> bytes:
    """One dnstap payload (what a DNS server writes), for tests, the benchmark and tools.
    ``wire`` goes in ``query_message`` for query types, ``response_message`` otherwise; ``ts``
    in the matching time fields.

    >>> p = encode_message(pb.Message.CLIENT_RESPONSE, b"r", bytes(4), bytes([1, 2, 3, 4]),
    ...                    40000, 53, 10.25)
    >>> DnstapMapper(DnstapCounters()).decode(p)
    (10.25, b'\\x01\\x02\\x03\\x04', b'\\x00\\x00\\x00\\x00', 53, 40000, b'r', False)
    """
    d = pb.Dnstap(type=pb.Dnstap.MESSAGE)
    if identity:
        d.identity = identity
    m = d.message
    m.type = mtype
    m.socket_family = pb.INET6 if len(query_address) == 16 else pb.INET
    m.socket_protocol = protocol
    m.query_address, m.response_address = query_address, response_address
    m.query_port, m.response_port = query_port, response_port
    sec = int(ts)
    nsec = min(round((ts - sec) * 1e9), 999_999_999)
    if mtype & 1:
        m.query_message = wire
        m.query_time_sec, m.query_time_nsec = sec, nsec
    else:
        m.response_message = wire
        m.response_time_sec, m.response_time_nsec = sec, nsec
    return d.SerializeToString()
