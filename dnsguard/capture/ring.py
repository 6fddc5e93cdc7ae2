"""Live capture through a memory-mapped TPACKET_V3 ring (``PACKET_RX_RING``).

The kernel writes captured frames into blocks of a ring shared with the process and hands
over a whole block at a time (when it is full, or ``frame_timeout`` ms after its first frame):
no system call and no copy into a socket buffer per frame, one ``poll`` wake-up per block.
This is how libpcap, Suricata and Zeek read AF_PACKET at high rates; see
``Documentation/networking/packet_mmap.rst`` in the kernel tree for the layout read here.

Layout (all fields host byte order; offsets checked against ``<linux/if_packet.h>``)::

    block:  tpacket_block_desc { u32 version; u32 offset_to_priv;
            tpacket_hdr_v1 { u32 block_status; u32 num_pkts; u32 offset_to_first_pkt; ... } }
    frame:  tpacket3_hdr { u32 tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len,
                           tp_status; u16 tp_mac, tp_net; ... }   (48 bytes, then)
            sockaddr_ll  { u16 family, protocol; i32 ifindex; u16 hatype; u8 pkttype; ... }

A frame is passed to ``feed`` as ``bytes`` copied out of the ring (the pipeline keeps
references to some of them), with the kernel's receive timestamp (ns resolution). A block is
given back to the kernel (``block_status = TP_STATUS_KERNEL``) once every frame in it has been
fed; a frame ``feed`` raises on is counted and skipped, and reading resumes after it.

With several worker processes every worker opens its own ring and joins one fanout group per
interface (:mod:`dnsguard.capture.fanout`).

Example (no privileges needed):
    >>> g = RingGeometry()
    >>> g.bytes, g.problem()
    (33554432, None)
    >>> RingGeometry(block_size=100_000).problem()
    'block_size 100000 must be a power of two from 65536 to 134217728 bytes'
"""

from __future__ import annotations

import errno
import logging
import mmap
import socket
import struct
from dataclasses import dataclass

from dnsguard.capture.fanout import join_fanout, sock_fprog
from dnsguard.capture.live import (
    ARPHRD_LOOPBACK,
    PACKET_OUTGOING,
    SOL_PACKET,
    Capture,
    CaptureOpenError,
    bpf_filter,
    libpcap_hint,
    linktype_of,
)

log = logging.getLogger(__name__)

# <linux/if_packet.h>
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
ETH_P_ALL = 3
SO_ATTACH_FILTER = 26
_DROP_ALL = [(0x06, 0, 0, 0)]  # "ret #0": every frame refused, none counted
FRAME_SIZE = 2048  # tp_frame_size: only checked by the kernel for TPACKET_V3 (frames pack)

_REQ3 = struct.Struct("=7I")  # tpacket_req3
_STATS3 = struct.Struct("=III")  # tpacket_stats_v3 {tp_packets, tp_drops, tp_freeze_q_cnt}
_BLOCK = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt (at offset 8)
_FRAME = struct.Struct("=IIIIIIH")  # next_offset, sec, nsec, snaplen, len, status, mac
_HDR3 = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): the sockaddr_ll follows
_PKTTYPE = _HDR3 + 10  # sockaddr_ll.sll_pkttype
_FIRST_MIN = 48  # sizeof(struct tpacket_block_desc): the first frame is after it
READ_FRAMES = 4096  # frames fed per read() call before the daemon's loop looks up again

# Limits of the ring's configuration (config keys ring.block_size/block_count/frame_timeout).
BLOCK_SIZE_RANGE = (1 << 16, 1 << 27)  # 64 KiB (a DNS frame of any size fits) to 128 MiB
BLOCK_COUNT_RANGE = (2, 1 << 16)
FRAME_TIMEOUT_RANGE = (1, 10_000)  # ms
RING_MAX_BYTES = 1 << 32  # 4 GiB per ring


