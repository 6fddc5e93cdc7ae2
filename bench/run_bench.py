"""Speed and memory benchmark: dnsguard replay against tshark and plain iteration.

Usage (from the repository root):

    python bench/run_bench.py [--packets 1000000] [--flood 5000000] [--corpus ../shared/corpus]

1. Builds a workload of at least ``--packets`` frames from real captures — the corpus in
   ../shared/corpus and the project's own pcaps/ — repeated with shifted timestamps and
   rewritten client addresses (so repetitions are new clients, not replays of the same keys),
   every frame re-framed as Ethernet so one pcap holds all of them. IP checksums are not
   recomputed: neither dnsguard nor tshark (by default) validates them.
2. Measures, on that same file, in one run: ``dnsguard replay`` end to end (decode, features,
   rules, model, alerts) in packets/s and peak RSS; ``tshark -T fields`` (frame time, addresses,
   query name and type) as the reference; plain iteration over the file's records as the
   ceiling. Prints the ratios.
3. With ``--flood N`` (default 5,000,000; 0 to skip), replays a hostile workload of N queries
   with random subdomains under random registered domains from random clients, and reports
   peak RSS with the state caps and evictions from the summary.

Everything is written under bench/work/ (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from dnsguard.capture.pcapfile import CaptureError, CaptureReader
from dnsguard.decode.packet import (
    ETH_IPV4,
    ETH_IPV6,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    VLAN_TPIDS,
)

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
ETH_HDR = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"


def ip_payload(lt: int, data: bytes) -> tuple[int, bytes] | None:
    """(ethertype, bytes from the IP header on) of a frame, or None for non-IP frames."""
    if lt == LINKTYPE_ETHERNET and len(data) >= 14:
        et, off = struct.unpack_from("!H", data, 12)[0], 14
        while et in VLAN_TPIDS and len(data) >= off + 4:
            et, off = struct.unpack_from("!H", data, off + 2)[0], off + 4
    elif lt == LINKTYPE_LINUX_SLL and len(data) >= 16:
        et, off = struct.unpack_from("!H", data, 14)[0], 16
    elif lt == LINKTYPE_LINUX_SLL2 and len(data) >= 20:
        et, off = struct.unpack_from("!H", data, 0)[0], 20
    else:
        return None
    return (et, data[off:]) if et in (ETH_IPV4, ETH_IPV6) else None


def rewrite(et: int, ip: bytes, rep: int) -> bytes:
    """Give repetition ``rep`` its own clients: change the low bytes of the non-port-53 side."""
    if rep == 0 or et != ETH_IPV4 or len(ip) < 24:
        return ip
    ihl = (ip[0] & 0x0F) * 4
    if len(ip) < ihl + 4:
        return ip
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    b = bytearray(ip)
    pos = 12 if dport == 53 else 16 if sport == 53 else 12
    b[pos + 2] ^= (rep >> 8) & 0xFF
    b[pos + 3] ^= rep & 0xFF
    return bytes(b)


def build_workload(sources: list[Path], target: int, out: Path) -> int:
    frames: list[tuple[float, int, bytes]] = []
    for p in sources:
        try:
            r = CaptureReader.open(p)
        except CaptureError:
            continue
        t0 = None
        for ts, lt, data, _ in r:
            x = ip_payload(lt, data)
            if x is None:
                continue
            t0 = ts if t0 is None else t0
            frames.append((ts - t0, x[0], x[1]))
        r.close()
    if not frames:
        raise SystemExit("no input frames: is ../shared/corpus there?")
    span = max(f[0] for f in frames) + 1.0
    n = 0
    base = 1_700_000_000.0
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        rep = 0
        while n < target:
            off = base + rep * span
            for rel, et, ip in frames:
                ts = off + rel
                pkt = ETH_HDR + struct.pack("!H", et) + rewrite(et, ip, rep)
                sec = int(ts)
                f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(pkt), len(pkt)))
                f.write(pkt)
                n += 1
            rep += 1
    return n


def build_flood(count: int, out: Path, seed: int = 7) -> int:
    """Random subdomains under random registered domains from random clients."""
    rnd = random.Random(seed)
    alpha = b"abcdefghijklmnopqrstuvwxyz0123456789"
    tlds = [b"com", b"net", b"org", b"io", b"de"]
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101))
        ts = 1_700_000_000.0
        for i in range(count):
            sub = bytes(rnd.choices(alpha, k=rnd.randint(8, 40)))
            dom = bytes(rnd.choices(alpha, k=rnd.randint(5, 12)))
            tld = rnd.choice(tlds)
            qname = (bytes([len(sub)]) + sub + bytes([len(dom)]) + dom
                     + bytes([len(tld)]) + tld + b"\x00")
            dns = (struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + qname
                   + b"\x00\x01\x00\x01")
            udp = struct.pack("!HHHH", 1024 + (i % 60000), 53, 8 + len(dns), 0) + dns
            src = struct.pack("!I", 0x0A000000 | rnd.getrandbits(24))
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src,
                             b"\x0a\x00\x00\x35") + udp
            ts += 0.0001
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(ip), len(ip)))
            f.write(ip)
    return count


def timed(cmd: list[str]) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall time and peak RSS (KiB) of a child process."""
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if r.returncode not in (0, 1):
        sys.stderr.write(r.stderr)
        raise SystemExit(f"{cmd[0]} failed with status {r.returncode}")
    return wall, max(rss, before), r


