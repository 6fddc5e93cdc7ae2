"""The in-place dnstap reader (capture/dnstapwire.py) against the protobuf runtime, the
reference: for every payload the same message or the same counted reason, and the same
counters, on generated resolver logs, on protobuf messages built field by field with every
wire type (unknown fields, groups, repeated and merged fields, enum values the schema does
not name, varints of every length), on those mutated (octets changed, cut, inserted) and on
random octets; then a replayed file read in place gives what the runtime's messages give.
Runs compiled or interpreted, whichever is loaded (tests/test_compiled.py runs both).
Real BIND output: tests/test_dnstap_netns.py.

Cost: ~15 s interpreted, ~3 s compiled.
"""

from __future__ import annotations

import io
import random
import struct

import pytest
from test_dnstap import CLIENT, MT, RESOLVER, T0, dnstap_file, exfil_payloads, rules_only

from conftest import ROOT, dns_query, dns_response
from dnsguard.capture import framestream as fs
from dnsguard.capture.dnstap import DnstapCounters, DnstapMapper, encode_message
from dnsguard.capture.dnstapwire import DnstapScanner, frames_end
from dnsguard.detect.rules import load_dir
from dnsguard.pipeline import Pipeline


def varint(v: int, pad: int = 0) -> bytes:
    """``v`` as a varint, ``pad`` octets longer than needed (a non-minimal encoding)."""
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v or pad:
            out.append(b | 0x80)
            if not v:
                pad -= 1
                if not pad:
                    out.append(0)
                    break
        else:
            out.append(b)
            break
    return bytes(out)


def field(rnd: random.Random, depth: int = 0) -> bytes:
    """One field of a ``Message``: a known one, sometimes of another wire type, or an
    unknown one (a group now and then), with values at the edges."""
    num = rnd.choice([1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 12, 13, 14, 14, 11, 15, 16, 17,
                      99, 2047, 536870911])
    wt = rnd.choice([0, 0, 1, 2, 2, 3, 5]) if rnd.random() < 0.3 else {
        1: 0, 2: 0, 3: 0, 6: 0, 7: 0, 8: 0, 12: 0, 16: 0, 9: 5, 13: 5}.get(num, 2)
    tag = varint(num << 3 | wt, rnd.choice([0, 0, 0, 0, 1]))
    if wt == 0:
        v = rnd.choice([0, 1, 2, 5, 6, 7, 8, 14, 15, 53, 65535, 65536, 2**31, 2**32 - 1,
                        2**32 + 5, 2**63, 2**64 - 1, rnd.getrandbits(rnd.randrange(1, 64)),
                        rnd.randrange(16), rnd.randrange(16)])
        return tag + varint(v, rnd.choice([0, 0, 0, 1, 3]))
    if wt == 1:
        return tag + rnd.randbytes(8)
    if wt == 5:
        return tag + rnd.randbytes(4)
    if wt == 3:
        inner = b"".join(field(rnd, depth + 1) for _ in range(rnd.randrange(3))) \
            if depth < 3 else b""
        end = num if rnd.random() < 0.9 else num + 1
        return tag + inner + varint(end << 3 | 4)
    size = rnd.choice([0, 4, 16, 3, 17]) if num in (4, 5) else rnd.randrange(0, 40)
    return tag + varint(size) + rnd.randbytes(size)


def built(rnd: random.Random) -> bytes:
    """A ``Dnstap`` payload built field by field."""
    msg = b"".join(field(rnd) for _ in range(rnd.randrange(12)))
    parts = []
    if rnd.random() < 0.95:
        parts.append(varint(14 << 3 | 2) + varint(len(msg)) + msg)
    if rnd.random() < 0.1:  # a second message field: merged into the first
        m2 = b"".join(field(rnd) for _ in range(rnd.randrange(3)))
        parts.append(varint(14 << 3 | 2) + varint(len(m2)) + m2)
    if rnd.random() < 0.5:
        parts.append(varint(15 << 3) + varint(rnd.choice([1, 1, 2])))
    if rnd.random() < 0.3:
        parts.append(varint(1 << 3 | 2) + b"\x03ns1")
    if rnd.random() < 0.1:
        parts.append(field(rnd))
    rnd.shuffle(parts)
    return b"".join(parts)


def mutated(rnd: random.Random, p: bytes) -> bytes:
    b = bytearray(p)
    k = rnd.randrange(4)
    if k == 0 and b:
        b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif k == 1:
        del b[rnd.randrange(len(b) + 1):]
    elif k == 2:
        i = rnd.randrange(len(b) + 1)
        b[i:i] = rnd.randbytes(rnd.randrange(1, 6))
    else:
        for _ in range(3):
            if b:
                b[rnd.randrange(len(b))] = rnd.choice([0, 0x80, 0xFF, 0x0B, 0x0C, 0x72,
                                                       rnd.randrange(256)])
    return bytes(b)


def resolver_log() -> list[bytes]:
    """What resolvers write: client and upstream messages, v4 and v6, every transport, a
    message without time, one without addresses."""
    out = exfil_payloads(30)
    v6c, v6r = bytes(range(16)), bytes(range(16, 32))
    q, r = dns_query("www.example.org"), dns_response("www.example.org")
    for proto in range(1, 8):
        out.append(encode_message(MT.CLIENT_QUERY, q, v6c, v6r, 5353, 853, T0 + proto,
                                  protocol=proto, identity=b"ns1"))
        out.append(encode_message(MT.CLIENT_RESPONSE, r, v6c, v6r, 5353, 853, T0 + proto,
                                  protocol=proto))
    out.append(encode_message(MT.AUTH_QUERY, q, CLIENT, RESOLVER, 1, 53, 0.0))
    out.append(encode_message(MT.STUB_RESPONSE, r, b"", b"", 1, 53, T0))
    out.append(encode_message(MT.TOOL_RESPONSE, b"", CLIENT, RESOLVER, 1, 53, T0))
    return out