@dataclass(frozen=True)
class RingGeometry:
    """The ring's shape: ``block_count`` blocks of ``block_size`` bytes (a power of two,
    a multiple of the page size); a block is handed over when full or ``frame_timeout`` ms
    after its first frame."""

    # 128 x 256 KiB: 32 MiB, ~200,000 DNS frames when traffic is heavy; when it is light
    # every block is handed over after frame_timeout, so the ring then holds
    # block_count x frame_timeout = 6.4 s of traffic: the longest pause of the reader
    # (a reload, a checkpoint, a collection) it absorbs without a drop.
    block_size: int = 1 << 18
    block_count: int = 128
    frame_timeout: int = 50

    @property
    def bytes(self) -> int:
        return self.block_size * self.block_count

    def problem(self) -> str | None:
        """What is wrong with this geometry, or None (config.py reports it with file:line)."""
        lo, hi = BLOCK_SIZE_RANGE
        b = self.block_size
        if not lo <= b <= hi or b & (b - 1):
            return f"block_size {b} must be a power of two from {lo} to {hi} bytes"
        lo, hi = BLOCK_COUNT_RANGE
        if not lo <= self.block_count <= hi:
            return f"block_count {self.block_count} must be from {lo} to {hi}"
        if self.bytes > RING_MAX_BYTES:
            return (f"the ring would take {self.bytes} bytes (block_size x block_count); "
                    f"at most {RING_MAX_BYTES}")
        lo, hi = FRAME_TIMEOUT_RANGE
        if not lo <= self.frame_timeout <= hi:
            return f"frame_timeout {self.frame_timeout} must be from {lo} to {hi} ms"
        return None


