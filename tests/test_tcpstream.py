"""DNS over TCP reassembly: message framing, retransmissions, gaps, closing, memory bounds and
sequence-number wraparound."""

from __future__ import annotations

import struct

import pytest

from conftest import dns_query
from dnsguard.decode.tcpstream import FIN, RST, SYN, TcpReassembler

ACK_PSH = 0x18
KEY = (b"\xc0\x00\x02\x0a", 40000, b"\xc6\x33\x64\x35", 53)


def framed(*msgs: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in msgs)


def check_accounting(r: TcpReassembler) -> None:
    """``buffered`` is exactly what the flows hold (the memory bound relies on it)."""
    assert r.buffered == sum(len(st[1]) for st in r.flows.values())
    assert r.buffered >= 0


@pytest.fixture
def r():
    return TcpReassembler()


MSGS = [dns_query(f"m{i}.example.com", qid=i) for i in range(4)]


def test_several_messages_in_one_segment(r):
    assert r.feed(KEY, 1, ACK_PSH, framed(*MSGS)) == MSGS
    check_accounting(r)
    assert r.buffered == 0


def test_one_message_split_across_three_segments(r):
    data = framed(MSGS[0])
    a, b = 1, 17  # the first cut splits the length prefix itself
    assert r.feed(KEY, 100, ACK_PSH, data[:a]) == []
    assert r.feed(KEY, 100 + a, ACK_PSH, data[a:b]) == []
    check_accounting(r)
    assert r.buffered == b
    assert r.feed(KEY, 100 + b, ACK_PSH, data[b:]) == [MSGS[0]]
    check_accounting(r)


def test_message_boundary_inside_a_segment(r):
    data = framed(MSGS[0], MSGS[1], MSGS[2])
    cut = len(MSGS[0]) + 2 + 5
    assert r.feed(KEY, 1, ACK_PSH, data[:cut]) == [MSGS[0]]
    assert r.feed(KEY, 1 + cut, ACK_PSH, data[cut:]) == [MSGS[1], MSGS[2]]


def test_retransmission_is_not_delivered_twice(r):
    data = framed(MSGS[0], MSGS[1])
    half = 20
    assert r.feed(KEY, 1, ACK_PSH, data[:half]) == []
    assert r.feed(KEY, 1, ACK_PSH, data[:half]) == []  # exact retransmission
    assert r.feed(KEY, 1, ACK_PSH, data[:10]) == []  # retransmission of a part
    # overlapping: starts 10 octets back, carries the rest
    assert r.feed(KEY, 1 + half - 10, ACK_PSH, data[half - 10:]) == [MSGS[0], MSGS[1]]
    assert r.feed(KEY, 1, ACK_PSH, data) == []  # the whole stream again: nothing new
    assert r.counters["gaps"] == 0
    check_accounting(r)


def test_gap_resets_buffer_and_is_counted(r):
    data = framed(MSGS[0])
    assert r.feed(KEY, 1, ACK_PSH, data[:10]) == []
    # the segment carrying data[10:] was lost; the next one starts with a new message
    nxt = framed(MSGS[1])
    assert r.feed(KEY, 1 + len(data), ACK_PSH, nxt) == [MSGS[1]]
    assert r.counters["gaps"] == 1
    assert r.buffered == 0
    check_accounting(r)


def test_fin_with_incomplete_buffer_counted(r):
    data = framed(MSGS[0])
    assert r.feed(KEY, 1, ACK_PSH, data[:9]) == []
    assert r.feed(KEY, 10, FIN | 0x10, b"") == []
    assert r.counters["incomplete_at_close"] == 1
    assert KEY not in r.flows
    assert r.buffered == 0


def test_fin_with_last_message_delivers_and_closes_cleanly(r):
    assert r.feed(KEY, 1, FIN | ACK_PSH, framed(MSGS[0])) == [MSGS[0]]
    assert r.counters["incomplete_at_close"] == 0
    assert not r.flows


def test_rst_drops_flow(r):
    r.feed(KEY, 1, ACK_PSH, framed(MSGS[0])[:5])
    r.feed(KEY, 6, RST, b"")
    assert not r.flows and r.buffered == 0
    assert r.counters["incomplete_at_close"] == 1


def test_zero_length_prefix_counted_and_skipped(r):
    out = r.feed(KEY, 1, ACK_PSH, b"\x00\x00" + framed(MSGS[0]) + b"\x00\x00")
    assert out == [MSGS[0]]
    assert r.counters["zero_length"] == 2
    assert r.buffered == 0


