"""Decode link layer, IPv4/IPv6 and UDP/TCP down to the bytes a DNS port carries.

Every frame ends in exactly one outcome (see :data:`OUTCOMES`); frames that are not DNS-port
traffic stop here with a reason, cheaply, because on a busy tap they are most of the input.
Each length is checked before it is read.

Example:
    >>> import struct
    >>> udp = struct.pack("!HHHH", 40000, 53, 8 + 3, 0) + b"abc"
    >>> ip = bytes([0x45, 0, 0, 20 + len(udp), 0, 0, 0, 0, 64, 17, 0, 0]) + bytes([10, 0, 0, 1])
    >>> ip += bytes([10, 0, 0, 2]) + udp
    >>> d = decode_frame(LINKTYPE_RAW, ip, len(ip), frozenset({53}))
    >>> (d.sport, d.dport, d.payload)
    (40000, 53, b'abc')
"""

from __future__ import annotations

import socket
import struct
from functools import lru_cache

# --- outcomes: every frame is counted under exactly one -----------------------------------
DNS_QUERY = "dns_query"  # carried at least one DNS message, the first a query
DNS_RESPONSE = "dns_response"  # ... the first a response
DNS_PARTIAL = "dns_partial"  # TCP segment on a DNS port with no complete message (yet)
NOT_DNS = "not_dns"  # on a DNS port but not DNS at all (e.g. iodine raw-UDP mode)
MALFORMED = "malformed"  # claims to be DNS/IP/UDP/TCP but breaks the format (by reason)
NOT_DNS_PORT = "not_dns_port"  # not IP, not UDP/TCP, or no DNS port
UNSUPPORTED = "unsupported"  # understood but not handled: IP fragments, unknown link types
OUTCOMES = (DNS_QUERY, DNS_RESPONSE, DNS_PARTIAL, NOT_DNS, MALFORMED, NOT_DNS_PORT, UNSUPPORTED)

# --- link types (https://www.tcpdump.org/linktypes.html) ---------------------------------
LINKTYPE_NULL = 0  # BSD loopback, host byte order family
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_OLD = 12  # DLT_RAW on most BSDs (14 on OpenBSD)
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_LOOP = 108  # OpenBSD loopback, network byte order family
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback", LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
    LINKTYPE_RAW_OLD: "raw IP", LINKTYPE_RAW_OPENBSD: "raw IP", LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked v1", LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2",
}

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200, 0x9300})
BSD_AF_INET6 = frozenset({10, 24, 28, 30})  # AF_INET6 differs across BSDs/Linux
IPV6_EXT = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options

_u16 = struct.Struct("!H").unpack_from
_u16x2 = struct.Struct("!HH").unpack_from
_u32 = struct.Struct("!I").unpack_from
_tcp = struct.Struct("!HHIIBB").unpack_from


class Datagram:
    """A UDP datagram or TCP segment on a DNS port. Addresses stay packed bytes (cheap keys)."""

    __slots__ = ("src", "dst", "sport", "dport", "tcp", "payload", "cut", "seq", "flags")

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, tcp: bool,
                 payload: bytes, cut: bool, seq: int = 0, flags: int = 0) -> None:
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.tcp, self.payload, self.cut, self.seq, self.flags = tcp, payload, cut, seq, flags


