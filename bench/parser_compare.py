"""Compare dpkt's DNS decoder with dnsguard's own parser on real captures.

Usage: python bench/parser_compare.py [CAPTURE_DIR]   (default ../shared/corpus)

Both parse the same DNS payloads (UDP port 53, extracted once up front) to the fields the
features need: header, first question name and type, answer types and rdata lengths. Reports
messages per second and how many messages each rejects.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import dpkt

from dnsguard.capture.pcapfile import CaptureError, CaptureReader
from dnsguard.decode.packet import Datagram, decode_frame
from dnsguard.dns.exception import DNSError
from dnsguard.dns.message import parse


def payloads(folder: Path) -> list[bytes]:
    out = []
    for p in sorted(folder.iterdir()):
        if not p.name.endswith((".pcap", ".pcapng")):
            continue
        try:
            r = CaptureReader.open(p)
        except CaptureError:
            continue
        for _, lt, data, wl in r:
            d = decode_frame(lt, data, wl, frozenset({53}))
            if isinstance(d, Datagram) and not d.tcp:
                out.append(d.payload)
        r.close()
    return out


def own(msgs: list[bytes]) -> tuple[float, int]:
    bad = 0
    t = time.perf_counter()
    for b in msgs:
        try:
            m = parse(b)
            _ = (m.qname, m.qtype, [(a[0], a[2]) for a in m.answers])
        except DNSError:
            bad += 1
    return time.perf_counter() - t, bad


def with_dpkt(msgs: list[bytes]) -> tuple[float, int]:
    bad = 0
    t = time.perf_counter()
    for b in msgs:
        try:
            m = dpkt.dns.DNS(b)
            q = m.qd[0] if m.qd else None
            _ = (q.name if q is not None else None, q.type if q is not None else None,
                 [(a.type, len(a.rdata)) for a in m.an])
        except Exception:  # dpkt raises many types (UnpackError, IndexError, UnicodeError…)
            bad += 1
    return time.perf_counter() - t, bad


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpus")
    msgs = payloads(folder)
    print(f"{len(msgs)} UDP DNS-port payloads from {folder}")
    for name, fn in (("dnsguard.dns", own), ("dpkt.dns", with_dpkt)):
        best = min((fn(msgs) for _ in range(3)), key=lambda r: r[0])
        print(f"{name:14s} {len(msgs) / best[0]:>10,.0f} msgs/s  rejected {best[1]}")


if __name__ == "__main__":
    main()