# --- the ring ---------------------------------------------------------------------------------
class RingInterface(Capture):
    """One TPACKET_V3 ring on one interface (optionally one member of a fanout group)."""

    kind = "ring"

    def __init__(self, name: str, ports: frozenset[int], promisc: bool = True,
                 geometry: RingGeometry | None = None, fanout: int | None = None) -> None:
        super().__init__(name, bpf_filter(ports))
        g = geometry or RingGeometry()
        if g.problem():
            raise CaptureOpenError(f"{name}: ring: {g.problem()}")
        self.geometry = g
        self.fanout = fanout
        self._mm: mmap.mmap | None = None
        # Protocol 0: the socket receives nothing until bind(), which comes after the filter
        # and the ring are in place (no unfiltered frame, no frame outside the ring).
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as e:
            raise CaptureOpenError(f"{name}: cannot open capture socket: {e}") from None
        try:
            self._setup(promisc)
        except (OSError, ValueError, ImportError) as e:
            self._close_quietly()
            raise CaptureOpenError(f"{name}: cannot set up the capture ring: {e}"
                                   f"{libpcap_hint(e)}") from None
        except Exception as e:  # scapy raises its own exception class for a bad filter
            self._close_quietly()
            raise CaptureOpenError(f"{name}: cannot set up the capture ring: {e}"
                                   f"{libpcap_hint(e)}") from None

    def _setup(self, promisc: bool) -> None:
        from scapy.arch.common import compile_filter, free_filter

        s, g, name = self.sock, self.geometry, self.name
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        # The filter is compiled now (libpcap may need the privileges the process is about to
        # drop) and attached by start(); until then a filter that refuses everything.
        bp = compile_filter(self.filter, name)
        try:
            self._program = [(bp.bf_insns[i].code, bp.bf_insns[i].jt, bp.bf_insns[i].jf,
                              bp.bf_insns[i].k & 0xFFFFFFFF) for i in range(bp.bf_len)]
        finally:
            free_filter(bp)
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(sock_fprog(_DROP_ALL)))
        req = _REQ3.pack(g.block_size, g.block_count, FRAME_SIZE,
                         g.block_size // FRAME_SIZE * g.block_count, g.frame_timeout, 0, 0)
        try:
            s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        except OSError as e:
            if e.errno == errno.ENOMEM:
                raise OSError(e.errno, f"the kernel could not allocate {g.block_count} blocks "
                              f"of {g.block_size} bytes (lower ring.block_size or "
                              "ring.block_count)") from None
            raise
        self._mm = mmap.mmap(s.fileno(), g.bytes, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        # Bound to the interface with protocol 0: nothing is captured until start().
        s.bind((name, 0))
        if promisc:
            mreq = struct.pack("iHH8s", socket.if_nametoindex(name), PACKET_MR_PROMISC, 0, b"")
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        hatype = s.getsockname()[3]
        lt = linktype_of(hatype)
        if lt is None:
            raise ValueError(f"unsupported interface type (ARPHRD {hatype}); supported: "
                             "Ethernet, loopback, tun/raw-IP tunnels")
        self.hatype, self.linktype = hatype, lt
        self.loopback = hatype == ARPHRD_LOOPBACK
        s.setblocking(False)
        self._block = 0  # the block read next
        self._left = 0  # frames of the current block not yet fed (0: block not started)
        self._pos = 0  # offset of the next frame in the ring

    def start(self) -> None:
        """Capture from now on: bind to every protocol and join the fanout group. Done when
        the read loop is about to run (after the daemon's set-up and privilege drop, which
        need no capture: a ring filling meanwhile would hold only block_count x
        frame_timeout of light traffic). Neither step needs a privilege."""
        if self.started:
            return
        s = self.sock
        s.bind((self.name, ETH_P_ALL))  # still refusing everything (see _setup)
        if self.fanout is not None:
            join_fanout(s, self.fanout)  # the group needs a bound, running socket
        s.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)  # counting starts here
        # Only now the DNS filter: no frame reached this socket before it was in its fanout
        # group (a worker bound but not yet a member would get every frame, as duplicates).
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(sock_fprog(self._program)))
        self.started = True

    def _close_quietly(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, feed, limit: int = READ_FRAMES) -> int:
        """Feed the frames of the blocks the kernel has handed over, up to about ``limit``
        (whole blocks but the last), as ``feed(ts, linktype, data, wirelen)``. A frame
        ``feed`` raises on counts as read; the exception goes to the caller and the next
        call resumes after that frame."""
        mm = self._mm
        if mm is None:
            return 0
        bsize, nblocks, lt = self.geometry.block_size, self.geometry.block_count, self.linktype
        skip_out = self.loopback
        unpack_frame, unpack_block = _FRAME.unpack_from, _BLOCK.unpack_from
        n = 0
        block, left, pos = self._block, self._left, self._pos
        try:
            while n < limit:
                base = block * bsize
                if not left:
                    status, num, first = unpack_block(mm, base + 8)
                    if not status & TP_STATUS_USER:
                        break
                    if num == 0 or not _FIRST_MIN <= first < bsize:
                        left, pos = 0, base  # nothing usable: give the block back
                    else:
                        left, pos = num, base + first
                end = base + bsize
                while left:
                    if pos + _HDR3 + 20 > end:
                        self.read_errors += 1
                        left = 0
                        break
                    nxt, sec, nsec, snap, wirelen, _st, mac = unpack_frame(mm, pos)
                    start = pos + mac
                    here = pos
                    left -= 1
                    pos += nxt
                    if start + snap > end or (left and (nxt < _HDR3 or pos >= end)):
                        self.read_errors += 1  # a frame outside its block: drop the rest
                        left = 0
                        break
                    if skip_out and mm[here + _PKTTYPE] == PACKET_OUTGOING:
                        continue
                    n += 1
                    feed(sec + nsec * 1e-9, lt, mm[start:start + snap], wirelen)
                    if n >= limit:
                        break
                if not left:
                    mm[base + 8:base + 12] = b"\0\0\0\0"  # TP_STATUS_KERNEL: the kernel's again
                    block = block + 1 if block + 1 < nblocks else 0
        finally:
            self._block, self._left, self._pos = block, left, pos
            self.frames += n
        return n

    def poll_stats(self) -> tuple[int, int]:
        """Add the kernel's counters since the last read (the read resets them): packets
        (drops included), drops, and ``tp_freeze_q_cnt`` (times the ring was full, every block
        with the process, so the kernel froze the queue and dropped until one came back)."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
        except OSError:
            return self.kernel_packets, self.kernel_drops
        packets, drops, freezes = _STATS3.unpack(raw)
        self.kernel_packets += packets
        self.kernel_drops += drops
        self.kernel_freezes += freezes
        return self.kernel_packets, self.kernel_drops

    def describe(self) -> tuple[int, str]:
        g = self.geometry
        fan = f", fanout group {self.fanout}" if self.fanout is not None else ""
        return logging.INFO, (f"{self.name}: TPACKET_V3 ring of {g.block_count} blocks x "
                              f"{g.block_size} bytes ({g.bytes >> 20} MiB), blocks handed "
                              f"over when full or after {g.frame_timeout} ms{fan}")

    def close(self) -> None:
        try:
            self.poll_stats()
        finally:
            self._close_quietly()
