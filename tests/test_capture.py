"""Capture input: pcap (both byte orders, µs/ns), pcapng (several interfaces), gzip, merging
files in time order, and damaged files (what is delivered, what is reported and where)."""

from __future__ import annotations

import gc
import gzip
import io
import struct
import warnings
import zlib

import pytest
from scapy.layers.l2 import CookedLinux, Ether
from scapy.utils import PcapNgWriter, PcapWriter

from conftest import (
    dns_query,
    eth,
    ng_block,
    ng_epb,
    ng_idb,
    ng_option,
    ng_shb,
    ng_spb,
    pcap_bytes,
    pcap_header,
    pcap_record,
    udp4,
    udp6,
)
from dnsguard.capture.pcapfile import CaptureError, CaptureReader, merge_frames

FRAMES = [eth(udp4(dns_query(f"n{i}.example.com"), sport=40000 + i)) for i in range(3)]


def read_all(path) -> tuple[list, CaptureReader]:
    r = CaptureReader.open(path)
    try:
        return list(r), r
    finally:
        r.close()


def read_bytes(data: bytes) -> tuple[list, CaptureReader]:
    r = CaptureReader(io.BytesIO(data), name="mem")
    return list(r), r


# --- pcap ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_written_by_scapy(tmp_path, endian, nano):
    path = tmp_path / "x.pcap"
    w = PcapWriter(str(path), linktype=1, endianness=endian, nano=nano, sync=True)
    times = [1_700_000_000.25, 1_700_000_001.5, 1_700_000_002.75]
    for t, f in zip(times, FRAMES, strict=True):
        p = Ether(f)
        p.time = t
        w.write(p)
    w.close()
    head = path.read_bytes()[:4]
    assert head == struct.pack(endian + "I", 0xA1B23C4D if nano else 0xA1B2C3D4)
    frames, r = read_all(path)
    assert [f[2] for f in frames] == FRAMES
    assert [f[1] for f in frames] == [1, 1, 1]
    assert [f[3] for f in frames] == [len(f) for f in FRAMES]
    assert [f[0] for f in frames] == pytest.approx(times, abs=1e-6)
    assert r.stats.frames == 3
    assert r.stats.bytes == sum(map(len, FRAMES))
    assert r.stats.linktypes == {1}
    assert r.stats.damaged is None


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize(("nano", "frac", "ts"), [(False, 250_000, 7.25),
                                                 (True, 250_000, 7.00025),
                                                 (True, 999_999_999, 7.999999999)])
def test_pcap_timestamp_units(endian, nano, frac, ts):
    data = pcap_bytes([(7, frac, b"\x45abc")], linktype=101, endian=endian, nano=nano)
    frames, _ = read_bytes(data)
    assert len(frames) == 1
    assert frames[0][0] == pytest.approx(ts, abs=1e-9)
    assert frames[0][1] == 101


def test_pcap_wire_length_kept():
    data = pcap_header(1) + pcap_record(1, 0, FRAMES[0][:40], wirelen=len(FRAMES[0]))
    frames, _ = read_bytes(data)
    assert frames[0][2] == FRAMES[0][:40]
    assert frames[0][3] == len(FRAMES[0])


def test_pcap_modified_record_headers():
    """Kuznetsov's pcap variant: 24-byte record headers; the 8 extra bytes are not data."""
    data = pcap_header(1, modified=True) + b"".join(
        pcap_record(i, 0, f, modified=True) for i, f in enumerate(FRAMES))
    frames, r = read_bytes(data)
    assert [f[2] for f in frames] == FRAMES
    assert r.stats.damaged is None


def test_pcap_upper_linktype_bits_ignored():
    """The top bits of the link-type field carry FCS information, not the link type."""
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 0x1000_0000 | 1)
    frames, r = read_bytes(hdr + pcap_record(1, 0, FRAMES[0]))
    assert frames[0][1] == 1
    assert r.stats.linktypes == {1}


