"""Live capture: one AF_PACKET socket per interface (scapy's ``L2ListenSocket``), promiscuous,
with a kernel BPF filter so only DNS-port traffic ever reaches Python.

Frames come out as ``(ts, linktype, bytes, wirelen)``, exactly what a capture file gives, and
go into the same :meth:`dnsguard.pipeline.Pipeline.feed` as replay: there is one decoder.

The sockets are read raw (``recvfrom_into`` on the socket scapy opened) rather than through
scapy's dissectors, which would cost far more than the whole pipeline. Kernel drop counters
(``PACKET_STATISTICS``, reset by every read) are accumulated per interface.

Example (no privileges needed):
    >>> bpf_filter(frozenset({53}))
    'port 53 or (vlan and port 53)'
    >>> bpf_filter(frozenset({5353, 53}))
    '(port 53 or port 5353) or (vlan and (port 53 or port 5353))'
    >>> linktype_of(1), linktype_of(772), linktype_of(65534)
    (1, 1, 101)
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time

from dnsguard.decode.packet import LINKTYPE_ETHERNET, LINKTYPE_RAW

log = logging.getLogger(__name__)

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
_TPACKET_STATS = struct.Struct("II")  # struct tpacket_stats {tp_packets, tp_drops}

# ARPHRD_* (the hatype of the packet socket's address) → pcap link type of what recv gives.
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772  # Linux loopback frames carry an all-zero Ethernet header
_HATYPE_LINKTYPE = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,
    65534: LINKTYPE_RAW,  # ARPHRD_NONE: tun devices, WireGuard: bare IP packets
    776: LINKTYPE_RAW,  # ARPHRD_SIT
    778: LINKTYPE_RAW,  # ARPHRD_IPGRE (layer-3 GRE)
    823: LINKTYPE_RAW,  # ARPHRD_IP6GRE
    768: LINKTYPE_RAW,  # ARPHRD_TUNNEL (ipip)
    769: LINKTYPE_RAW,  # ARPHRD_TUNNEL6
    512: LINKTYPE_RAW,  # ARPHRD_PPP: SOCK_RAW on ppp gives the IP packet
}

SNAPLEN = 65535
# Socket receive buffer asked for, bytes (config ``socket_buffer``): SO_RCVBUFFORCE
# (CAP_NET_ADMIN) lifts it past net.core.rmem_max; without it the kernel clamps it there.
RCVBUF = 8 << 20
BATCH = 512  # frames read per readable socket before going back to select()


class CaptureOpenError(Exception):
    pass


def bpf_filter(ports: frozenset[int] | set[int]) -> str:
    """The kernel filter for DNS ports: UDP and TCP, IPv4 and IPv6, plain or VLAN-tagged."""
    ps = sorted(ports)
    if not ps:
        raise ValueError("no ports")
    one = " or ".join(f"port {p}" for p in ps)
    if len(ps) > 1:
        one = f"({one})"
    return f"{one} or (vlan and {one})"


def linktype_of(hatype: int) -> int | None:
    return _HATYPE_LINKTYPE.get(hatype)


class LiveInterface:
    """One capture socket."""

    def __init__(self, name: str, ports: frozenset[int], promisc: bool = True,
                 snaplen: int = SNAPLEN, rcvbuf: int = RCVBUF) -> None:
        # Imported here: scapy is needed by the daemon only, not by replay or the tests.
        from scapy.arch.linux import L2ListenSocket

        self.name = name
        self.filter = bpf_filter(ports)
        self.snaplen = snaplen
        scapy_log = logging.getLogger("scapy.runtime")
        level = scapy_log.level
        scapy_log.setLevel(logging.ERROR)  # "Unable to guess type" on lo, tun: not our concern
        try:
            self._sock = L2ListenSocket(iface=name, promisc=promisc, filter=self.filter)
        except (OSError, ImportError, ValueError) as e:
            raise CaptureOpenError(f"{name}: cannot open capture socket: {e}") from None
        except Exception as e:  # scapy raises Scapy_Exception for a bad filter or interface
            raise CaptureOpenError(f"{name}: cannot open capture socket: {e}") from None
        finally:
            scapy_log.setLevel(level)
        self.sock: socket.socket = self._sock.ins
        self.rcvbuf_asked = rcvbuf
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                break
            except OSError:
                continue
        # What the kernel granted: Linux doubles the value asked for (the other half is its
        # bookkeeping overhead) and, without CAP_NET_ADMIN, clamps it to net.core.rmem_max.
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # The kernel's counters so far cover scapy's set-up: a minimal buffer before bind()
        # (drops that are not the sensor falling behind) and frames it flushed unread. Reading
        # them resets them: counting starts with the socket as it will be read.
        try:
            self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
        except OSError:
            pass
        self.sock.setblocking(False)
        hatype = self.sock.getsockname()[3]
        lt = linktype_of(hatype)
        if lt is None:
            raise CaptureOpenError(f"{name}: unsupported interface type (ARPHRD {hatype}); "
                                   "supported: Ethernet, loopback, tun/raw-IP tunnels")
        self.hatype = hatype
        self.linktype = lt
        self.loopback = hatype == ARPHRD_LOOPBACK
        self._buf = bytearray(snaplen)
        self._view = memoryview(self._buf)
        self.frames = 0  # frames read by us
        self.kernel_packets = 0  # tp_packets, accumulated
        self.kernel_drops = 0  # tp_drops, accumulated
        self.read_errors = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, feed, limit: int = BATCH) -> int:
        """Read up to ``limit`` waiting frames into ``feed(ts, linktype, data, wirelen)``.
        A frame ``feed`` raises on is counted as read (``frames``), as are those before it
        in the batch; the exception goes to the caller."""
        recv = self.sock.recvfrom_into
        buf, view, size, lt = self._buf, self._view, self.snaplen, self.linktype
        skip_out = self.loopback
        n = 0
        try:
            for _ in range(limit):
                try:
                    wirelen, addr = recv(buf, size, socket.MSG_TRUNC)
                except BlockingIOError:
                    break
                except InterruptedError:
                    continue
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        break
                    self.read_errors += 1
                    if e.errno == errno.ENETDOWN:
                        break
                    raise
                # On loopback every packet is seen twice (leaving and arriving): keep one.
                if skip_out and addr[2] == PACKET_OUTGOING:
                    continue
                n += 1
                feed(time.time(), lt, bytes(view[:min(wirelen, size)]), wirelen)
        finally:
            self.frames += n
        return n

    def poll_stats(self) -> tuple[int, int]:
        """Add the kernel's counters since the last read (the read resets them)."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
        except OSError:
            return self.kernel_packets, self.kernel_drops
        packets, drops = _TPACKET_STATS.unpack(raw)
        self.kernel_packets += packets
        self.kernel_drops += drops
        return self.kernel_packets, self.kernel_drops

    def close(self) -> None:
        try:
            self.poll_stats()
        finally:
            self._sock.close()


def open_interfaces(names: list[str], ports: frozenset[int], promisc: bool = True,
                    snaplen: int = SNAPLEN, rcvbuf: int = RCVBUF) -> list[LiveInterface]:
    out: list[LiveInterface] = []
    try:
        for n in names:
            out.append(LiveInterface(n, ports, promisc, snaplen, rcvbuf))
    except CaptureOpenError:
        for i in out:
            i.close()
        raise
    return out