def assert_same(payloads: list[bytes]) -> DnstapCounters:
    cm, cs = DnstapCounters(), DnstapCounters()
    m = DnstapMapper(cm, now=lambda: 42.0)
    s = DnstapScanner(cs, now=lambda: 42.0)
    for p in payloads:
        assert s.decode(p) == m.decode(p), p.hex()
        assert cs.summary() == cm.summary(), p.hex()
        assert (s.saw_client, s.last_ts) == (m.saw_client, m.last_ts), p.hex()
    return cs


def test_a_resolver_log_reads_the_same():
    c = assert_same(resolver_log())
    assert c.messages["client_query"] == 37 and len(c.transports) == 7
    assert c.errors["upstream_redundant"] == 60 and c.errors["bad_address"] == 1
    assert c.errors["no_time"] == 1 and c.errors["no_dns_message"] == 1


def test_built_mutated_and_random_payloads_read_the_same():
    rnd = random.Random(15)
    base = resolver_log() + [built(rnd) for _ in range(3000)]
    cases = base + [mutated(rnd, p) for p in base for _ in range(3)]
    cases += [rnd.randbytes(rnd.randrange(48)) for _ in range(3000)]
    c = assert_same(cases)
    # the cases reach every outcome, not only the runtime's refusal
    for reason in ("protobuf", "no_message", "no_dns_message", "bad_address", "bad_port",
                   "no_time", "upstream_redundant"):
        assert c.errors.get(reason, 0) > 10, (reason, c.errors)
    assert sum(c.messages.values()) > 3000 and len(c.messages) == 14


@pytest.mark.parametrize("hexed", [
    "", "7200", "7802", "0b0c", "0b00000c", "0b040c", "0b14", "0b0b0c0c", "0b0b0c",
    "7300b22474", "730074", "8880808000" "01", "888080808000" "01", "f8ffffff0f01",
    "f8ffffff1f01", "72068580808010" "00", "7206088580808010", "720b30" + "ff" * 9 + "01",
    "720c30" + "ff" * 10 + "01", "728000", "0f00", "0e", "72020b", "7203" "0a0161",
])
def test_wire_format_edges_read_as_the_runtime_reads_them(hexed):
    assert_same([bytes.fromhex(hexed)])


def test_frames_end_stops_at_control_oversized_and_cut_frames():
    d = fs.encode_data
    body = d(b"a") + d(b"bc") + fs.encode_control(fs.STOP)
    assert frames_end(body, 0, len(body), 100) == 11
    assert frames_end(body, 5, len(body), 100) == 11
    assert frames_end(body, 0, 9, 100) == 5  # the second frame cut at the chunk's end
    assert frames_end(d(b"x" * 10) + d(b"y"), 0, 19, 9) == 0  # longer than max_frame
    big = struct.pack("!I", 0xFFFFFFFF) + b"z"
    assert frames_end(big, 0, len(big), 1 << 20) == 0


def test_runs_give_the_frames_of_every_chunking():
    payloads = resolver_log()
    body = dnstap_file(payloads)
    for chunk in (1, 7, 64, 1 << 20):
        st = fs.FileStats()
        got = [buf[p + 4:p + 4 + struct.unpack_from("!I", buf, p)[0]]
               for buf, pos, stop in fs.read_file_runs(io.BytesIO(body), st, chunk=chunk)
               for p in _starts(buf, pos, stop)]
        assert got == payloads and st.stopped and st.damaged is None


def _starts(buf: bytes, pos: int, stop: int):
    while pos < stop:
        yield pos
        pos += 4 + struct.unpack_from("!I", buf, pos)[0]


def test_a_file_read_in_place_feeds_what_the_runtime_feeds():
    """Pipeline.feed_dnstap (payloads and DNS messages read where they lie) against the
    runtime's messages through feed_message: the same alerts, outcomes and counters."""
    rnd = random.Random(3)
    payloads = resolver_log() + exfil_payloads(60, upstream=False)
    payloads += [mutated(rnd, p) for p in payloads[:40]]
    ruleset = load_dir(ROOT / "rules")
    out = []
    for in_place in (True, False):
        got: list[dict] = []
        pipe = Pipeline(rules_only(), ruleset, got.append)
        c = DnstapCounters()
        st = fs.FileStats()
        f = io.BytesIO(dnstap_file(payloads))
        if in_place:
            n = pipe.feed_dnstap(fs.read_file_runs(f, st, chunk=997), DnstapScanner(c))
        else:
            m = DnstapMapper(c)
            n = 0
            for p in fs.read_file_frames(f, st):
                n += 1
                x = m.decode(p)
                if x is not None:
                    pipe.feed_message(*x)
        pipe.finish()
        s = pipe.summary()
        out.append((n, c.summary(), s["outcomes"], s["queries"], s["responses"],
                    [(a["domain"], a["src_ip"], a["dest_ip"], a["detectors"]) for a in got]))
    assert out[0] == out[1]
    assert out[0][0] == len(payloads) and out[0][5]
    assert {a[1] for a in out[0][5]} == {".".join(map(str, CLIENT))}
    assert RESOLVER  # the resolver's own messages were not analysed twice (upstream_redundant)
