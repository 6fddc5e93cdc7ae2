"""The fast path: the common frame — one UDP datagram carrying one DNS message with one
uncompressed question, over IPv4 or IPv6, on Ethernet (VLAN-tagged or not), Linux cooked
capture or raw IP — read in place, with no object per header.

:meth:`FastScanner.frame` looks at a frame where it lies in a buffer (a pcap file's records
are read in place) and either fills in the scanner's fields (addresses, the question name's
span, the query type, the rcode with EDNS's extension, the answers' rdata octets, the
message size, query or response) and returns True, or returns False: *take the general
path* (``decode.packet.decode_frame`` + ``dns.message.parse``), which gives the same outcome
for everything the fast path takes and reports whatever it does not (a malformed header, a
cut packet, TCP, fragments, IP options, a compressed question…; tests/test_fastpath.py).
Fields are read byte by byte after each length check (compiled, the buffer is a C pointer).
The scanner is one object reused for every frame: its fields hold the last frame's result.

Example:
    >>> import struct
    >>> q = struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0)
    >>> q += b"\\x03www\\x07example\\x00\\x00\\x01\\x00\\x01"
    >>> udp = struct.pack("!HHHH", 40000, 53, 8 + len(q), 0) + q
    >>> ip = bytes([0x45, 0, 0, 20 + len(udp), 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    >>> s = FastScanner(frozenset({53}))
    >>> s.frame(101, ip + udp, 0, len(ip + udp)), s.qr, s.qtype, (ip + udp)[s.q:s.qend]
    (True, False, 1, b'\\x03www\\x07example\\x00')
"""

from __future__ import annotations

from dnsguard.decode import packet as pk
from dnsguard.dns.message import VALID_OPCODES

_RAW_LINKTYPES = frozenset({pk.LINKTYPE_RAW, pk.LINKTYPE_RAW_OLD, pk.LINKTYPE_RAW_OPENBSD,
                            pk.LINKTYPE_IPV4, pk.LINKTYPE_IPV6})
_OPCODE_MASK = sum(1 << o for o in VALID_OPCODES)


def port_map(ports) -> bytes:
    """A 65,536-bit map of ``ports`` (the fast path tests a port with two byte reads)."""
    m = bytearray(8192)
    for p in ports:
        m[p >> 3] |= 1 << (p & 7)
    return bytes(m)


def _either_port(m: bytes, a: int, b: int) -> bool:
    """Whether port ``a`` or ``b`` is in the map ``m`` (:func:`port_map`)."""
    return bool((m[a >> 3] >> (a & 7)) & 1 or (m[b >> 3] >> (b & 7)) & 1)