class Dropped:
    """Why a frame carries nothing for DNS: an outcome and a reason (both fixed strings)."""

    __slots__ = ("outcome", "reason")

    def __init__(self, outcome: str, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    def __repr__(self) -> str:
        return f"Dropped({self.outcome}:{self.reason})"


# Preallocated: the hot path allocates nothing for frames it drops.
_D = {r: Dropped(o, r) for o, r in [
    (NOT_DNS_PORT, "non_ip"), (NOT_DNS_PORT, "other_protocol"), (NOT_DNS_PORT, "other_port"),
    (MALFORMED, "link_header"), (MALFORMED, "ip_header"), (MALFORMED, "ip_version"),
    (MALFORMED, "udp_header"), (MALFORMED, "tcp_header"), (MALFORMED, "ipv6_ext_header"),
    (UNSUPPORTED, "ip_fragment"), (UNSUPPORTED, "link_type"),
]}


@lru_cache(maxsize=65536)
def ip_text(packed: bytes) -> str:
    """Presentation form of a packed IPv4/IPv6 address (cached: few distinct hosts talk DNS)."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    return socket.inet_ntop(socket.AF_INET6, packed)


def decode_frame(linktype: int, data: bytes, wirelen: int,
                 ports: frozenset[int]) -> Datagram | Dropped:
    """Decode one frame to a :class:`Datagram` on a DNS port, or say why not (:class:`Dropped`)."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return _D["link_header"]
        (etype,) = _u16(data, 12)
        off = 14
        while etype in VLAN_TPIDS:  # 802.1Q, QinQ (stacked tags)
            if n < off + 4:
                return _D["link_header"]
            (etype,) = _u16(data, off + 2)
            off += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return _D["link_header"]
        (etype,) = _u16(data, 14)
        off = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return _D["link_header"]
        (etype,) = _u16(data, 0)
        off = 20
    elif linktype in (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OPENBSD,
                      LINKTYPE_IPV4, LINKTYPE_IPV6):
        if n < 1:
            return _D["ip_header"]
        etype = ETH_IPV4 if data[0] >> 4 == 4 else ETH_IPV6 if data[0] >> 4 == 6 else 0
        if not etype:
            return _D["ip_version"]
        off = 0
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return _D["link_header"]
        fam = _u32(data, 0)[0] if linktype == LINKTYPE_LOOP else \
            struct.unpack_from("<I", data, 0)[0]
        if fam > 0xFFFF:  # written in the other byte order than ours
            fam = struct.unpack_from("<I", data, 0)[0] if linktype == LINKTYPE_LOOP else \
                _u32(data, 0)[0]
        etype = ETH_IPV4 if fam == 2 else ETH_IPV6 if fam in BSD_AF_INET6 else 0
        off = 4
    else:
        return _D["link_type"]

    if etype == ETH_IPV4:
        if n < off + 20:
            return _D["ip_header"]
        vihl = data[off]
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or n < off + ihl:
            return _D["ip_header"]
        total, fragw = _u16(data, off + 2)[0], _u16(data, off + 6)[0]
        if total < ihl:
            return _D["ip_header"]
        if fragw & 0x3FFF:  # MF set or offset != 0
            return _D["ip_fragment"]
        proto = data[off + 9]
        src = data[off + 12:off + 16]
        dst = data[off + 16:off + 20]
        end = off + total  # drop Ethernet padding after the IP packet
        off += ihl
    elif etype == ETH_IPV6:
        if n < off + 40:
            return _D["ip_header"]
        if data[off] >> 4 != 6:
            return _D["ip_version"]
        plen = _u16(data, off + 4)[0]
        proto = data[off + 6]
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        end = off + 40 + plen
        off += 40
        while proto in IPV6_EXT or proto == 51 or proto == 44:
            if proto == 44:
                return _D["ip_fragment"]
            if n < off + 2:
                return _D["ipv6_ext_header"]
            hlen = data[off + 1]
            # AH (51) counts 4-octet units minus 2, the others 8-octet units minus 1: the
            # length follows the header being skipped, not the next one.
            step = (hlen + 2) * 4 if proto == 51 else (hlen + 1) * 8
            proto = data[off]
            off += step
        if off > end:
            return _D["ipv6_ext_header"]
    else:
        return _D["non_ip"]

    cut = end > n  # the capture kept less than the IP packet (snaplen)
    if cut:
        end = n
    if proto == 17:
        if end < off + 8:
            return _D["udp_header"]
        sport, dport = _u16x2(data, off)
        if sport not in ports and dport not in ports:
            return _D["other_port"]
        ulen = _u16(data, off + 4)[0]
        if ulen < 8:
            return _D["udp_header"]
        stop = off + ulen
        if stop > end:
            if not cut:
                return _D["udp_header"]
            stop = end
        return Datagram(src, dst, sport, dport, False, data[off + 8:stop], cut)
    if proto == 6:
        if end < off + 20:
            return _D["tcp_header"]
        sport, dport, seq, _ack, doff, flags = _tcp(data, off)
        if sport not in ports and dport not in ports:
            return _D["other_port"]
        hl = (doff >> 4) * 4
        if hl < 20 or end < off + hl:
            return _D["tcp_header"]
        return Datagram(src, dst, sport, dport, True, data[off + hl:end], cut, seq, flags)
    return _D["other_protocol"]
