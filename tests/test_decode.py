"""Decoding frames (every supported link type, IPv4/IPv6, UDP/TCP) and the per-frame outcome
through the whole pipeline."""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether

from conftest import (
    CLIENT4,
    CLIENT6,
    PORTS,
    SERVER4,
    SERVER6,
    dns_query,
    dns_response,
    eth,
    header,
    tcp4,
    udp4,
    udp6,
    wire_name,
)
from dnsguard.decode import packet as pk
from dnsguard.decode.packet import SUPPORTED_LINKTYPES, Datagram, Dropped, decode_frame
from dnsguard.settings import Settings

Q = dns_query("www.example.com")
R = dns_response("www.example.com")
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
V4, V6 = socket.inet_aton(CLIENT4), socket.inet_pton(socket.AF_INET6, CLIENT6)
S4, S6 = socket.inet_aton(SERVER4), socket.inet_pton(socket.AF_INET6, SERVER6)


def decode(linktype: int, data: bytes, ports=PORTS):
    return decode_frame(linktype, data, len(data), ports)


def assert_udp_query(d, v6: bool = False, payload: bytes = Q) -> None:
    assert isinstance(d, Datagram), d
    assert (d.src, d.dst) == ((V6, S6) if v6 else (V4, S4))
    assert (d.sport, d.dport, d.tcp, d.cut) == (40000, 53, False, False)
    assert d.payload == payload


def dropped(d, outcome: str, reason: str) -> None:
    assert isinstance(d, Dropped), d
    assert (d.outcome, d.reason) == (outcome, reason)
    assert d.outcome in pk.OUTCOMES


# --- link types -------------------------------------------------------------------------------
def null_frame(ip, family: int, order: str) -> bytes:
    return struct.pack(order + "I", family) + bytes(ip)


LINK_CASES = {
    "ethernet": (1, lambda ip: bytes(Ether(**MAC) / ip)),
    "802.1q": (1, lambda ip: bytes(Ether(**MAC) / Dot1Q(vlan=10) / ip)),
    "qinq-88a8": (1, lambda ip: bytes(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=10) / ip)),
    "qinq-9100-x3": (1, lambda ip: bytes(Ether(**MAC, type=0x9100) / Dot1Q(vlan=1, type=0x9100)
                                         / Dot1Q(vlan=2) / Dot1Q(vlan=3) / ip)),
    "sll": (113, lambda ip: bytes(CookedLinux(proto=0x86DD if ip.version == 6 else 0x0800) / ip)),
    "sll2": (276, lambda ip: bytes(CookedLinuxV2(proto=0x86DD if ip.version == 6 else 0x0800)
                                   / ip)),
    "raw-101": (101, bytes),
    "raw-12": (12, bytes),
    "raw-14": (14, bytes),
}


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("case", sorted(LINK_CASES))
def test_link_types(case, v6):
    linktype, build = LINK_CASES[case]
    d = decode(linktype, build(udp6(Q) if v6 else udp4(Q)))
    assert_udp_query(d, v6)


def test_raw_ipv4_and_ipv6_link_types():
    assert_udp_query(decode(228, bytes(udp4(Q))))
    assert_udp_query(decode(229, bytes(udp6(Q))), v6=True)


@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("linktype", [0, 108])
def test_bsd_loopback_ipv4_either_byte_order(linktype, order):
    assert_udp_query(decode(linktype, null_frame(udp4(Q), 2, order)))


@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("family", [10, 24, 28, 30])
def test_bsd_loopback_ipv6_family_values(family, order):
    assert_udp_query(decode(0, null_frame(udp6(Q), family, order)), v6=True)
    assert_udp_query(decode(108, null_frame(udp6(Q), family, order)), v6=True)


@pytest.mark.parametrize("family", [7, 17, 0])
def test_bsd_loopback_other_family_is_non_ip(family):
    dropped(decode(0, null_frame(udp4(Q), family, "<")), pk.NOT_DNS_PORT, "non_ip")


