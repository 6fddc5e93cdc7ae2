"""Live capture: one AF_PACKET capture per interface, promiscuous, with a kernel BPF filter so
only DNS-port traffic ever reaches Python. Two kinds (config ``capture:``), both
:class:`Capture`: a memory-mapped TPACKET_V3 ring (:mod:`dnsguard.capture.ring`, the default)
and, as a fallback, a plain socket read one frame per system call (:class:`LiveInterface`,
scapy's ``L2ListenSocket``); :func:`open_capture` opens either.

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
from dataclasses import dataclass, field

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


CAPTURE_KINDS = ("ring", "socket")


class CaptureOpenError(Exception):
    pass


class Capture:
    """What the daemon reads frames from: one interface, its kernel filter and counters.

    ``frames``: frames read by us; ``kernel_packets``: frames that passed the kernel filter,
    drops included; ``kernel_drops``: dropped because the buffer or ring was full;
    ``kernel_freezes``: times a ring's queue was frozen full (0 for a socket)."""

    kind = ""

    def __init__(self, name: str, filter: str) -> None:
        self.name = name
        self.filter = filter
        self.linktype = LINKTYPE_ETHERNET
        self.loopback = False
        self.frames = 0
        self.kernel_packets = 0
        self.kernel_drops = 0
        self.kernel_freezes = 0
        self.read_errors = 0
        self.started = False

    def start(self) -> None:
        """Begin capturing, if opening did not (the ring waits for this: see its start)."""
        self.started = True

    def fileno(self) -> int:
        raise NotImplementedError

    def read(self, feed, limit: int) -> int:
        """Feed waiting frames as ``feed(ts, linktype, data, wirelen)``; the number fed."""
        raise NotImplementedError

    def poll_stats(self) -> tuple[int, int]:
        raise NotImplementedError

    def describe(self) -> tuple[int, str]:
        """(log level, line) saying what was opened, for the daemon's log."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def carry_counters(self, old: Capture) -> None:
        """Continue ``old``'s counters (a reopen): the metrics stay monotonic."""
        self.frames, self.kernel_packets = old.frames, old.kernel_packets
        self.kernel_drops, self.kernel_freezes = old.kernel_drops, old.kernel_freezes
        self.read_errors = old.read_errors


@dataclass
class CaptureOptions:
    """How to open a capture: its kind, promiscuous mode, the socket's receive buffer (socket
    kind), the ring's shape (ring kind) and the fanout group (ring kind, several workers)."""

    kind: str = "ring"
    promisc: bool = True
    rcvbuf: int = RCVBUF
    geometry: object = field(default=None)  # ring.RingGeometry; None: its defaults
    fanout: int | None = None  # base of the fanout group ids: + the interface's index


def fanout_group(base: int | None, name: str) -> int | None:
    """The fanout group of interface ``name``: one per interface and sensor (a group is
    bound to one device), the same in every worker of the sensor."""
    if base is None:
        return None
    try:
        return (base + socket.if_nametoindex(name)) & 0xFFFF
    except OSError:
        return base & 0xFFFF


def open_capture(name: str, ports: frozenset[int], opts: CaptureOptions) -> Capture:
    group = fanout_group(opts.fanout, name)
    if opts.kind == "socket":
        return LiveInterface(name, ports, opts.promisc, rcvbuf=opts.rcvbuf, fanout=group)
    from dnsguard.capture.ring import RingInterface

    return RingInterface(name, ports, opts.promisc, opts.geometry, group)


# scapy compiles the filter expression with libpcap (through ctypes); a minimal system (a
# Debian container, a cloud image) may not have it, and scapy then says only "libpcap is not
# available". Found by tests/test_systemd_nspawn.py in a debootstrapped Debian 12.
LIBPCAP_HINT = ("scapy compiles the kernel filter with libpcap: install it "
                "(Debian/Ubuntu: apt-get install libpcap0.8; Fedora/RHEL: dnf install libpcap)")


def libpcap_hint(e: Exception) -> str:
    """``"; install libpcap ..."`` when ``e`` is scapy saying libpcap is missing, else ``""``."""
    return f"; {LIBPCAP_HINT}" if "libpcap" in str(e) else ""


def _open_error(name: str, e: Exception) -> CaptureOpenError:
    return CaptureOpenError(f"{name}: cannot open capture socket: {e}{libpcap_hint(e)}")


