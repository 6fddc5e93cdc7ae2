"""Read pcap and pcapng files, plain or gzip-compressed, frame by frame.

A purpose-built reader rather than dpkt's or scapy's: both raise on the first damaged record and
lose the position, while a sensor must say *where* a capture is damaged, keep what came before,
and go on with the next file. It also reads pcapng per-interface link types and timestamp
resolutions, which a rotated capture from ``tcpdump -i any`` on a new libpcap needs.

Example:
    >>> import io, struct
    >>> hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    >>> rec = struct.pack("<IIII", 1, 500000, 4, 4) + b"\\x45abc"
    >>> r = CaptureReader(io.BytesIO(hdr + rec), name="mem")
    >>> [(ts, lt, data) for ts, lt, data, _ in r]
    [(1.5, 101, b'Eabc')]
"""

from __future__ import annotations

import gzip
import heapq
import io
import logging
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

#: One captured frame: (seconds since the epoch, link type, captured bytes, length on the wire).
Frame = tuple[float, int, bytes, int]

# Any record longer than this is corrupt: no link layer carries more (pcapng allows more, but a
# sensor must bound what one record can make it allocate).
MAX_RECORD = 262_144

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9, 16),
    # Kuznetsov's "modified" pcap: 8 more bytes per record header (ifindex, protocol, type).
    b"\x34\xcd\xb2\xa1": ("<", 1e-6, 24),
    b"\xa1\xb2\xcd\x34": (">", 1e-6, 24),
}
PCAPNG_SHB = 0x0A0D0D0A
_SHB_BYTES = b"\x0a\x0d\x0d\x0a"  # the same in either byte order
MAX_BLOCK = MAX_RECORD + 64  # a pcapng block: a record and its block's own fields
GZIP_MAGIC = b"\x1f\x8b"


class CaptureError(Exception):
    """A capture cannot be read at all. The message names the file and says what to do."""


@dataclass
class ReadStats:
    """What reading one capture met, for the run summary."""

    frames: int = 0
    bytes: int = 0
    skipped_blocks: int = 0  # pcapng blocks of types that carry no packets (or unknown ones)
    unknown_blocks: int = 0
    damaged: str | None = None  # where and why reading stopped early, if it did
    linktypes: set[int] = field(default_factory=set)


#: File names a directory of captures is searched for (``replay DIR``, ``eval``, ``train``):
#: captures, and dnstap files (:mod:`dnsguard.capture.dnstap`).
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz",
                    ".dnstap", ".dnstap.gz", ".fstrm", ".fstrm.gz")
#: The name that means standard input (``tcpdump -w - | dnsguard replay -``).
STDIN = "-"


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Capture paths with each directory replaced by its captures (sorted by name); ``-``
    (standard input) and everything else are kept as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if str(p) != STDIN and p.is_dir():
            out += sorted(q for q in p.iterdir() if q.name.endswith(CAPTURE_SUFFIXES))
        else:
            out.append(p)
    return out