def test_link_cases_cover_every_supported_link_type():
    """Guard: each entry of SUPPORTED_LINKTYPES has a case above (a new one needs a test)."""
    covered = {lt for lt, _ in LINK_CASES.values()} | {0, 108, 228, 229}
    assert covered == set(SUPPORTED_LINKTYPES)


@pytest.mark.parametrize("linktype", [105, 127, 147, 2, 65535])
def test_unsupported_link_type(linktype):
    assert linktype not in SUPPORTED_LINKTYPES
    dropped(decode(linktype, eth(udp4(Q))), pk.UNSUPPORTED, "link_type")


# --- IP -----------------------------------------------------------------------------------------
def test_ipv4_options_skipped():
    ip = IP(src=CLIENT4, dst=SERVER4, options=[IPOption_RR(routers=["10.0.0.1", "10.0.0.2"])])
    raw = bytes(ip / UDP(sport=40000, dport=53) / Q)
    assert raw[0] & 0x0F > 5
    assert_udp_query(decode(101, raw))


def test_ipv6_extension_header_chain():
    pkt = (IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop()
           / IPv6ExtHdrRouting(addresses=["2001:db8::1", "2001:db8::2"])
           / IPv6ExtHdrDestOpt() / UDP(sport=40000, dport=53) / Q)
    assert_udp_query(decode(1, eth(pkt)), v6=True)


def test_ipv6_authentication_header_length_units():
    """AH counts its length in 4-octet units (RFC 4302); the hop-by-hop header before it in
    8-octet units. Each header's own unit must be used."""
    ah = AH(nh=17, payloadlen=4, icv=b"\x00" * 12)  # 24 octets
    hbh = IPv6ExtHdrHopByHop(len=1, autopad=0, options=b"\x01\x0c" + b"\0" * 12)  # 16 octets
    udp = UDP(sport=40000, dport=53) / Q
    for pkt in (IPv6(src=CLIENT6, dst=SERVER6) / ah / udp,
                IPv6(src=CLIENT6, dst=SERVER6) / hbh / ah / udp):
        assert_udp_query(decode(101, bytes(pkt)), v6=True)


def test_ethernet_padding_trimmed_by_ip_total_length():
    small_tcp = tcp4(b"\x00\x02hi", seq=1)
    frame = eth(small_tcp)
    d = decode(1, frame + b"\x00" * (64 - len(frame)))
    assert isinstance(d, Datagram)
    assert d.payload == b"\x00\x02hi"
    assert not d.cut
    d = decode(1, eth(udp4(b"x" * 4)) + b"\xee" * 14)
    assert d.payload == b"x" * 4


@pytest.mark.parametrize("pkt", [
    IP(src=CLIENT4, dst=SERVER4, flags="MF") / UDP(sport=40000, dport=53) / Q,
    IP(src=CLIENT4, dst=SERVER4, frag=100) / Q,
    IP(src=CLIENT4, dst=SERVER4, flags="MF", frag=1) / Q,
    IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrFragment(m=1) / UDP(sport=40000, dport=53) / Q,
    IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=10) / Q,
], ids=["v4-mf", "v4-offset", "v4-mf-offset", "v6-frag", "v6-hbh-frag"])
def test_ip_fragments_unsupported(pkt):
    dropped(decode(1, eth(pkt)), pk.UNSUPPORTED, "ip_fragment")


def test_dont_fragment_is_not_a_fragment():
    pkt = IP(src=CLIENT4, dst=SERVER4, flags="DF") / UDP(sport=40000, dport=53) / Q
    assert_udp_query(decode(101, bytes(pkt)))


def test_non_ip_frames():
    dropped(decode(1, bytes(Ether(**MAC) / ARP())), pk.NOT_DNS_PORT, "non_ip")
    dropped(decode(113, bytes(CookedLinux(proto=0x0806) / ARP())), pk.NOT_DNS_PORT, "non_ip")
    llc = bytes(Ether(**MAC, type=40)) + b"\xaa" * 40  # 802.3 length field, not an EtherType
    dropped(decode(1, llc), pk.NOT_DNS_PORT, "non_ip")


