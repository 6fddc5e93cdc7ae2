"""Fanout: several worker processes share one interface's traffic (``PACKET_FANOUT``).

Each worker opens its own capture on the interface and joins the interface's fanout group
with a classic-BPF program (``PACKET_FANOUT_CBPF``) that picks the worker for each frame: the
kernel runs it and takes the result modulo the number of sockets in the group (``% num`` in
``fanout_demux_bpf``, net/packet/af_packet.c). :func:`fanout_program` returns a symmetric hash
of the IP address pair, so both directions between two hosts (a client and its resolver, a
resolver and an authoritative server) reach the same worker, and a TCP stream is whole on
one worker. :func:`fanout_index` computes the same number in Python (tests and docs).

Example (no privileges needed):
    >>> import ipaddress
    >>> a, b = ipaddress.ip_address("192.0.2.1").packed, ipaddress.ip_address("192.0.2.53").packed
    >>> fanout_index(a, b, 4) == fanout_index(b, a, 4)
    True
"""

from __future__ import annotations

import ctypes
import socket

SOL_PACKET = 263
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6


# Classic BPF opcodes (<linux/filter.h>) and the kernel's negative-offset extensions: loads at
# SKF_NET_OFF + k read the network header wherever the frame's data starts (received frames
# start there, transmitted ones at the link header), SKF_AD_OFF + SKF_AD_PROTOCOL is
# skb->protocol (the ethertype after any VLAN tag the kernel took off).
_LD_W_ABS, _LD_H_ABS, _JEQ_K, _JA = 0x20, 0x28, 0x15, 0x05
_TAX, _XOR_X, _RSH_K, _MUL_K, _RET_A, _RET_K = 0x07, 0xAC, 0x74, 0x24, 0x16, 0x06
SKF_AD_PROTOCOL = -0x1000
SKF_NET_OFF = -0x100000
_MIX = 0x9E3779B1  # Fibonacci hashing: the product's high bits depend on every input bit


def _ins(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return code, jt, jf, k & 0xFFFFFFFF


def fanout_program() -> list[tuple[int, int, int, int]]:
    """The classic-BPF fanout program: the XOR of the source and destination address words
    (IPv4: one each, IPv6: four each: the XOR is the same in both directions), folded and
    multiplied so that ``% workers`` (done by the kernel) spreads pairs evenly. Frames that
    are not IP go to worker 0. :func:`fanout_index` is the same computation in Python.

    >>> len(fanout_program())
    37
    """
    v4 = [_ins(_LD_W_ABS, SKF_NET_OFF + 12), _ins(_TAX), _ins(_LD_W_ABS, SKF_NET_OFF + 16),
          _ins(_XOR_X)]
    v6 = [_ins(_LD_W_ABS, SKF_NET_OFF + 8)]
    for off in range(12, 40, 4):  # the other 7 words of the source and destination
        v6 += [_ins(_TAX), _ins(_LD_W_ABS, SKF_NET_OFF + off), _ins(_XOR_X)]
    mix = [_ins(_TAX), _ins(_RSH_K, 16), _ins(_XOR_X), _ins(_MUL_K, _MIX), _ins(_RSH_K, 16),
           _ins(_RET_A)]
    # Jump offsets count from the next instruction.
    return [_ins(_LD_H_ABS, SKF_AD_PROTOCOL),
            _ins(_JEQ_K, 0x0800, jt=0, jf=len(v4) + 1),  # not IPv4: to the IPv6 test
            *v4,
            _ins(_JA, 1 + len(v6)),  # over the IPv6 test and loads, to the mixing
            _ins(_JEQ_K, 0x86DD, jt=0, jf=len(v6) + len(mix)),  # neither: to "ret #0"
            *v6, *mix,
            _ins(_RET_K, 0)]


def fanout_index(src: bytes, dst: bytes, workers: int) -> int:
    """The worker the kernel gives a packet between ``src`` and ``dst`` (packed IPv4 or IPv6
    addresses) under :func:`fanout_program`.

    >>> fanout_index(bytes(4), bytes(4), 3)
    0
    """
    a = 0
    for i in range(0, len(src), 4):
        a ^= int.from_bytes(src[i:i + 4], "big") ^ int.from_bytes(dst[i:i + 4], "big")
    a ^= a >> 16
    a = (a * _MIX) & 0xFFFFFFFF
    return (a >> 16) % workers


_ETHER_VLAN = frozenset({0x8100, 0x88A8, 0x9100})


def shard_of(linktype: int, data: bytes, workers: int) -> int:
    """The worker a captured frame goes to, as the kernel's fanout would send it (replay
    split over in-process workers, :class:`dnsguard.workers.ShardedPipelines`): the addresses
    of an IPv4 or IPv6 packet on Ethernet (VLAN tags skipped, as the kernel takes them off),
    Linux cooked v1/v2 or raw IP; anything else to worker 0.

    >>> shard_of(101, bytes(20), 4)
    0
    """
    if workers <= 1:
        return 0
    off, proto = 0, -1
    if linktype == 1:
        off, proto = 14, int.from_bytes(data[12:14], "big")
        while proto in _ETHER_VLAN and len(data) >= off + 4:
            proto = int.from_bytes(data[off + 2:off + 4], "big")
            off += 4
    elif linktype == 113:  # Linux cooked v1: protocol at 14, 16-byte header
        off, proto = 16, int.from_bytes(data[14:16], "big")
    elif linktype == 276:  # Linux cooked v2: protocol first, 20-byte header
        off, proto = 20, int.from_bytes(data[0:2], "big")
    elif linktype in (101, 12, 14, 228, 229) and data:
        proto = {4: 0x0800, 6: 0x86DD}.get(data[0] >> 4, -1)
    if proto == 0x0800 and len(data) >= off + 20:
        return fanout_index(data[off + 12:off + 16], data[off + 16:off + 20], workers)
    if proto == 0x86DD and len(data) >= off + 40:
        return fanout_index(data[off + 8:off + 24], data[off + 24:off + 40], workers)
    return 0


def sock_fprog(prog: list[tuple[int, int, int, int]]):
    """A ``struct sock_fprog`` (kept alive by the caller until setsockopt returns)."""
    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]

    arr = (SockFilter * len(prog))(*(SockFilter(*ins) for ins in prog))
    fp = SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(SockFilter)))
    fp._keep = arr  # the instructions must outlive the structure that points to them
    return fp


def join_fanout(sock: socket.socket, group: int) -> None:
    """Join ``sock`` (bound to its interface) to fanout group ``group`` (0..65535, one per
    interface and sensor) and give the group the program (the same from every member)."""
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group & 0xFFFF) | (PACKET_FANOUT_CBPF << 16))
    fp = sock_fprog(fanout_program())
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, bytes(fp))
