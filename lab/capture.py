"""tcpdump on a lab link, and the one post-processing step allowed: a fixed time rescale.

A capture is tcpdump writing classic pcap (Ethernet, microseconds, full snap length) from a
veth inside a lab namespace; ``stop()`` ends it with SIGINT so tcpdump flushes, and reports
the kernel's drop count (a capture with drops is flagged, never silently kept).

``rescale(src, dst, factor)`` multiplies every packet's offset from the first packet by
``factor`` and changes nothing else: traffic generated ``factor`` times faster than real time
then has realistic rates on the time axis. Every set that uses it says so in its manifest.

    >>> import io, struct
    >>> hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    >>> rec = lambda s, us: struct.pack("<IIII", s, us, 1, 1) + b"x"
    >>> src = io.BytesIO(hdr + rec(100, 0) + rec(100, 500_000) + rec(101, 0))
    >>> out = io.BytesIO(); rescale_stream(src, out, 10.0)
    3
    >>> [struct.unpack_from("<II", out.getvalue(), 24 + i * 17) for i in range(3)]
    [(100, 0), (105, 0), (110, 0)]
"""

from __future__ import annotations

import gzip
import re
import signal
import struct
from pathlib import Path
from typing import BinaryIO

from lab.netns import LabError, Proc, wait_until

_MAGIC = {0xA1B2C3D4: ("<", 1_000_000), 0xA1B23C4D: ("<", 1_000_000_000),
          0xD4C3B2A1: (">", 1_000_000), 0x4D3CB2A1: (">", 1_000_000_000)}


class Capture:
    """tcpdump on interface ``iface`` inside namespace ``ns`` writing ``path`` (bounded)."""

    def __init__(self, ns: str, iface: str, path: Path, seconds: float,
                 max_packets: int = 5_000_000, bpf: str = "ip or ip6") -> None:
        self.path = path
        self.proc = Proc(ns, ["tcpdump", "-i", iface, "-n", "-s", "0", "-B", "16384", "-Z",
                              "root", "-c", str(max_packets), "-w", str(path), bpf],
                         seconds, path.with_suffix(path.suffix + ".log"))
        wait_until(lambda: "listening on" in self.proc.output() or not self.proc.running(),
                   10, f"tcpdump on {ns}/{iface}")
        if not self.proc.running():
            raise LabError(f"tcpdump on {ns}/{iface} failed: {self.proc.output()[-400:]}")
        self.dropped: int | None = None
        self.packets: int | None = None

    def stop(self) -> Path:
        self.proc.stop(signal.SIGINT)
        text = self.proc.output()
        m = re.search(r"(\d+) packets? captured", text)
        d = re.search(r"(\d+) packets? dropped by kernel", text)
        self.packets = int(m.group(1)) if m else None
        self.dropped = int(d.group(1)) if d else None
        if not self.path.exists():
            raise LabError(f"capture {self.path} was not written: {text[-400:]}")
        return self.path


def rescale_stream(src: BinaryIO, dst: BinaryIO, factor: float) -> int:
    """Copy a classic pcap, scaling each record's offset from the first by ``factor``."""
    hdr = src.read(24)
    if len(hdr) < 24:
        raise LabError("not a pcap file (short header)")
    magic = struct.unpack("<I", hdr[:4])[0]
    if magic not in _MAGIC:
        raise LabError(f"not a classic pcap file (magic {magic:#x})")
    end, unit = _MAGIC[magic]
    rec = struct.Struct(end + "IIII")
    dst.write(hdr)
    t0: int | None = None
    n = 0
    while True:
        head = src.read(16)
        if len(head) < 16:
            break
        sec, frac, incl, orig = rec.unpack(head)
        body = src.read(incl)
        if len(body) < incl:
            break
        t = sec * unit + frac
        if t0 is None:
            t0 = t
        t = t0 + round((t - t0) * factor)
        dst.write(rec.pack(t // unit, t % unit, incl, orig))
        dst.write(body)
        n += 1
    return n


def rescale(src: Path, dst: Path, factor: float) -> int:
    """``rescale_stream`` between files; ``dst`` ending in ``.gz`` is gzip-compressed."""
    opener = gzip.open if dst.name.endswith(".gz") else open
    with open(src, "rb") as i, opener(dst, "wb") as o:
        return rescale_stream(i, o, factor)