def test_syn_then_data_at_isn_plus_one(r):
    assert r.feed(KEY, 5000, SYN, b"") == []
    assert r.feed(KEY, 5001, ACK_PSH, framed(MSGS[0])) == [MSGS[0]]
    assert r.counters["gaps"] == 0


def test_syn_resets_an_old_buffer(r):
    r.feed(KEY, 1, ACK_PSH, framed(MSGS[0])[:7])
    assert r.feed(KEY, 9000, SYN, b"") == []
    check_accounting(r)
    assert r.buffered == 0
    assert r.feed(KEY, 9001, ACK_PSH, framed(MSGS[1])) == [MSGS[1]]


def test_tcp_fast_open_data_on_syn(r):
    """Data in a SYN (TCP Fast Open, RFC 7413; RFC 7766 recommends it for DNS) starts at
    ISN+1: the whole message must come out, the next segment must follow on."""
    assert r.feed(KEY, 7000, SYN, framed(MSGS[0])) == [MSGS[0]]
    nxt = 7000 + 1 + len(framed(MSGS[0]))
    assert r.feed(KEY, nxt, ACK_PSH, framed(MSGS[1])) == [MSGS[1]]
    assert r.counters["gaps"] == 0


def test_flows_are_independent(r):
    other = (KEY[0], 40001, KEY[2], 53)
    a, b = framed(MSGS[0]), framed(MSGS[1])
    assert r.feed(KEY, 1, ACK_PSH, a[:6]) == []
    assert r.feed(other, 500, ACK_PSH, b[:6]) == []
    assert r.feed(KEY, 7, ACK_PSH, a[6:]) == [MSGS[0]]
    assert r.feed(other, 506, ACK_PSH, b[6:]) == [MSGS[1]]


def test_flow_cap_evicts_least_recently_used():
    r = TcpReassembler(max_flows=2)
    keys = [(b"c", 1000 + i, b"s", 53) for i in range(3)]
    part = framed(MSGS[0])[:8]
    r.feed(keys[0], 1, ACK_PSH, part)
    r.feed(keys[1], 1, ACK_PSH, part)
    r.feed(keys[0], 9, ACK_PSH, b"x")  # keys[0] used again: keys[1] is now the oldest
    r.feed(keys[2], 1, ACK_PSH, part)
    assert set(r.flows) == {keys[0], keys[2]}
    assert r.counters["evicted_flows"] == 1
    check_accounting(r)


def test_byte_cap_bounds_memory():
    cap = 1000
    r = TcpReassembler(max_flows=10_000, max_bytes=cap)
    big = framed(b"q" * 5000)
    for i in range(50):
        key = (b"c", i, b"s", 53)
        r.feed(key, 1, ACK_PSH, big[:300])
        assert r.buffered <= cap
        check_accounting(r)
    assert r.counters["evicted_flows"] >= 50 - cap // 300
    assert len(r.flows) <= cap // 300


def test_one_flow_larger_than_byte_cap_is_evicted():
    r = TcpReassembler(max_bytes=100)
    assert r.feed(KEY, 1, ACK_PSH, framed(b"z" * 400)[:200]) == []
    assert r.buffered == 0 and not r.flows
    assert r.counters["evicted_flows"] == 1


def test_buffer_never_holds_more_than_one_message():
    r = TcpReassembler()
    data = framed(*[b"m" * 65535] * 3)
    for i in range(0, len(data), 1460):
        r.feed(KEY, 1 + i, ACK_PSH, data[i:i + 1460])
        assert r.buffered <= 65537 + 1460
    assert r.buffered == 0


@pytest.mark.parametrize("start_back", [1, 2, 3, 10])
def test_sequence_wraparound(r, start_back):
    isn = (2**32 - start_back) & 0xFFFFFFFF
    data = framed(MSGS[0], MSGS[1])
    a, b = 5, 30
    assert r.feed(KEY, isn, ACK_PSH, data[:a]) == []
    assert r.feed(KEY, (isn + a) & 0xFFFFFFFF, ACK_PSH, data[a:b]) == []
    # a retransmission from before the wrap is recognised as old
    assert r.feed(KEY, isn, ACK_PSH, data[:a]) == []
    assert r.feed(KEY, (isn + b) & 0xFFFFFFFF, ACK_PSH, data[b:]) == [MSGS[0], MSGS[1]]
    assert r.counters["gaps"] == 0
    assert r.flows[KEY][0] == (isn + len(data)) & 0xFFFFFFFF


def test_syn_at_top_of_sequence_space(r):
    assert r.feed(KEY, 0xFFFFFFFF, SYN, b"") == []
    assert r.feed(KEY, 0, ACK_PSH, framed(MSGS[2])) == [MSGS[2]]
    assert r.counters["gaps"] == 0
