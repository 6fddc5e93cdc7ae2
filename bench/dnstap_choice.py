"""Why dnstap is decoded the way it is (capture/dnstap.py, capture/framestream.py): the same
payload decoded by the module generated here and by the ``dnstap-pb`` package, and the same
Frame Streams file framed by ``framestream.read_file_frames`` and by the ``fstrm`` package.

    python -m venv /tmp/choice && /tmp/choice/bin/pip install protobuf dnstap-pb fstrm
    PYTHONPATH=. /tmp/choice/bin/python bench/dnstap_choice.py

(neither package is a dependency of dnsguard; each part is skipped when its package is
missing). Numbers taken on a shared machine are only comparable within one run.
"""

from __future__ import annotations

import io
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnsguard.capture import dnstap_pb2 as ours  # noqa: E402
from dnsguard.capture import framestream as fs  # noqa: E402
from dnsguard.capture.dnstap import encode_message  # noqa: E402

QUERY = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x07example\x03com\x00"
         b"\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")
PAYLOAD = encode_message(5, QUERY, bytes([10, 1, 2, 3]), bytes([10, 0, 0, 53]), 40000, 53,
                         1.7e9)


def decode_ns(mod) -> float:
    d = mod.Dnstap()

    def one():
        d.ParseFromString(PAYLOAD)
        m = d.message
        return (m.type, m.query_message, m.query_address, m.response_address, m.query_port,
                m.response_port, m.query_time_sec, m.query_time_nsec, m.socket_protocol)

    return min(timeit.repeat(one, number=50_000, repeat=5)) / 50_000 * 1e9


def main() -> int:
    print(f"protobuf decode + 9 field reads, generated here: {decode_ns(ours):,.0f} ns")
    try:
        from dnstap_pb import dnstap_pb2 as other
    except ImportError:
        print("dnstap-pb not installed: skipped")
    else:
        print(f"protobuf decode + 9 field reads, dnstap-pb:      {decode_ns(other):,.0f} ns")
    n = 100_000
    stream = fs.encode_control(fs.START, [fs.CONTENT_TYPE]) + fs.encode_data(PAYLOAD) * n
    t = time.perf_counter()
    got = sum(1 for _ in fs.read_file_frames(io.BytesIO(stream), fs.FileStats()))
    print(f"framing, framestream.read_file_frames: {got / (time.perf_counter() - t):,.0f} "
          "frames/s")
    try:
        import fstrm
    except ImportError:
        print("fstrm not installed: skipped")
        return 0
    c, got, k = fstrm.FstrmCodec(), 0, 10_000  # its buffer is re-joined per read: fewer frames
    part = stream[:42 + k * (len(PAYLOAD) + 4)]
    t = time.perf_counter()
    for i in range(0, len(part), 1 << 16):
        c.append(part[i:i + (1 << 16)])
        while c.process():
            c.decode()
            got += 1
    print(f"framing, fstrm FstrmCodec (64 KiB reads): {got / (time.perf_counter() - t):,.0f} "
          "frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
