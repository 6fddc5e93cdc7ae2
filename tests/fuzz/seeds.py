"""Build small seed corpora for the atheris harnesses from the bundled captures (pcaps/*.pcap).

    python tests/fuzz/seeds.py OUTDIR          # writes OUTDIR/{parse,frame,capture}/

Nothing here is committed: the corpora are rebuilt at run time, a few hundred files of at most
a few KB each.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dnsguard.capture.pcapfile import CaptureReader  # noqa: E402
from dnsguard.decode.packet import Datagram, decode_frame  # noqa: E402

#: The link types the frame harness chooses from with its first byte.
LINKTYPES = (1, 101, 12, 14, 228, 229, 113, 276, 0, 108)  # as fuzz_frame.LINKTYPES
PER_FILE = 60  # frames taken from each capture


def _write(d: Path, data: bytes) -> None:
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def build(out: Path) -> dict[str, int]:
    dirs = {k: out / k for k in ("parse", "frame", "capture")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    ports = frozenset({53})
    for pcap in sorted((ROOT / "pcaps").glob("*.pcap")):
        r = CaptureReader.open(pcap)
        recs = []
        try:
            for i, (ts, lt, data, wl) in enumerate(r):
                if i >= PER_FILE:
                    break
                idx = LINKTYPES.index(lt) if lt in LINKTYPES else 0
                _write(dirs["frame"], bytes([idx]) + data)
                d = decode_frame(lt, data, wl, ports)
                if d.__class__ is Datagram and d.payload:
                    _write(dirs["parse"], b"\x00" + d.payload)
                if i < 8:
                    sec = int(ts)
                    recs.append(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(data), wl)
                                + data)
                    linktype = lt
        finally:
            r.close()
        if recs:
            hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
            _write(dirs["capture"], hdr + b"".join(recs))
    return {k: len(list(d.iterdir())) for k, d in dirs.items()}


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