# --- pcapng -------------------------------------------------------------------------------------
def test_pcapng_written_by_scapy(tmp_path):
    path = tmp_path / "x.pcapng"
    w = PcapNgWriter(str(path))
    w.linktype = 1
    for i, f in enumerate(FRAMES):
        p = Ether(f)
        p.time = 1_700_000_000 + i + 0.5
        w.write(p)
    w.close()
    frames, r = read_all(path)
    assert [f[2] for f in frames] == FRAMES
    assert [f[0] for f in frames] == pytest.approx(
        [1_700_000_000.5, 1_700_000_001.5, 1_700_000_002.5], abs=1e-6)
    assert r.stats.linktypes == {1}


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_interfaces_with_own_linktype_and_tsresol(endian):
    raw = bytes(udp4(dns_query()))
    sll = bytes(CookedLinux(proto=0x86DD) / udp6(dns_query()))
    data = (ng_shb(endian)
            + ng_idb(1, endian=endian)  # default: microseconds
            + ng_idb(101, tsresol=9, endian=endian)  # nanoseconds
            + ng_idb(113, tsresol=0x80 | 10, tsoffset=1000, endian=endian)  # 2**-10 s, +1000 s
            + ng_epb(0, 1_500_000, FRAMES[0], endian=endian)
            + ng_epb(1, 2_000_000_001, raw, endian=endian)
            + ng_epb(2, 3 * 1024 + 512, sll, wirelen=len(sll) + 7, endian=endian))
    frames, r = read_bytes(data)
    assert [(f[1], f[2]) for f in frames] == [(1, FRAMES[0]), (101, raw), (113, sll)]
    assert frames[0][0] == pytest.approx(1.5)
    assert frames[1][0] == pytest.approx(2.000000001, abs=1e-12)
    assert frames[2][0] == pytest.approx(1003.5)
    assert frames[2][3] == len(sll) + 7
    assert r.stats.linktypes == {1, 101, 113}
    assert r.stats.damaged is None


def test_pcapng_timestamp_above_32_bits():
    ticks = 1_700_000_000 * 1_000_000 + 123_456  # needs the high word
    frames, _ = read_bytes(ng_shb() + ng_idb(1) + ng_epb(0, ticks, FRAMES[0]))
    assert frames[0][0] == pytest.approx(1_700_000_000.123456, abs=1e-5)


def test_pcapng_simple_packet_block_uses_interface_zero():
    frames, _ = read_bytes(ng_shb() + ng_idb(101) + ng_spb(b"\x45abcdef"))
    assert frames == [(0.0, 101, b"\x45abcdef", 7)]


def test_pcapng_obsolete_packet_block():
    body = struct.pack("<HHIIII", 0, 0, 0, 3_000_000, len(FRAMES[0]), len(FRAMES[0])) + FRAMES[0]
    frames, _ = read_bytes(ng_shb() + ng_idb(1) + ng_block(2, body))
    assert frames == [(3.0, 1, FRAMES[0], len(FRAMES[0]))]


def test_pcapng_new_section_forgets_interfaces():
    data = (ng_shb() + ng_idb(1) + ng_epb(0, 1, FRAMES[0])
            + ng_shb(">") + ng_idb(101, endian=">") + ng_epb(0, 2, b"\x45xyz", endian=">")
            + ng_epb(1, 3, b"\x45xyz", endian=">"))  # interface 1 belonged to no section
    frames, r = read_bytes(data)
    assert [(f[1], f[2]) for f in frames] == [(1, FRAMES[0]), (101, b"\x45xyz")]
    assert "undeclared interface 1" in r.stats.damaged


def test_pcapng_known_non_packet_blocks_skipped_not_unknown():
    nrb = ng_block(4, struct.pack("<HH", 0, 0))
    isb = ng_block(5, struct.pack("<III", 0, 0, 0))
    data = ng_shb() + ng_idb(1) + nrb + ng_epb(0, 1, FRAMES[0]) + isb
    frames, r = read_bytes(data)
    assert len(frames) == 1
    assert r.stats.skipped_blocks == 2
    assert r.stats.unknown_blocks == 0


def test_pcapng_unknown_block_skipped_counted_and_reading_continues():
    unknown = ng_block(0x0BADF00D, b"whatever this is")
    data = (ng_shb() + ng_idb(1) + ng_epb(0, 1, FRAMES[0]) + unknown + unknown
            + ng_epb(0, 2, FRAMES[1]))
    frames, r = read_bytes(data)
    assert [f[2] for f in frames] == FRAMES[:2]
    assert r.stats.skipped_blocks == 2
    assert r.stats.unknown_blocks == 2
    assert r.stats.damaged is None


