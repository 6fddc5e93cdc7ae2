"""Reassemble DNS messages from TCP segments (RFC 1035 §4.2.2: 2-byte length prefix).

Handles several messages in one segment and one message split across segments, in-order
streams with retransmissions; a gap (lost segment) resets the flow's buffer and is counted.
Memory is bounded twice: a flow buffers at most one message (≤ 65,537 bytes) and the table holds
at most ``max_flows`` flows and ``max_bytes`` buffered bytes, evicting the least recently used.

Example:
    >>> r = TcpReassembler()
    >>> key = (b"a", 1, b"b", 53)
    >>> r.feed(key, 100, 0x18, b"\\x00\\x03ab")
    []
    >>> r.feed(key, 104, 0x18, b"c\\x00\\x01z")
    [b'abc', b'z']
"""

from __future__ import annotations

from collections import OrderedDict

SYN, FIN, RST = 0x02, 0x01, 0x04
MAX_MESSAGE = 65535


class TcpReassembler:
    """Per-flow stream buffers keyed by ``(src, sport, dst, dport)``."""

    def __init__(self, max_flows: int = 4096, max_bytes: int = 16 << 20) -> None:
        self.max_flows = max_flows
        self.max_bytes = max_bytes
        self.flows: OrderedDict[tuple, list] = OrderedDict()  # key -> [next_seq, bytearray]
        self.buffered = 0
        self.counters = {"gaps": 0, "evicted_flows": 0, "incomplete_at_close": 0,
                         "zero_length": 0}

    def feed(self, key: tuple, seq: int, flags: int, payload: bytes) -> list[bytes]:
        """Add one segment; return the DNS messages it completes (without length prefixes)."""
        flows = self.flows
        st = flows.get(key)
        if flags & SYN:
            if st is not None:
                self.buffered -= len(st[1])
            st = flows[key] = [(seq + 1) & 0xFFFFFFFF, bytearray()]
            seq = (seq + 1) & 0xFFFFFFFF  # the SYN takes one number: data (TFO) follows it
        out: list[bytes] = []
        if payload:
            if st is None:  # capture started mid-stream: assume a message boundary here
                st = flows[key] = [seq, bytearray()]
            else:
                flows.move_to_end(key)
            nxt, buf = st
            delta = (seq - nxt) & 0xFFFFFFFF
            if delta == 0:
                data = payload
            elif delta >= 0x80000000:  # seq before expected: retransmission, maybe overlapping
                overlap = (nxt - seq) & 0xFFFFFFFF
                data = payload[overlap:] if overlap < len(payload) else b""
            else:  # gap: a segment was lost, the rest of the current message is unknowable
                self.counters["gaps"] += 1
                self.buffered -= len(buf)
                buf.clear()
                data = payload
            if data:
                st[0] = (seq + len(payload)) & 0xFFFFFFFF
                buf += data
                self.buffered += len(data)
                out = self._extract(buf)
        if st is not None and flags & (FIN | RST):
            if st[1]:
                self.counters["incomplete_at_close"] += 1
            self._drop(key)
        elif len(flows) > self.max_flows or self.buffered > self.max_bytes:
            self._evict()
        return out

    def _extract(self, buf: bytearray) -> list[bytes]:
        out = []
        start = 0
        n = len(buf)
        while n - start >= 2:
            length = (buf[start] << 8) | buf[start + 1]
            if length == 0:
                self.counters["zero_length"] += 1
                start += 2
                continue
            if n - start - 2 < length:
                break
            out.append(bytes(buf[start + 2:start + 2 + length]))
            start += 2 + length
        if start:
            del buf[:start]
            self.buffered -= start
        return out

    def _drop(self, key: tuple) -> None:
        st = self.flows.pop(key, None)
        if st is not None:
            self.buffered -= len(st[1])

    def _evict(self) -> None:
        while self.flows and (len(self.flows) > self.max_flows or self.buffered > self.max_bytes):
            _, st = self.flows.popitem(last=False)
            self.buffered -= len(st[1])
            self.counters["evicted_flows"] += 1