class FastScanner:
    """Reads the common frame in place; see the module's description. After a True
    :meth:`frame`: ``src``/``dst`` (packed addresses), ``sport``/``dport``, ``q``/``qend``
    (the question name's wire form, ``data[q:qend]``, ending with its root octet),
    ``qtype``, ``rcode``, ``down`` (answer rdata octets), ``size`` (the DNS message's
    length), ``qr`` (a response)."""

    def __init__(self, ports, exempt_ports=None) -> None:
        self._port_map = port_map(ports)
        self.set_exempt(exempt_ports)
        self.src = self.dst = b""
        self.sport = self.dport = 0
        self.q = self.qend = self.qtype = self.rcode = self.down = self.size = 0
        self.qr = False

    def set_exempt(self, ports) -> None:
        """Frames on these ports take the general path (the allowlist exempts them)."""
        self._exempt_map = port_map(ports) if ports else None

    def frame(self, linktype: int, data: bytes, base: int, end: int) -> bool:
        """The frame at ``data[base:end]``: one UDP datagram in IPv4 without options (not a
        fragment) or in IPv6 without extension headers, not cut by the snaplen, on Ethernet
        (untagged, 802.1Q or QinQ), Linux cooked capture v1 or v2, or raw IP; to or from a
        DNS port; carrying a message :meth:`message` takes."""
        buf = data
        if linktype == 1:  # Ethernet, then any number of VLAN tags as decode_frame allows
            off = base + 14
            if off > end:
                return False
            etype = (buf[off - 2] << 8) | buf[off - 1]
            while (etype == 0x8100 or etype == 0x88A8 or etype == 0x9100 or etype == 0x9200
                   or etype == 0x9300):
                if off + 4 > end:
                    return False
                etype = (buf[off + 2] << 8) | buf[off + 3]
                off += 4
        elif linktype == 113:  # Linux cooked v1: the protocol at octets 14-15 of 16
            off = base + 16
            if off > end:
                return False
            etype = (buf[base + 14] << 8) | buf[base + 15]
        elif linktype == 276:  # Linux cooked v2: the protocol first, 20 octets in all
            off = base + 20
            if off > end:
                return False
            etype = (buf[base] << 8) | buf[base + 1]
        elif linktype in _RAW_LINKTYPES:  # raw IP: the version nibble says which
            off = base
            if off >= end:
                return False
            etype = buf[off] >> 4
            etype = 0x0800 if etype == 4 else 0x86DD if etype == 6 else 0
        else:
            return False
        if etype == 0x0800:
            if off + 28 > end or buf[off] != 0x45:
                return False
            total = (buf[off + 2] << 8) | buf[off + 3]
            ulen = (buf[off + 24] << 8) | buf[off + 25]
            if (buf[off + 9] != 17 or (buf[off + 6] & 0x3F) or buf[off + 7] or ulen < 20
                    or total < 20 + ulen or off + total > end):
                return False
            udp = off + 20
            alen = 4
        elif etype == 0x86DD:
            if off + 48 > end or buf[off] >> 4 != 6 or buf[off + 6] != 17:
                return False
            total = (buf[off + 4] << 8) | buf[off + 5]  # the payload length
            ulen = (buf[off + 44] << 8) | buf[off + 45]
            if ulen < 20 or ulen > total or off + 40 + total > end:
                return False
            udp = off + 40
            alen = 16
        else:
            return False
        sport = (buf[udp] << 8) | buf[udp + 1]
        dport = (buf[udp + 2] << 8) | buf[udp + 3]
        if not _either_port(self._port_map, sport, dport):
            return False
        em = self._exempt_map
        if em is not None and _either_port(em, sport, dport):
            return False
        if not self.message(data, udp + 8, udp + ulen):
            return False
        # Slices of ``buf``: compiled, a bytes object straight from the C pointer.
        a = udp - 2 * alen
        self.src = buf[a:a + alen]
        self.dst = buf[a + alen:udp]
        self.sport = sport
        self.dport = dport
        return True

    def message(self, data: bytes, start: int, stop: int) -> bool:
        """One DNS message at ``data[start:stop]`` with one question whose name is not
        compressed, its other records valid as ``dns.message.parse`` checks them."""
        if stop - start < 17:
            return False
        buf = data
        flags = (buf[start + 2] << 8) | buf[start + 3]
        if (buf[start + 4] or buf[start + 5] != 1
                or not (_OPCODE_MASK >> ((flags >> 11) & 0xF)) & 1):
            return False
        an = (buf[start + 6] << 8) | buf[start + 7]
        ns = (buf[start + 8] << 8) | buf[start + 9]
        ar = (buf[start + 10] << 8) | buf[start + 11]
        q = start + 12
        limit = min(stop, q + 255)
        # Walk the question name's labels (lengths only) to find where it ends.
        off = q
        while True:
            if off >= limit:
                return False  # runs past the message, or longer than 255 octets
            ln = buf[off]
            if not ln:
                break
            if ln > 63:
                return False  # a pointer or a reserved label type
            off += ln + 1
        off += 1
        if off + 4 > stop:
            return False
        qtype = (buf[off] << 8) | buf[off + 1]
        rcode = flags & 0xF
        down = 0
        if an or ns or ar:
            # Answer, authority and additional records: validated as parse() does; of the
            # answers only the rdata lengths are used, of the additional only OPT's rcode.
            p = off + 4
            i = 0
            total = an + ns + ar
            while i < total:
                if p >= stop:
                    return False
                ln = buf[p]
                if ln >= 0xC0:
                    owner_root = False
                    p += 2
                elif ln == 0:
                    owner_root = True
                    p += 1
                else:  # an uncompressed owner name (or one ending in a pointer): skip it
                    owner_root = False
                    while True:
                        if ln > 63:
                            if ln < 0xC0:
                                return False  # reserved label type: the general path says so
                            p += 2
                            break
                        p += ln + 1
                        if p >= stop:
                            return False
                        ln = buf[p]
                        if not ln:
                            p += 1
                            break
                if p + 10 > stop:
                    return False
                rdlen = (buf[p + 8] << 8) | buf[p + 9]
                if i < an:
                    down += rdlen
                elif i >= an + ns and buf[p] == 0 and buf[p + 1] == 41:  # OPT
                    if not owner_root:
                        return False
                    rcode |= buf[p + 4] << 4  # the extended rcode: the TTL's top octet
                p += 10 + rdlen
                if p > stop:
                    return False
                i += 1
        self.q, self.qend, self.qtype, self.rcode, self.down = q, off, qtype, rcode, down
        self.size = stop - start
        self.qr = bool(flags & 0x8000)
        return True