def test_other_ports():
    dropped(decode(1, eth(udp4(Q, dport=5353))), pk.NOT_DNS_PORT, "other_port")
    dropped(decode(1, eth(tcp4(b"", seq=1, dport=443))), pk.NOT_DNS_PORT, "other_port")
    d = decode(1, eth(udp4(R, sport=53, dport=40000)))  # a response: source port 53
    assert isinstance(d, Datagram) and d.payload == R
    d = decode(1, eth(udp4(Q, dport=5353)), frozenset({5353}))
    assert isinstance(d, Datagram)


def test_other_protocols():
    dropped(decode(1, eth(IP(src=CLIENT4, dst=SERVER4) / ICMP())), pk.NOT_DNS_PORT,
            "other_protocol")
    dropped(decode(1, eth(IPv6(src=CLIENT6, dst=SERVER6) / ICMPv6EchoRequest())),
            pk.NOT_DNS_PORT, "other_protocol")


def test_tcp_segment_fields():
    d = decode(1, eth(tcp4(b"\x00\x05hello", seq=123456, flags="PA")))
    assert isinstance(d, Datagram)
    assert d.tcp and d.seq == 123456 and d.flags == 0x18
    assert d.payload == b"\x00\x05hello"


# --- broken headers -----------------------------------------------------------------------------
def ip4(**kw) -> bytes:
    return bytes(IP(src=CLIENT4, dst=SERVER4, **kw) / UDP(sport=40000, dport=53) / Q)


def test_broken_link_headers():
    frame = eth(udp4(Q))
    dropped(decode(1, frame[:13]), pk.MALFORMED, "link_header")
    tagged = bytes(Ether(**MAC) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / udp4(Q))
    dropped(decode(1, tagged[:20]), pk.MALFORMED, "link_header")  # second tag cut
    dropped(decode(113, bytes(CookedLinux() / udp4(Q))[:15]), pk.MALFORMED, "link_header")
    dropped(decode(276, bytes(CookedLinuxV2() / udp4(Q))[:19]), pk.MALFORMED, "link_header")
    dropped(decode(0, b"\x02\x00\x00"), pk.MALFORMED, "link_header")
    dropped(decode(108, b""), pk.MALFORMED, "link_header")


def test_broken_ip_headers():
    dropped(decode(101, b""), pk.MALFORMED, "ip_header")
    dropped(decode(101, b"\x55" + ip4()[1:]), pk.MALFORMED, "ip_version")
    dropped(decode(101, ip4()[:19]), pk.MALFORMED, "ip_header")  # shorter than 20
    raw = bytearray(ip4())
    raw[0] = 0x44  # IHL 16 octets
    dropped(decode(101, bytes(raw)), pk.MALFORMED, "ip_header")
    raw[0] = 0x4F  # IHL 60 octets, longer than the packet
    dropped(decode(101, bytes(raw[:40])), pk.MALFORMED, "ip_header")
    raw = bytearray(ip4())
    raw[2:4] = (19).to_bytes(2, "big")  # total length below the header length
    dropped(decode(101, bytes(raw)), pk.MALFORMED, "ip_header")
    # EtherType says IPv4 but the version nibble says 6, and the other way round
    dropped(decode(1, bytes(Ether(**MAC, type=0x0800)) + bytes(udp6(Q))), pk.MALFORMED,
            "ip_header")
    dropped(decode(1, bytes(Ether(**MAC, type=0x86DD)) + bytes(udp4(Q)) + b"\x00" * 20),
            pk.MALFORMED, "ip_version")
    dropped(decode(229, bytes(udp6(Q))[:39]), pk.MALFORMED, "ip_header")


def test_broken_udp_headers():
    raw = bytearray(ip4())
    raw[2:4] = (27).to_bytes(2, "big")  # IP total length leaves 7 octets for UDP
    dropped(decode(101, bytes(raw)), pk.MALFORMED, "udp_header")
    raw = bytearray(ip4())
    raw[24:26] = (7).to_bytes(2, "big")  # UDP length below its header
    dropped(decode(101, bytes(raw)), pk.MALFORMED, "udp_header")
    raw = bytearray(ip4())
    raw[24:26] = (len(raw) - 20 + 1).to_bytes(2, "big")  # one past the IP packet, not cut
    dropped(decode(101, bytes(raw)), pk.MALFORMED, "udp_header")


