"""atheris harness: CaptureReader over arbitrary bytes (pcap, pcapng), then decode each frame.

Only CaptureError may come out of the constructor; iteration never raises, and the frame
count matches ReadStats. See README.md.
"""

from __future__ import annotations

import io
import sys

try:
    import atheris
except ImportError:  # pytest --doctest-modules imports this file too; running it needs atheris
    atheris = None

PORTS = frozenset({53})


def one(data: bytes) -> None:
    from dnsguard.capture.pcapfile import CaptureError, CaptureReader
    from dnsguard.decode.packet import decode_frame

    try:
        r = CaptureReader(io.BytesIO(data), name="fuzz")
    except CaptureError:
        return
    n = 0
    for ts, lt, frame, wl in r:
        n += 1  # noqa: SIM113 - the for-else needs the count
        assert isinstance(ts, float) and isinstance(frame, bytes)
        decode_frame(lt, frame, wl, PORTS)
        if n > 10_000:
            break
    else:
        assert r.stats.frames == n, (r.stats.frames, n)


if __name__ == "__main__":
    with atheris.instrument_imports():
        import dnsguard.capture.pcapfile  # noqa: F401
        import dnsguard.decode.packet  # noqa: F401
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