def test_pcapng_idb_with_option_cut_by_block_end():
    """An if_tsoffset / if_tsresol option longer than what is left of its block is ignored
    (it used to raise struct.error / IndexError out of the iteration)."""
    body_end = struct.pack("<HH", 14, 8) + b"\x00" * 4  # claims 8 bytes, 4 present
    data = ng_shb() + ng_idb(1, raw_options=body_end) + ng_epb(0, 2_000_000, FRAMES[0])
    frames, r = read_bytes(data)
    assert frames[0][0] == pytest.approx(2.0)
    data = ng_shb() + ng_idb(1, raw_options=struct.pack("<HH", 9, 1)) + ng_epb(0, 5, FRAMES[0])
    frames, r = read_bytes(data)
    assert frames[0][0] == pytest.approx(5e-6)


def test_idb_option_parsing_keeps_going_past_other_options():
    opts = ng_option(2, b"eth0") + ng_option(9, b"\x03") + struct.pack("<HH", 0, 0)
    frames, _ = read_bytes(ng_shb() + ng_idb(1, raw_options=opts) + ng_epb(0, 1500, FRAMES[0]))
    assert frames[0][0] == pytest.approx(1.5)  # milliseconds


# --- gzip ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_gzip_compressed_captures(tmp_path, kind):
    if kind == "pcap":
        plain = pcap_bytes([(i, 0, f) for i, f in enumerate(FRAMES)])
    else:
        plain = ng_shb() + ng_idb(1) + b"".join(
            ng_epb(0, i * 1_000_000, f) for i, f in enumerate(FRAMES))
    (tmp_path / "x").write_bytes(plain)
    (tmp_path / "x.gz").write_bytes(gzip.compress(plain))
    want, _ = read_all(tmp_path / "x")
    got, r = read_all(tmp_path / "x.gz")
    assert got == want
    assert [f[2] for f in got] == FRAMES
    assert r.stats.damaged is None