def test_udp_length_shorter_than_ip_payload_uses_udp_length():
    raw = bytearray(ip4())
    raw[24:26] = (8 + 12).to_bytes(2, "big")
    d = decode(101, bytes(raw))
    assert isinstance(d, Datagram) and d.payload == Q[:12]


def test_broken_tcp_headers():
    raw = bytes(IP(src=CLIENT4, dst=SERVER4) / TCP(sport=40000, dport=53, dataofs=4))
    dropped(decode(101, raw), pk.MALFORMED, "tcp_header")
    raw = bytes(IP(src=CLIENT4, dst=SERVER4) / TCP(sport=40000, dport=53, dataofs=15))
    dropped(decode(101, raw), pk.MALFORMED, "tcp_header")  # options past the end
    # IP total length leaves 19 octets for the TCP header
    raw = bytes(IP(src=CLIENT4, dst=SERVER4, len=20 + 19, proto=6)) + b"\x9c\x40\x00\x35"
    raw += b"\0" * 15
    dropped(decode(101, raw), pk.MALFORMED, "tcp_header")


def test_broken_ipv6_extension_header():
    pkt = IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrDestOpt(len=10) / UDP(dport=53) / Q
    raw = bytearray(bytes(pkt))
    raw[4:6] = (8).to_bytes(2, "big")  # payload length covers less than the 88-octet header
    dropped(decode(229, bytes(raw[:48])), pk.MALFORMED, "ipv6_ext_header")
    raw = bytes(IPv6(src=CLIENT6, dst=SERVER6, nh=0, plen=0))
    dropped(decode(229, raw), pk.MALFORMED, "ipv6_ext_header")  # no room for the next header


# --- snaplen -------------------------------------------------------------------------------------
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_snaplen_cut_packet(v6):
    big = dns_response(answers=tuple(("TXT", "x" * 100) for _ in range(4)))
    frame = eth(udp6(big, sport=53, dport=40000) if v6 else udp4(big, sport=53, dport=40000))
    hl = 14 + (40 if v6 else 20) + 8
    d = decode_frame(1, frame[:hl + 30], len(frame), PORTS)
    assert isinstance(d, Datagram)
    assert d.cut
    assert d.payload == big[:30]
    d = decode(1, frame)
    assert not d.cut and d.payload == big


def test_outcome_reasons_are_fixed_strings():
    reasons = {d.reason for d in pk._D.values()}
    assert all(r.isidentifier() for r in reasons)
    assert {d.outcome for d in pk._D.values()} <= set(pk.OUTCOMES)


# --- end to end through the pipeline ------------------------------------------------------------
def feed_all(pipe, frames: list[tuple[int, bytes]]) -> list[str]:
    return [pipe.feed(float(i), lt, f, len(f)) for i, (lt, f) in enumerate(frames)]


def test_pipeline_outcome_per_frame(make_pipe):
    pipe, _ = make_pipe()
    iodine_raw = b"\x10\xd1\x9e\x20" + bytes(range(40))  # iodine raw-UDP data packet
    loop = header() + b"\x01a\xc0\x0c" + b"\x00\x01\x00\x01"
    cases = [
        (1, eth(udp4(Q)), pk.DNS_QUERY),
        (1, eth(udp4(R, sport=53, dport=40000)), pk.DNS_RESPONSE),
        (1, bytes(Ether(**MAC) / ARP()), pk.NOT_DNS_PORT),
        (1, eth(IP(src=CLIENT4, dst=SERVER4) / ICMP()), pk.NOT_DNS_PORT),
        (1, eth(udp4(Q, dport=123)), pk.NOT_DNS_PORT),
        (1, eth(IP(src=CLIENT4, dst=SERVER4, flags="MF") / UDP(dport=53) / Q), pk.UNSUPPORTED),
        (147, eth(udp4(Q)), pk.UNSUPPORTED),
        (1, eth(udp4(Q))[:20], pk.MALFORMED),
        (1, eth(udp4(iodine_raw)), pk.NOT_DNS),
        (1, eth(udp4(b"\x00\x01")), pk.NOT_DNS),
        (1, eth(udp4(loop)), pk.MALFORMED),
        (101, bytes(udp4(header(an=1) + wire_name(b"x") + b"\x00\x01\x00\x01")), pk.MALFORMED),
    ]
    got = feed_all(pipe, [(lt, f) for lt, f, _ in cases])
    assert got == [want for _, _, want in cases]
    c = pipe.counters
    assert sum(c[o] for o in pk.OUTCOMES) == len(cases)
    for o in pk.OUTCOMES:
        assert c[o] == got.count(o)
    assert c["queries"] == 1 and c["responses"] == 1
    assert pipe.malformed == {"ip_fragment": 1, "link_type": 1, "ip_header": 1,
                              "pointer_loop": 1, "truncated": 1}
    s = pipe.summary()
    assert s["packets"] == len(cases)
    assert s["outcomes"] == {o: got.count(o) for o in pk.OUTCOMES}


