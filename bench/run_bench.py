"""Speed and memory benchmark: dnsguard replay against tshark and plain iteration.

Usage (from the repository root):

    python bench/run_bench.py [--packets 1000000] [--flood 5000000] [--corpus ../shared/corpus]
                              [--repeat 3] [--reuse] [--no-model]

1. Builds a workload of at least ``--packets`` frames from real captures — the corpus in
   ../shared/corpus and the project's own pcaps/, interleaved in time order — repeated with
   shifted timestamps and rewritten client addresses (so repetitions are new clients, not
   replays of the same keys), every frame re-framed as Ethernet so one pcap holds all of
   them. IP checksums are not recomputed: neither dnsguard nor tshark (by default) validates
   them.
2. Measures, on that same file, in each of ``--repeat`` rounds: ``dnsguard replay`` end to
   end (decode, features, rules, model, alerts) in packets/s and peak RSS; ``tshark -T
   fields`` (frame time, addresses, query name and type) as the reference; plain iteration
   over the file's records as the ceiling. Prints each round, then the medians and the
   median of the per-round ratios (results: bench/README.md).
3. With ``--flood N`` (default 5,000,000; 0 to skip), replays a hostile workload of N queries
   with random subdomains under random registered domains from random clients (or, with
   ``--flood-shape torture``, under a few victim domains from a pool of clients), and reports
   packets/s and peak RSS with the state caps and evictions from the summary.

Everything is written under bench/work/ (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
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
    # Each capture starts at 0: interleave them in time order, as one tap would see them (the
    # windows and time series assume capture time only moves forward within a file).
    frames.sort(key=lambda fr: fr[0])
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


FLOOD_SHAPES = ("random", "torture")
VICTIMS = 4  # registered domains a water-torture flood aims at
TORTURE_CLIENTS = 2000  # the bots (or open resolvers) it comes from


def flood_frames(count: int, shape: str = "random", seed: int = 7):
    """``(ts, raw IPv4 frame)`` of ``count`` flood queries, 0.1 ms apart. Every name is new.

    ``random``: random subdomains (8-40 characters) under random registered domains (5-12
    characters, five TLDs) from random clients in 10.0.0.0/8: every name, domain and most
    clients new (the worst case for key creation). ``torture``: "water torture" as resolvers
    see it, random subdomains under a few victim domains (``VICTIMS``) from a bounded pool of
    clients (``TORTURE_CLIENTS``): every name new, hardly any new key.
    """
    rnd = random.Random(seed)
    alpha = b"abcdefghijklmnopqrstuvwxyz0123456789"
    tlds = [b"com", b"net", b"org", b"io", b"de"]
    other = random.Random(seed + 1)  # the random shape stays the file it always was
    victims = [bytes(other.choices(alpha[:26], k=other.randint(6, 10))) for _ in range(VICTIMS)]
    pool = [0x0A000000 | other.getrandbits(24) for _ in range(TORTURE_CLIENTS)]
    ts = 1_700_000_000.0
    for i in range(count):
        sub = bytes(rnd.choices(alpha, k=rnd.randint(8, 40)))
        if shape == "random":
            dom = bytes(rnd.choices(alpha, k=rnd.randint(5, 12)))
            tld = rnd.choice(tlds)
            client = 0x0A000000 | rnd.getrandbits(24)
        else:
            k = rnd.randrange(VICTIMS)
            dom, tld = victims[k], tlds[k % len(tlds)]
            client = pool[rnd.randrange(TORTURE_CLIENTS)]
        qname = (bytes([len(sub)]) + sub + bytes([len(dom)]) + dom
                 + bytes([len(tld)]) + tld + b"\x00")
        dns = (struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + qname
               + b"\x00\x01\x00\x01")
        udp = struct.pack("!HHHH", 1024 + (i % 60000), 53, 8 + len(dns), 0) + dns
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         struct.pack("!I", client), b"\x0a\x00\x00\x35") + udp
        ts += 0.0001
        yield ts, ip


def build_flood(count: int, out: Path, seed: int = 7, shape: str = "random") -> int:
    """A pcap (raw IPv4 link type) of :func:`flood_frames`."""
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101))
        for ts, ip in flood_frames(count, shape, seed):
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(ip), len(ip)))
            f.write(ip)
    return count


_RSS_WRAPPER = ("import resource, subprocess, sys;"
                "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL);"
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
                "sys.exit(r.returncode)")


def measured(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of ``cmd``, run in a fresh wrapper process so the peak is
    its own (RUSAGE_CHILDREN of this process would be the maximum over every child so far)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 1):
        sys.stderr.write(r.stderr)
        raise SystemExit(f"{cmd[0]} failed with status {r.returncode}")
    return wall, int(r.stderr.strip().splitlines()[-1])


PURE = False  # --pure: the interpreted hot path (DNSGUARD_PURE=1), for comparison


def dnsguard_run(path: Path, summary: Path, extra: list[str] = ()) -> tuple[float, int, dict]:
    """``dnsguard replay`` end to end (start-up, model load, alerts written) on ``path``."""
    env = dict(os.environ, DNSGUARD_PURE="1") if PURE else None
    wall, rss = measured([sys.executable, "-m", "dnsguard", "replay", "-q", *extra,
                          "--alerts", os.devnull, "--summary-json", str(summary), str(path)],
                         env=env)
    return wall, rss, json.loads(summary.read_text())


def tshark_run(tshark: str, path: Path) -> tuple[float, int]:
    return measured([tshark, "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                     "-e", "ip.src", "-e", "ip.dst", "-e", "dns.qry.name", "-e", "dns.qry.type"])


def iterate(path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    r = CaptureReader.open(path)
    count = sum(1 for _ in r)
    r.close()
    return time.perf_counter() - t, count


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu or platform.processor()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flood", type=int, default=5_000_000,
                    help="queries of the random flood (0: skip it)")
    ap.add_argument("--flood-shape", choices=FLOOD_SHAPES, default="random",
                    help="random: every name under a new domain from a new client; torture: "
                         "random subdomains under a few victim domains (flood_frames)")
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of (iteration, tshark, dnsguard); medians are reported")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse bench/work/workload.pcap and flood.pcap if they exist")
    ap.add_argument("--no-model", action="store_true", help="pass --no-model to dnsguard")
    ap.add_argument("--pure", action="store_true",
                    help="run dnsguard's hot path interpreted (DNSGUARD_PURE=1), not compiled")
    args = ap.parse_args()
    global PURE
    PURE = args.pure
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    sources = sorted(args.corpus.glob("*.pcap*")) + sorted((ROOT / "pcaps").glob("*.pcap*"))
    work = WORK / "workload.pcap"
    if not (args.reuse and work.exists()):
        t = time.perf_counter()
        n = build_workload(sources, args.packets, work)
        print(f"workload: {n:,} packets, {work.stat().st_size / 1e6:.0f} MB from "
              f"{len(sources)} captures, built in {time.perf_counter() - t:.0f} s")
    extra = ["--no-model"] if args.no_model else []
    tshark = shutil.which("tshark")
    if not tshark:
        print("tshark not installed: apt-get install tshark")
    it_pps, ts_pps, ts_rss, dg_pps, dg_rss, dg_inner, r_ts, r_it = [], [], [], [], [], [], [], []
    s: dict = {}
    for i in range(args.repeat):
        # One round: the three measured back to back on the same file, so that the ratios
        # compare runs that met the same machine load.
        it, count = iterate(work)
        it_pps.append(count / it)
        wall, rss, s = dnsguard_run(work, WORK / "summary.json", extra)
        dg_pps.append(count / wall)
        dg_rss.append(rss)
        dg_inner.append(s["packets_per_second"])
        r_it.append(dg_pps[-1] / it_pps[-1])
        line = (f"round {i + 1}: iteration {it_pps[-1]:,.0f}/s; dnsguard {dg_pps[-1]:,.0f}/s "
                f"({dg_inner[-1]:,}/s in the pipeline), peak RSS {rss / 1024:.0f} MB")
        if tshark:
            wall, rss = tshark_run(tshark, work)
            ts_pps.append(count / wall)
            ts_rss.append(rss)
            r_ts.append(dg_pps[-1] / ts_pps[-1])
            line += f"; tshark {ts_pps[-1]:,.0f}/s, peak RSS {rss / 1024:.0f} MB"
        print(line, flush=True)
    med = statistics.median
    print(f"packets: {count:,} ({work.stat().st_size / 1e6:.0f} MB); medians of "
          f"{args.repeat} rounds:")
    print(f"plain iteration      {med(it_pps):>10,.0f} packets/s")
    if ts_pps:
        print(f"tshark -T fields     {med(ts_pps):>10,.0f} packets/s; peak RSS "
              f"{med(ts_rss) / 1024:.0f} MB")
    print(f"dnsguard replay      {med(dg_pps):>10,.0f} packets/s (wall, incl. start-up), "
          f"{med(dg_inner):,.0f} in the pipeline; peak RSS {med(dg_rss) / 1024:.0f} MB; "
          f"alerts {s['alerts']}; hot path {s.get('hot_path', '?')}")
    print("ratios (median of per-round ratios): "
          + (f"dnsguard/tshark {med(r_ts):.2f}x, " if r_ts else "")
          + f"dnsguard/iteration {med(r_it):.2f}x")
    print(f"state: tracked {s['tracked_keys']}; evicted {s['evicted_keys']}; caches "
          f"{s.get('caches', {})}")

    if args.flood:
        flood = WORK / ("flood.pcap" if args.flood_shape == "random" else
                        f"flood-{args.flood_shape}.pcap")
        if not (args.reuse and flood.exists()):
            build_flood(args.flood, flood, shape=args.flood_shape)
        wall, rss, s = dnsguard_run(flood, WORK / "flood.json", extra)
        n = s["packets"]
        print(f"flood ({args.flood_shape}): {n:,} new names, {n / wall:,.0f} packets/s, "
              f"peak RSS {rss / 1024:.0f} MB; tracked {s['tracked_keys']}; evicted "
              f"{s['evicted_keys']}; caches {s.get('caches', {})}")


if __name__ == "__main__":
    main()
