"""Two small programs for the dnstap end-to-end tests, run inside the tests' own network
namespaces (``python3 tests/dnstap_net.py sink ADDR`` / ``exfil RESOLVER ZONE COUNT``):

* ``sink``: an authoritative server for whatever it is asked (the exfiltration's sink):
  an A record for A questions, an empty authoritative answer otherwise; it stops by itself
  after ``--seconds`` (default 60).
* ``exfil``: a client that sends ``COUNT`` queries (bounded) whose names carry base32-encoded
  data under ``ZONE``, one after another, each waiting at most a second for its answer; prints
  how many were answered.
* ``load``: a client that sends ``RATE`` queries a second for ``SECONDS`` (ordinary names under
  a few domains, some repeated), reading answers in between; prints ``sent answered``.

Both use only the standard library (they run under the system ``python3`` or the venv's).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import socket
import struct
import sys
import time


def _question_end(msg: bytes) -> int:
    p = 12
    while p < len(msg) and msg[p]:
        p += msg[p] + 1
    return p + 5  # the root octet, QTYPE, QCLASS


def sink(addr: str, seconds: float) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    s.settimeout(0.5)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            q, peer = s.recvfrom(4096)
        except TimeoutError:
            continue
        if len(q) < 17:
            continue
        qe = _question_end(q)
        if qe > len(q):
            continue
        qtype = struct.unpack_from("!H", q, qe - 4)[0]
        flags = 0x8400 | (struct.unpack_from("!H", q, 2)[0] & 0x0100)  # QR AA, RD copied
        if qtype == 1:
            ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
            hdr = struct.pack("!HHHHHH", struct.unpack_from("!H", q)[0], flags, 1, 1, 0, 0)
        else:
            ans = b""
            hdr = struct.pack("!HHHHHH", struct.unpack_from("!H", q)[0], flags, 1, 0, 0, 0)
        s.sendto(hdr + q[12:qe] + ans, peer)
    return 0


def exfil_names(zone: str, count: int) -> list[str]:
    """``count`` names carrying a fake file, 30 octets per query, base32 in two labels."""
    out = []
    for i in range(count):
        chunk = hashlib.sha256(f"secret-{i}".encode()).digest()[:30]
        b = base64.b32encode(chunk).decode().rstrip("=").lower()
        out.append(f"{b[:24]}.{b[24:]}{i:04d}.{zone}")
    return out


def _query(name: str, qid: int) -> bytes:
    wire = b"".join(bytes([len(x)]) + x.encode() for x in name.rstrip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", 1, 1)


def exfil(resolver: str, zone: str, count: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    answered = 0
    for i, name in enumerate(exfil_names(zone, count)):
        qid = (i * 7919 + 1) & 0xFFFF
        s.sendto(_query(name, qid), (resolver, 53))
        try:
            while True:
                r, _ = s.recvfrom(4096)
                if struct.unpack_from("!H", r)[0] == qid:
                    answered += 1
                    break
        except TimeoutError:
            pass
    print(answered)
    return 0


def load(resolver: str, rate: float, seconds: float) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    total = int(rate * seconds)
    sent = answered = 0
    t0 = time.monotonic()
    end = t0 + seconds + 3.0  # answers still in flight after the last query
    while time.monotonic() < end and (sent < total or answered < sent):
        now = time.monotonic()
        while sent < total and sent <= (now - t0) * rate:
            name = f"host{sent % 997}.site{sent % 13}.load.test"
            s.sendto(_query(name, sent & 0xFFFF), (resolver, 53))
            sent += 1
        try:
            while True:
                s.recv(4096)
                answered += 1
        except BlockingIOError:
            pass
        time.sleep(0.0005)
    print(sent, answered)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sink")
    p.add_argument("addr")
    p.add_argument("--seconds", type=float, default=60)
    p = sub.add_parser("exfil")
    p.add_argument("resolver")
    p.add_argument("zone")
    p.add_argument("count", type=int)
    p = sub.add_parser("load")
    p.add_argument("resolver")
    p.add_argument("rate", type=float)
    p.add_argument("seconds", type=float)
    a = ap.parse_args()
    if a.cmd == "sink":
        return sink(a.addr, a.seconds)
    if a.cmd == "load":
        return load(a.resolver, min(a.rate, 5000), min(a.seconds, 60))
    return exfil(a.resolver, a.zone, min(a.count, 10_000))


if __name__ == "__main__":
    sys.exit(main())