def test_pipeline_dns_over_tcp(make_pipe):
    pipe, _ = make_pipe()
    q1, q2, q3 = (dns_query(f"t{i}.example.com", qid=i) for i in range(3))
    msg = struct.pack("!H", len(q1)) + q1
    both = struct.pack("!H", len(q2)) + q2 + struct.pack("!H", len(q3)) + q3
    isn = 1000
    frames = [
        eth(tcp4(b"", seq=isn, flags="S")),
        eth(tcp4(msg[:5], seq=isn + 1)),
        eth(tcp4(msg[5:], seq=isn + 6)),
        eth(tcp4(both, seq=isn + 1 + len(msg))),
        eth(tcp4(b"", seq=isn + 1 + len(msg) + len(both), flags="FA")),
    ]
    got = feed_all(pipe, [(1, f) for f in frames])
    assert got == [pk.DNS_PARTIAL, pk.DNS_PARTIAL, pk.DNS_QUERY, pk.DNS_QUERY, pk.DNS_PARTIAL]
    assert pipe.counters["queries"] == 3  # every message, not every frame
    assert pipe.counters[pk.DNS_QUERY] == 2
    assert pipe.tcp.counters["incomplete_at_close"] == 0
    assert not pipe.tcp.flows


def test_pipeline_tcp_response(make_pipe):
    pipe, _ = make_pipe()
    msg = struct.pack("!H", len(R)) + R
    f = eth(tcp4(msg, seq=77, sport=53, dport=40000, src=SERVER4, dst=CLIENT4))
    assert pipe.feed(1.0, 1, f, len(f)) == pk.DNS_RESPONSE
    assert pipe.counters["responses"] == 1


def test_pipeline_non_default_port(make_pipe):
    pipe, _ = make_pipe(Settings(ports=frozenset({5353})))
    got = feed_all(pipe, [(1, eth(udp4(Q, dport=5353))), (1, eth(udp4(Q, dport=53))),
                          (1, eth(udp4(R, sport=5353, dport=40000)))])
    assert got == [pk.DNS_QUERY, pk.NOT_DNS_PORT, pk.DNS_RESPONSE]
    assert pipe.counters["queries"] == 1


def test_pipeline_snaplen_cut_response_is_partial_not_malformed(make_pipe):
    pipe, _ = make_pipe()
    big = dns_response(answers=tuple(("TXT", "y" * 200) for _ in range(3)))
    frame = eth(udp4(big, sport=53, dport=40000))
    assert pipe.feed(1.0, 1, frame[:200], len(frame)) == pk.DNS_RESPONSE
    assert pipe.counters["snaplen_cut"] == 1
    assert not pipe.malformed
    # the same bytes, not cut by a snaplen but by a lying sender, are malformed
    ip = bytearray(bytes(udp4(big, sport=53, dport=40000)))
    short = bytes(ip[:28]) + big[:150]
    short = short[:2] + len(short).to_bytes(2, "big") + short[4:24] + \
        (8 + 150).to_bytes(2, "big") + short[26:]
    assert pipe.feed(2.0, 101, short, len(short)) == pk.MALFORMED
    assert pipe.malformed["truncated"] == 1