def dnsguard_run(path: Path, summary: Path) -> tuple[float, int, dict]:
    # Each measurement in a fresh child so its peak RSS is its own.
    code = ("import resource, subprocess, sys;"
            "r = subprocess.run(sys.argv[1:]);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
            "sys.exit(r.returncode)")
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "dnsguard", "replay", "-q",
           "--alerts", os.devnull, "--summary-json", str(summary), str(path)]
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 1):
        sys.stderr.write(r.stderr)
        raise SystemExit("dnsguard replay failed")
    rss = int(r.stderr.strip().splitlines()[-1])
    return wall, rss, json.loads(summary.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flood", type=int, default=5_000_000)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    sources = sorted(args.corpus.glob("*.pcap*")) + sorted((ROOT / "pcaps").glob("*.pcap*"))
    work = WORK / "workload.pcap"
    t = time.perf_counter()
    n = build_workload(sources, args.packets, work)
    print(f"workload: {n:,} packets, {work.stat().st_size / 1e6:.0f} MB from {len(sources)} "
          f"captures, built in {time.perf_counter() - t:.0f} s")

    t = time.perf_counter()
    count = sum(1 for _ in CaptureReader.open(work))
    it = time.perf_counter() - t
    print(f"plain iteration      {count / it:>10,.0f} packets/s")

    tshark = shutil.which("tshark")
    ts_pps = None
    if tshark:
        wall, _, _ = timed([tshark, "-r", str(work), "-T", "fields", "-e", "frame.time_epoch",
                            "-e", "ip.src", "-e", "ip.dst", "-e", "dns.qry.name",
                            "-e", "dns.qry.type"])
        ts_pps = count / wall
        print(f"tshark -T fields     {ts_pps:>10,.0f} packets/s")
    else:
        print("tshark not installed: apt-get install tshark")

    wall, rss, s = dnsguard_run(work, WORK / "summary.json")
    dg_pps = count / wall
    print(f"dnsguard replay      {dg_pps:>10,.0f} packets/s (wall, incl. start-up), "
          f"{s['packets_per_second']:,} in the pipeline; peak RSS {rss / 1024:.0f} MB; "
          f"alerts {s['alerts']}")
    print(f"ratios: dnsguard/tshark {dg_pps / ts_pps:.2f}x, " if ts_pps else "ratios: ",
          f"dnsguard/iteration {dg_pps / (count / it):.2f}x")

    if args.flood:
        flood = WORK / "flood.pcap"
        build_flood(args.flood, flood)
        wall, rss, s = dnsguard_run(flood, WORK / "flood.json")
        print(f"flood: {args.flood:,} random names, {args.flood / wall:,.0f} packets/s, "
              f"peak RSS {rss / 1024:.0f} MB; tracked {s['tracked_keys']}; evicted "
              f"{s['evicted_keys']}")


if __name__ == "__main__":
    main()