def check_filter(ports: frozenset[int] | set[int]) -> str:
    """Compile the kernel filter for ``ports`` as capture will (no privileges needed): the
    expression, or :class:`CaptureOpenError` saying what is missing (``check-config`` runs it,
    so a host without libpcap fails at ``ExecStartPre``, with the fix in the message)."""
    from scapy.arch.common import compile_filter

    expr = bpf_filter(ports)
    try:
        compile_filter(expr, linktype=1)  # DLT_EN10MB; any link type proves libpcap is there
    except (OSError, ImportError) as e:
        raise CaptureOpenError(f"cannot compile the capture filter {expr!r}: {e}; "
                               f"{LIBPCAP_HINT}") from None
    return expr


def bpf_filter(ports: frozenset[int] | set[int]) -> str:
    """The kernel filter for DNS ports: UDP and TCP, IPv4 and IPv6, plain or VLAN-tagged."""
    ps = sorted(ports)
    if not ps:
        raise ValueError("no ports")
    one = " or ".join(f"port {p}" for p in ps)
    if len(ps) > 1:
        one = f"({one})"
    return f"{one} or (vlan and {one})"


def missing_interfaces(names: list[str]) -> list[str]:
    """Those of ``names`` that are not network interfaces of this host (this network
    namespace). Raises ``OSError`` when the interfaces cannot be listed: the caller says the
    names were not checked.

    >>> missing_interfaces(["lo", "nonexistent0"])
    ['nonexistent0']
    """
    present = {n for _, n in socket.if_nameindex()}
    return [n for n in names if n not in present]


def interface_names() -> list[str]:
    """This host's interfaces (for an error message), or [] when they cannot be listed."""
    try:
        return sorted(n for _, n in socket.if_nameindex())
    except OSError:
        return []


def linktype_of(hatype: int) -> int | None:
    return _HATYPE_LINKTYPE.get(hatype)


class LiveInterface(Capture):
    """One capture socket, read one frame per system call."""

    kind = "socket"

    def __init__(self, name: str, ports: frozenset[int], promisc: bool = True,
                 snaplen: int = SNAPLEN, rcvbuf: int = RCVBUF,
                 fanout: int | None = None) -> None:
        # Imported here: scapy is needed by the daemon only, not by replay or the tests.
        from scapy.arch.linux import L2ListenSocket

        super().__init__(name, bpf_filter(ports))
        self.snaplen = snaplen
        scapy_log = logging.getLogger("scapy.runtime")
        level = scapy_log.level
        scapy_log.setLevel(logging.ERROR)  # "Unable to guess type" on lo, tun: not our concern
        try:
            self._sock = L2ListenSocket(iface=name, promisc=promisc, filter=self.filter)
        except (OSError, ImportError, ValueError) as e:
            raise _open_error(name, e) from None
        except Exception as e:  # scapy raises Scapy_Exception for a bad filter or interface
            raise _open_error(name, e) from None
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
        if fanout is not None:
            from dnsguard.capture.fanout import join_fanout

            try:
                join_fanout(self.sock, fanout)
            except OSError as e:
                self._sock.close()
                raise CaptureOpenError(f"{name}: cannot join fanout group {fanout}: "
                                       f"{e}") from None
        self.fanout = fanout
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

    def describe(self) -> tuple[int, str]:
        """The receive buffer the kernel granted (getsockopt SO_RCVBUF). Linux reports twice
        the value asked for (half is its bookkeeping); less than that means SO_RCVBUFFORCE was
        refused (no CAP_NET_ADMIN) and net.core.rmem_max clamped it."""
        got, asked = self.rcvbuf, self.rcvbuf_asked
        if got >= min(2 * asked, 2147483646):  # the kernel doubles at most INT_MAX / 2
            return logging.INFO, (f"{self.name}: socket receive buffer {got} bytes "
                                  f"(socket_buffer {asked}; the kernel reports twice the "
                                  "value, half of it for its bookkeeping)")
        rmem = _rmem_max()
        return logging.WARNING, (
            f"{self.name}: socket receive buffer only {got} bytes, socket_buffer asks "
            f"{asked}: SO_RCVBUFFORCE was refused (no CAP_NET_ADMIN), so net.core.rmem_max "
            f"({rmem if rmem is not None else 'unknown'}) applies; grant CAP_NET_ADMIN or "
            "raise net.core.rmem_max, or frames are dropped sooner in bursts")

    def close(self) -> None:
        try:
            self.poll_stats()
        finally:
            self._sock.close()


def _rmem_max() -> int | None:
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def open_interfaces(names: list[str], ports: frozenset[int],
                    opts: CaptureOptions | None = None) -> list[Capture]:
    """Open a capture on each interface (all or none: a failure closes those opened)."""
    opts = opts or CaptureOptions()
    out: list[Capture] = []
    try:
        for n in names:
            out.append(open_capture(n, ports, opts))
    except CaptureOpenError:
        for i in out:
            i.close()
        raise
    return out