def test_gzip_reader_closes_its_file(tmp_path):
    path = tmp_path / "x.pcap.gz"
    path.write_bytes(gzip.compress(pcap_bytes([(1, 0, FRAMES[0])])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        frames, r = read_all(path)  # read_all closes the reader
        del r
        gc.collect()
    assert len(frames) == 1
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_truncated_gzip_keeps_frames_before_the_cut(tmp_path):
    frames = [eth(udp4(dns_query(f"{i:04d}.example.com"), sport=1024 + i)) for i in range(400)]
    plain = pcap_bytes([(i, 0, f) for i, f in enumerate(frames)])
    gz = gzip.compress(plain, compresslevel=1)
    cut = gz[:len(gz) // 2]
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(cut)
    # What a decompressor can recover from the cut stream, and the whole records in it.
    available = len(zlib.decompressobj(wbits=31).decompress(cut))
    reclen = 16 + len(frames[0])
    assert all(len(f) == len(frames[0]) for f in frames)
    whole = (available - 24) // reclen
    assert 0 < whole < len(frames)
    got, r = read_all(path)
    assert [f[2] for f in got] == frames[:len(got)]
    assert len(got) == whole
    assert r.stats.damaged is not None
    assert "read error" in r.stats.damaged
    assert f"at byte {24 + whole * reclen}" in r.stats.damaged


def test_gzip_cut_inside_the_file_header_is_a_capture_error(tmp_path):
    gz = gzip.compress(pcap_bytes([(1, 0, FRAMES[0])]))
    path = tmp_path / "tiny.pcap.gz"
    # Enough bytes to decompress the magic but not the whole 24-byte header.
    for n in range(12, len(gz)):
        if len(zlib.decompressobj(wbits=31).decompress(gz[:n])) in range(4, 24):
            path.write_bytes(gz[:n])
            break
    else:
        pytest.skip("no cut point inside the header for this compressor output")
    with pytest.raises(CaptureError, match="tiny.pcap.gz"):
        CaptureReader.open(path)


def test_gzip_that_is_not_gzip(tmp_path):
    path = tmp_path / "fake.gz"
    path.write_bytes(b"\x1f\x8bthis is not deflate data at all")
    with pytest.raises(CaptureError, match="fake.gz"):
        read_all(path)


# --- merging ------------------------------------------------------------------------------------
def test_merge_frames_in_time_order_with_sources(tmp_path):
    times = {"a": [1, 4, 7], "b": [2, 5, 8], "c": [3, 6, 6]}
    paths = []
    for name, ts in times.items():
        p = tmp_path / f"{name}.pcap"
        p.write_bytes(pcap_bytes([(t, 0, name.encode() * 20) for t in ts], linktype=101))
        paths.append(p)
    readers = [CaptureReader.open(p) for p in paths]
    merged = list(merge_frames((r.name, r) for r in readers))
    for r in readers:
        r.close()
    assert [fr[0] for _, fr in merged] == sorted(t for ts in times.values() for t in ts)
    for src, fr in merged:  # each frame labelled with the file it came from
        assert src.endswith(f"{chr(fr[2][0])}.pcap")


def test_merge_equal_times_keep_file_order():
    a = [(1.0, 1, b"z", 1), (2.0, 1, b"z", 1)]
    b = [(1.0, 1, b"a", 1), (2.0, 1, b"a", 1)]
    merged = list(merge_frames([("A", a), ("B", b)]))
    assert [src for src, _ in merged] == ["A", "B", "A", "B"]


def test_merge_single_input_passes_through():
    a = [(5.0, 1, b"x", 1), (1.0, 1, b"y", 1)]  # out of order within a file: kept
    assert list(merge_frames([("A", a)])) == [("A", a[0]), ("A", a[1])]


# --- files that are not captures ---------------------------------------------------------------
def test_empty_file(tmp_path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    with pytest.raises(CaptureError, match=r"empty\.pcap.*empty"):
        CaptureReader.open(path)


def test_non_capture_file_named(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is a text file\n")
    with pytest.raises(CaptureError) as ei:
        CaptureReader.open(path)
    assert str(path) in str(ei.value)
    assert "not a pcap or pcapng" in str(ei.value)


def test_missing_file_named(tmp_path):
    path = tmp_path / "nope.pcap"
    with pytest.raises(CaptureError, match="nope.pcap.*cannot open"):
        CaptureReader.open(path)


@pytest.mark.parametrize("n", [1, 3, 4, 10, 23])
def test_truncated_global_header(tmp_path, n):
    path = tmp_path / "short.pcap"
    path.write_bytes(pcap_header()[:n])
    with pytest.raises(CaptureError, match="short.pcap"):
        CaptureReader.open(path)


# --- damage inside a capture: frames before it delivered, offset reported ------------------------
def good_records(n: int = 2) -> bytes:
    return b"".join(pcap_record(i, 0, FRAMES[i]) for i in range(n))


def test_truncated_record_header():
    body = good_records(2)
    frames, r = read_bytes(pcap_header() + body + pcap_record(9, 0, FRAMES[2])[:7])
    assert [f[2] for f in frames] == FRAMES[:2]
    assert "truncated record header (7 of 16 bytes)" in r.stats.damaged
    assert r.stats.damaged.endswith(f"at byte {24 + len(body)}")


def test_truncated_record_data():
    body = good_records(2)
    frames, r = read_bytes(pcap_header() + body + pcap_record(9, 0, FRAMES[2])[:16 + 5])
    assert [f[2] for f in frames] == FRAMES[:2]
    assert f"truncated record (5 of {len(FRAMES[2])} bytes)" in r.stats.damaged
    assert r.stats.damaged.endswith(f"at byte {24 + len(body)}")
    assert r.stats.frames == 2


def test_clean_end_is_not_damage():
    frames, r = read_bytes(pcap_header() + good_records(3))
    assert len(frames) == 3
    assert r.stats.damaged is None


@pytest.mark.parametrize(("snaplen", "caplen"), [(1500, 70_000), (0, 300_000),
                                                  (262_144, 0xFFFF_FFFF)])
def test_caplen_larger_than_snaplen(snaplen, caplen):
    body = good_records(1)
    bad = struct.pack("<IIII", 5, 0, caplen, caplen) + b"\x00" * 64
    frames, r = read_bytes(pcap_header(snaplen=snaplen) + body + bad)
    assert [f[2] for f in frames] == FRAMES[:1]
    assert f"record length {caplen} exceeds snaplen {snaplen}" in r.stats.damaged
    assert r.stats.damaged.endswith(f"at byte {24 + len(body)}")


def test_oversized_record_inside_one_read_is_damage():
    """A record over the limit is damage even when the whole of it came in the same read as
    the records around it (records are taken from large reads in runs)."""
    body = good_records(2)
    big = pcap_record(5, 0, b"\x00" * 70_000)
    frames, r = read_bytes(pcap_header(snaplen=1500) + body + big + good_records(1))
    assert [f[2] for f in frames] == FRAMES[:2]
    assert "record length 70000 exceeds snaplen 1500" in r.stats.damaged
    assert r.stats.damaged.endswith(f"at byte {24 + len(body)}")
    assert r.stats.frames == 2 and r.offset == 24 + len(body)


class _Trickle(io.BufferedIOBase):
    """A buffered stream whose ``read1`` returns at most ``k`` bytes, as a gzip stream's
    does (one decompression step) or a file's on a pipe; ``read(n)`` gives ``n``."""

    def __init__(self, data: bytes, k: int) -> None:
        self.data, self.k, self.pos = data, k, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = self.data[self.pos:] if n < 0 else self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def read1(self, n: int = -1) -> bytes:
        return self.read(self.k if n < 0 else min(n, self.k))


@pytest.mark.parametrize("k", [1, 3, 17, 1000])
@pytest.mark.parametrize("cut", [0, 7, 16 + 5])
def test_short_reads_give_what_one_large_read_gives(k, cut):
    records = b"".join(pcap_record(i, 0, FRAMES[i % 3]) for i in range(40))
    data = pcap_header() + records + (pcap_record(99, 0, FRAMES[0])[:cut] if cut else b"")
    whole, r1 = read_bytes(data)
    r2 = CaptureReader(_Trickle(data, k), name="mem")
    assert list(r2) == whole and len(whole) == 40
    assert (r2.stats, r2.offset) == (r1.stats, r1.offset)
    assert (r2.stats.damaged is None) == (cut == 0)


def test_caplen_a_little_over_small_snaplen_still_read():
    """Writers that record a small snaplen but longer records exist; a record up to 64 KiB is
    plausible and kept (only absurd lengths are damage)."""
    frames, r = read_bytes(pcap_header(snaplen=64) + pcap_record(1, 0, FRAMES[0]))
    assert len(FRAMES[0]) > 64
    assert frames[0][2] == FRAMES[0]
    assert r.stats.damaged is None


@pytest.mark.parametrize("blen", [13, 8, 0, 0x7FFF_FFF0])
def test_pcapng_block_with_bad_length(blen):
    head = ng_shb() + ng_idb(1) + ng_epb(0, 1, FRAMES[0])
    bad = ng_block(6, b"\x00" * 32, length=blen)
    frames, r = read_bytes(head + bad + ng_epb(0, 2, FRAMES[1]))
    assert [f[2] for f in frames] == FRAMES[:1]
    assert f"bad block length {blen}" in r.stats.damaged
    assert r.stats.damaged.endswith(f"at byte {len(head)}")


def test_pcapng_truncated_block():
    head = ng_shb() + ng_idb(1) + ng_epb(0, 1, FRAMES[0])
    frames, r = read_bytes(head + ng_epb(0, 2, FRAMES[1])[:40])
    assert len(frames) == 1
    assert "truncated block" in r.stats.damaged
    assert r.stats.damaged.endswith(f"at byte {len(head)}")


def test_pcapng_captured_length_beyond_block():
    head = ng_shb() + ng_idb(1)
    body = struct.pack("<IIIII", 0, 0, 1, 500, 500) + b"\x00" * 32
    frames, r = read_bytes(head + ng_block(6, body))
    assert frames == []
    assert "captured length 500 exceeds its block" in r.stats.damaged


def test_pcapng_bad_byte_order_magic():
    shb = bytearray(ng_shb())
    shb[8:12] = b"abcd"
    frames, r = read_bytes(bytes(shb) + ng_idb(1) + ng_epb(0, 1, FRAMES[0]))
    assert frames == []
    assert "byte-order magic" in r.stats.damaged