def open_capture(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading (``-``: standard input), transparently decompressing gzip.

    Nothing here seeks: the format is told by peeking at the buffer, so pipes, ``/dev/stdin``
    and process substitution (``<(zcat x.pcap.gz)``) read like files.
    """
    p = Path(path)
    try:
        if str(path) == STDIN:
            raw = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115
        else:
            raw = open(p, "rb", buffering=0)  # noqa: SIM115 - closed by CaptureReader
    except OSError as e:
        raise CaptureError(f"{path}: cannot open: {e.strerror or e}") from None
    f = io.BufferedReader(raw, buffer_size=1 << 20)
    try:
        head = f.peek(2)[:2]
    except OSError as e:
        f.close()
        raise CaptureError(f"{path}: cannot read: {e.strerror or e}") from None
    if head == GZIP_MAGIC:
        gz = gzip.GzipFile(fileobj=f, mode="rb")  # reads forward only
        return io.BufferedReader(_GzipRaw(gz, f), buffer_size=1 << 20)
    return f


class _GzipRaw(io.RawIOBase):
    """A gzip stream as raw input for a large BufferedReader.

    Each fill takes what one decompression step gives (``read1``). Filling from
    ``GzipFile.readinto`` instead would ask for the whole buffer, and a stream cut short would
    then lose everything decompressed into that buffer before the cut.
    """

    def __init__(self, gz: gzip.GzipFile, fileobj: BinaryIO) -> None:
        self.gz = gz
        self.fileobj = fileobj  # GzipFile(fileobj=...) does not close it

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.gz.read1(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.gz.close()
            self.fileobj.close()
        super().close()


_CHUNK = 1 << 18  # bytes per read of a pcap file


class CaptureReader:
    """Iterate over the frames of one pcap or pcapng stream.

    Damage inside the file does not raise: iteration stops, ``stats.damaged`` says where (byte
    offset of the record) and why, and everything before it has been delivered. A stream that is
    not a capture at all raises :class:`CaptureError` on construction.
    """

    def __init__(self, f: BinaryIO, name: str = "<stream>") -> None:
        self.f = f
        self.name = name
        self.stats = ReadStats()
        self.offset = 0
        try:
            head = self._read(4)
            if head in PCAP_MAGICS:
                self._init_pcap(head)  # reads on: a gzip stream may end inside the header
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise CaptureError(f"{name}: cannot read: {e}") from None
        if head in PCAP_MAGICS:
            return
        if not head:
            raise CaptureError(f"{name}: empty file, not a capture")
        if len(head) == 4 and struct.unpack("<I", head)[0] == PCAPNG_SHB:
            self._kind = "pcapng"
            self._pending_head = head
        else:
            raise CaptureError(
                f"{name}: not a pcap or pcapng file (starts with {head.hex()}); "
                "convert it with 'editcap -F pcap' or check the path"
            )

    @classmethod
    def open(cls, path: str | Path) -> CaptureReader:
        f = open_capture(path)
        try:
            return cls(f, name="stdin" if str(path) == STDIN else str(path))
        except CaptureError:
            f.close()
            raise

    def close(self) -> None:
        self.f.close()

    def _read(self, n: int) -> bytes:
        b = self.f.read(n)
        self.offset += len(b)
        return b

    def _damage(self, at: int, why: str) -> None:
        self.stats.damaged = f"{why} at byte {at}"
        log.warning("%s: %s at byte %d; frames before it were read", self.name, why, at)

    # --- pcap -----------------------------------------------------------------------------
    def _init_pcap(self, magic: bytes) -> None:
        self._kind = "pcap"
        self._endian, self._tsunit, self._rechdr = PCAP_MAGICS[magic]
        rest = self._read(20)
        if len(rest) < 20:
            raise CaptureError(f"{self.name}: truncated pcap file header ({4 + len(rest)} of 24 "
                               "bytes); the file is cut short")
        _, _, _, _, snaplen, network = struct.unpack(self._endian + "HHiIII", rest)
        self._linktype = network & 0xFFFF
        self._snaplen = snaplen
        self.stats.linktypes.add(self._linktype)

    def pcap_format(self) -> tuple[int, bool, float, int] | None:
        """(record header length, big-endian, timestamp fraction unit, link type) of a pcap
        file, for a consumer of :meth:`pcap_runs`; None for pcapng."""
        if self._kind != "pcap":
            return None
        return self._rechdr, self._endian == ">", self._tsunit, self._linktype

    def pcap_runs(self) -> Iterator[tuple[bytes, int, int]]:
        """A pcap file's records in bulk: ``(buf, start, stop)``, where ``buf[start:stop]``
        holds whole records (header and data, :meth:`pcap_format`), read in large chunks
        (two reads per record were ~5% of a replay). Damage is reported exactly as record-by-
        record reading would: at the byte offset of the record that is cut or oversized,
        after every record before it. ``offset`` and ``stats`` count a run when it is
        yielded."""
        hdr_len = self._rechdr
        big = self._endian == ">"
        # read1: what the buffer holds, or one raw read. A gzip stream cut short raises only
        # once everything decompressed before the cut has been returned.
        read = getattr(self.f, "read1", self.f.read)
        limit = max(self._snaplen, 65535) if 0 < self._snaplen <= MAX_RECORD else MAX_RECORD
        stats = self.stats
        offset = self.offset  # file offset of the record at buf[pos]
        buf = b""
        pos = 0
        try:
            while True:
                stop, count, nbytes = scan_records(buf, pos, hdr_len, big, limit)
                if count:
                    offset += stop - pos
                    self.offset = offset
                    stats.frames += count
                    stats.bytes += nbytes
                    yield buf, pos, stop
                    pos = stop
                # The next record is incomplete (or absent) in buf, or too long.
                have = len(buf) - pos
                if have >= hdr_len:
                    caplen = _u32(buf, pos + 8, big)
                    if caplen > limit:
                        self._damage(offset,
                                     f"record length {caplen} exceeds snaplen {self._snaplen}")
                        break
                    need = hdr_len + caplen
                else:
                    need = hdr_len
                buf = buf[pos:]
                pos = 0
                more = read(max(_CHUNK, need - have))
                if more:
                    buf += more
                    continue
                # End of input.
                if have >= hdr_len:
                    self._damage(offset, f"truncated record ({have - hdr_len} of {caplen} "
                                         f"bytes)")
                elif have:
                    self._damage(offset, f"truncated record header ({have} of {hdr_len} "
                                         f"bytes)")
                break
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            # gzip streams cut short end here: keep what was read, say where.
            self._damage(offset, f"read error ({e})")
        finally:
            self.offset = offset

    def _iter_pcap(self) -> Iterator[Frame]:
        """Frame by frame, from :meth:`pcap_runs`: ``offset`` and ``stats`` count each run
        when it starts, so a consumer that stops early sees them up to a run ahead."""
        hdr_len = self._rechdr
        unpack = struct.Struct(self._endian + "IIII").unpack_from
        lt = self._linktype
        unit = self._tsunit
        for buf, pos, stop in self.pcap_runs():
            while pos < stop:
                sec, frac, caplen, wirelen = unpack(buf, pos)
                start = pos + hdr_len
                pos = start + caplen
                yield sec + frac * unit, lt, buf[start:pos], wirelen

    # --- pcapng ---------------------------------------------------------------------------
    def pcapng_runs(self) -> Iterator[tuple]:
        """A pcapng file's packets in bulk, read in large chunks. Yields either a *run*
        ``(buf, start, stop, linktype, unit, tsoffset, big)``, where ``buf[start:stop]`` holds
        whole enhanced packet blocks of one interface, each one checked (:func:`scan_epbs`),
        to be read in place (:func:`epb_fields`); or one frame ``(ts, linktype, data,
        wirelen)`` from another packet block (simple, obsolete). Every other block is read
        here: section headers (byte order), interface descriptions (link type, timestamp
        resolution and offset), the rest counted and skipped. Damage is reported at the byte
        offset of the block that is cut or broken, after every packet before it. ``offset``
        and ``stats`` count a run when it is yielded."""
        stats = self.stats
        read = getattr(self.f, "read1", self.f.read)
        buf = self._pending_head
        pos = 0
        offset = self.offset - len(buf)  # file offset of buf[pos]
        interfaces: list[tuple[int, float, float]] = []  # (linktype, ts unit, ts offset)
        big = False
        try:
            while True:
                have = len(buf) - pos
                if have >= 12 and _u32(buf, pos, big) == 6:
                    iface = _u32(buf, pos + 8, big)
                    if iface < len(interfaces):
                        stop, count, nbytes = scan_epbs(buf, pos, big, iface, MAX_BLOCK)
                        if count:
                            lt, unit, tsoff = interfaces[iface]
                            offset += stop - pos
                            self.offset = offset
                            stats.frames += count
                            stats.bytes += nbytes
                            yield buf, pos, stop, lt, unit, tsoff, big
                            pos = stop
                            continue
                # One block the slow way. ``need``: the octets it takes to go on.
                need = 8
                blen = 0
                shb = have >= 4 and buf[pos:pos + 4] == _SHB_BYTES
                if have >= 8:
                    if shb:
                        need = 12
                        if have >= 12:
                            bom = buf[pos + 8:pos + 12]
                            if bom == b"\x4d\x3c\x2b\x1a":
                                big = False
                            elif bom == b"\x1a\x2b\x3c\x4d":
                                big = True
                            else:
                                self._damage(offset, "bad pcapng byte-order magic")
                                return
                            blen = _u32(buf, pos + 4, big)
                            if blen < 28 or blen % 4 or blen > 1 << 24:
                                self._damage(offset, f"bad section header length {blen}")
                                return
                            need = blen
                    else:
                        blen = _u32(buf, pos + 4, big)
                        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                            self._damage(offset, f"bad block length {blen} (block type "
                                                 f"{_u32(buf, pos, big):#x})")
                            return
                        need = blen
                if have < need:
                    buf = buf[pos:]
                    pos = 0
                    more = read(max(_CHUNK, need - have))
                    if more:
                        buf += more
                        continue
                    # End of input inside the block (or between blocks: nothing left).
                    if not have:
                        return
                    if need == 8:
                        self._damage(offset, "truncated block header")
                    elif shb and need == 12:
                        self._damage(offset, "bad pcapng byte-order magic")
                    elif shb:
                        self._damage(offset, "truncated section header block")
                    else:
                        self._damage(offset, f"truncated block (type "
                                             f"{_u32(buf, 0, big):#x}, {have} of {blen} "
                                             "bytes)")
                    return
                if shb:
                    interfaces = []  # each section has its own interfaces
                    pos += blen
                    offset += blen
                    continue
                frame = self._ng_block(_u32(buf, pos, big), buf[pos + 8:pos + blen - 4],
                                       interfaces, big, offset)
                if frame is False:
                    return
                pos += blen
                offset += blen
                self.offset = offset
                if frame is not None:
                    stats.frames += 1
                    stats.bytes += len(frame[2])
                    yield frame
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            # gzip streams cut short end here: keep what was read, say where.
            self._damage(offset, f"read error ({e})")
        finally:
            self.offset = offset

    def _ng_block(self, btype: int, body: bytes, interfaces: list, big: bool, at: int):
        """One pcapng block other than a section header, its body without the trailing
        length: a frame, None (nothing to deliver) or False (damaged: reported)."""
        endian = ">" if big else "<"
        if btype == 6 or btype == 2:  # enhanced / obsolete packet block
            if len(body) < 20:
                self._damage(at, "packet block too short")
                return False
            if btype == 6:
                iface, tsh, tsl, caplen, wirelen = struct.unpack_from(endian + "IIIII", body)
            else:
                iface, _drops, tsh, tsl, caplen, wirelen = struct.unpack_from(
                    endian + "HHIIII", body)
            if iface >= len(interfaces):
                self._damage(at, f"packet for undeclared interface {iface}")
                return False
            if caplen > len(body) - 20:
                self._damage(at, f"captured length {caplen} exceeds its block")
                return False
            lt, unit, tsoff = interfaces[iface]
            return ((tsh << 32) | tsl) * unit + tsoff, lt, body[20:20 + caplen], wirelen
        if btype == 3:  # simple packet block: interface 0, no timestamp
            if not interfaces or len(body) < 4:
                self._damage(at, "simple packet block without an interface")
                return False
            (wirelen,) = struct.unpack_from(endian + "I", body)
            lt, _, _ = interfaces[0]
            return 0.0, lt, body[4:4 + min(wirelen, len(body) - 4)], wirelen
        if btype == 1:  # interface description block
            if len(body) < 8:
                self._damage(at, "interface description block too short")
                return False
            lt, _, _snap = struct.unpack_from(endian + "HHI", body)
            unit, tsoff = _idb_options(body[8:], endian)
            interfaces.append((lt, unit, tsoff))
            self.stats.linktypes.add(lt)
            return None
        self.stats.skipped_blocks += 1
        if btype not in (4, 5, 0xA, 0xBAD, 0x40000BAD, 9, 0x80000001):
            self.stats.unknown_blocks += 1
        return None

    def _iter_pcapng(self) -> Iterator[Frame]:
        """Frame by frame, from :meth:`pcapng_runs`."""
        for item in self.pcapng_runs():
            if len(item) == 4:
                yield item
                continue
            buf, pos, stop, lt, unit, tsoff, big = item
            while pos < stop:
                blen, tsh, tsl, caplen, wirelen = epb_fields(buf, pos, big)
                yield ((tsh << 32) | tsl) * unit + tsoff, lt, buf[pos + 28:pos + 28 + caplen], \
                    wirelen
                pos += blen

    @property
    def kind(self) -> str:
        """"pcap" or "pcapng": which of :meth:`pcap_runs` and :meth:`pcapng_runs` applies."""
        return self._kind

    def __iter__(self) -> Iterator[Frame]:
        if self._kind == "pcap":
            return self._iter_pcap()  # no delegating generator per frame
        return self._iter_pcapng()


def _u32(p: bytes, i: int, big: bool) -> int:
    """The unsigned 32-bit integer at ``p[i:i + 4]`` (compiled: ``p`` is a C pointer)."""
    a, b, c, d = p[i], p[i + 1], p[i + 2], p[i + 3]  # compiled: unsigned ints (no sign bit)
    if big:
        return (a << 24) | (b << 16) | (c << 8) | d
    return (d << 24) | (c << 16) | (b << 8) | a


def scan_records(buf: bytes, pos: int, hdr_len: int, big: bool,
                 limit: int) -> tuple[int, int, int]:
    """The whole pcap records from ``buf[pos:]`` on: (where they end, how many, captured
    bytes). Stops at the first record that is cut or longer than ``limit``; the caller
    tells which."""
    n = len(buf)
    p = buf
    count = nbytes = 0
    while n - pos >= hdr_len:
        caplen = _u32(p, pos + 8, big)
        if caplen > limit:
            break
        end = pos + hdr_len + caplen
        if end > n:
            break
        pos = end
        count += 1
        nbytes += caplen
    return pos, count, nbytes


def scan_epbs(buf: bytes, pos: int, big: bool, iface: int,
              limit: int) -> tuple[int, int, int]:
    """The whole, valid enhanced packet blocks of interface ``iface`` from ``buf[pos:]`` on:
    (where they end, how many, captured bytes). Stops at the first block that is another
    kind, of another interface, cut, or not valid (the caller reads that one alone)."""
    n = len(buf)
    p = buf
    count = nbytes = 0
    while n - pos >= 32:
        if _u32(p, pos, big) != 6 or _u32(p, pos + 8, big) != iface:
            break
        blen = _u32(p, pos + 4, big)
        if blen < 32 or blen & 3 or blen > limit or pos + blen > n:
            break
        caplen = _u32(p, pos + 20, big)
        if caplen > blen - 32:
            break
        pos += blen
        count += 1
        nbytes += caplen
    return pos, count, nbytes


def epb_fields(buf: bytes, pos: int, big: bool) -> tuple[int, int, int, int, int]:
    """(block length, timestamp high, low, captured length, wire length) of the enhanced
    packet block at ``buf[pos]``, one :func:`scan_epbs` checked."""
    return (_u32(buf, pos + 4, big), _u32(buf, pos + 12, big), _u32(buf, pos + 16, big),
            _u32(buf, pos + 20, big), _u32(buf, pos + 24, big))


def _idb_options(opts: bytes, endian: str) -> tuple[float, float]:
    """Timestamp unit and offset from an interface block's options (if_tsresol, if_tsoffset)."""
    unit, tsoff = 1e-6, 0.0
    i = 0
    while i + 4 <= len(opts):
        code, length = struct.unpack_from(endian + "HH", opts, i)
        i += 4
        if code == 0:
            break
        val = opts[i:i + length]
        if len(val) < length:  # option runs past the block: ignore it and the rest
            break
        if code == 9 and length >= 1:
            v = val[0]
            unit = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
        elif code == 14 and length == 8:
            tsoff = float(struct.unpack(endian + "q", val)[0])
        i += (length + 3) & ~3
    return unit, tsoff


def merge_frames(readers: Iterable[tuple[str, Iterable[Frame]]]) -> Iterator[tuple[str, Frame]]:
    """Merge several captures into one stream in time order (rotated captures, several taps).

    Yields ``(source, frame)``; each input is assumed to be in time order itself, as capture
    files are (a frame out of order within a file keeps its place).
    """
    iters = [_keyed(i, src, it) for i, (src, it) in enumerate(readers)]
    if len(iters) == 1:
        for _, _, src, fr in iters[0]:
            yield src, fr
        return
    for _, _, src, fr in heapq.merge(*iters):
        yield src, fr


def _keyed(i: int, src: str, frames: Iterable[Frame]) -> Iterator[tuple[float, int, str, Frame]]:
    # A function, not a generator expression in a comprehension: those would all see the
    # comprehension's last ``i`` and ``src`` (late binding) and label every frame wrongly.
    for fr in frames:
        yield fr[0], i, src, fr
