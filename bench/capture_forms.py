"""Replay speed by capture form: the same packets as pcap and as pcapng; the corpus as one
pcapng against tshark's field extraction; a random-subdomain flood.

Usage (from the repository root; numbers for the record need a quiet machine):

    python bench/capture_forms.py [--repeat 3] [--packets 1000000] [--corpus DIR]
                                  [--flood 1000000] [--no-model] [--skip-tshark]

1. **pcapng vs pcap.** ``bench/work/workload.pcap`` (built as ``run_bench.py`` builds it,
   ``--packets`` frames, unless it exists) rewritten as pcapng with the same frames and
   timestamps (one section, one interface, enhanced packet blocks, microsecond timestamps:
   what dumpcap writes). Reported: packets/s of ``dnsguard replay`` on each, and their
   ratio per round (target: pcapng >= 0.9x pcap).
2. **The corpus as one pcapng vs tshark.** Every corpus capture merged in time order with
   ``mergecap -F pcapng`` (so each keeps its own link type: a fifth of the corpus is Linux
   cooked capture), then ``dnsguard replay`` against ``tshark -T fields`` (the same fields
   as run_bench.py) on that file; the ratio per round (target >= 3x). Repeated ``--corpus-x``
   times (default 10) with mergecap, so start-up does not dominate.
3. **Flood.** ``--flood N`` queries with a new random name each (run_bench.build_flood): the
   replay's packets/s and the summary's caches (target >= 100k packets/s).

Everything is written under bench/work/ (ignored by git). Each dnsguard and tshark run is a
fresh process timed by its wall clock (start-up included); medians of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import (  # noqa: E402  (the sibling script's helpers)
    WORK,
    build_flood,
    build_workload,
    dnsguard_run,
    machine,
    tshark_run,
)

from dnsguard.capture.pcapfile import CaptureReader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def to_pcapng(src: Path, out: Path) -> int:
    """``src`` (pcap, one link type) rewritten as pcapng: SHB, one IDB, an EPB per frame
    with a microsecond timestamp (the pcap's own resolution)."""
    r = CaptureReader.open(src)
    n = 0
    with open(out, "wb") as f:
        frames = iter(r)
        first = next(frames, None)
        lt = first[1] if first is not None else 1
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        f.write(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb)) + shb
                + struct.pack("<I", 12 + len(shb)))
        idb = struct.pack("<HHI", lt, 0, 262144)
        f.write(struct.pack("<II", 1, 12 + len(idb)) + idb + struct.pack("<I", 12 + len(idb)))
        for ts, _lt, data, wirelen in ([first] if first else []) + list(frames):
            ticks = int(round(ts * 1e6))
            pad = b"\x00" * (-len(data) % 4)
            blen = 32 + len(data) + len(pad)
            f.write(struct.pack("<IIIIIII", 6, blen, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                len(data), wirelen) + data + pad + struct.pack("<I", blen))
            n += 1
    r.close()
    return n


def corpus_pcapng(corpus: Path, times: int, out: Path) -> None:
    """The corpus merged by time into one pcapng, ``times`` over (mergecap -a appends)."""
    one = WORK / "corpus-once.pcapng"
    caps = sorted(str(p) for p in corpus.glob("*.pcap*"))
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(one), *caps], check=True)
    subprocess.run(["mergecap", "-a", "-F", "pcapng", "-w", str(out), *[str(one)] * times],
                   check=True)


def frames_in(path: Path) -> int:
    r = CaptureReader.open(path)
    n = sum(1 for _ in r)
    r.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--packets", type=int, default=1_000_000,
                    help="workload size when bench/work/workload.pcap must be built")
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--corpus-x", type=int, default=10,
                    help="copies of the corpus in the merged pcapng")
    ap.add_argument("--flood", type=int, default=1_000_000, help="0: skip the flood")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--skip-tshark", action="store_true")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    extra = ["--no-model"] if args.no_model else []
    med = statistics.median

    # 1. pcapng vs pcap, the same packets.
    pcap = WORK / "workload.pcap"
    if not pcap.exists():  # as run_bench.py builds it: every frame re-framed as Ethernet
        sources = sorted(args.corpus.glob("*.pcap*")) + sorted((ROOT / "pcaps").glob("*.pcap"))
        build_workload(sources, args.packets, pcap)
    ng = pcap.with_suffix(".pcapng")
    if not ng.exists() or ng.stat().st_mtime < pcap.stat().st_mtime:
        t = time.perf_counter()
        count = to_pcapng(pcap, ng)
        print(f"{ng.name}: {count:,} frames, written in {time.perf_counter() - t:.0f} s")
    count = frames_in(pcap)
    ratios, pps_pcap, pps_ng = [], [], []
    for i in range(args.repeat):
        w1, _, s1 = dnsguard_run(pcap, WORK / "forms-pcap.json", extra)
        w2, _, s2 = dnsguard_run(ng, WORK / "forms-ng.json", extra)
        assert s1["packets"] == s2["packets"] == count, (s1["packets"], s2["packets"], count)
        pps_pcap.append(count / w1)
        pps_ng.append(count / w2)
        ratios.append(pps_ng[-1] / pps_pcap[-1])
        print(f"round {i + 1}: pcap {pps_pcap[-1]:,.0f}/s; pcapng {pps_ng[-1]:,.0f}/s; "
              f"pcapng/pcap {ratios[-1]:.2f}x", flush=True)
    print(f"pcap vs pcapng, {count:,} packets: pcap {med(pps_pcap):,.0f}/s, pcapng "
          f"{med(pps_ng):,.0f}/s, pcapng/pcap {med(ratios):.2f}x (target >= 0.9x)")

    # 2. The corpus as one pcapng vs tshark.
    tshark = shutil.which("tshark")
    if tshark and not args.skip_tshark:
        merged = WORK / f"corpus-x{args.corpus_x}.pcapng"
        if not merged.exists():
            corpus_pcapng(args.corpus, args.corpus_x, merged)
        count = frames_in(merged)
        r_ts, dg, ts = [], [], []
        for i in range(args.repeat):
            w1, _, _s = dnsguard_run(merged, WORK / "forms-corpus.json", extra)
            w2, _ = tshark_run(tshark, merged)
            dg.append(count / w1)
            ts.append(count / w2)
            r_ts.append(dg[-1] / ts[-1])
            print(f"round {i + 1}: dnsguard {dg[-1]:,.0f}/s; tshark {ts[-1]:,.0f}/s; "
                  f"{r_ts[-1]:.2f}x", flush=True)
        print(f"corpus as one pcapng ({count:,} packets): dnsguard {med(dg):,.0f}/s, tshark "
              f"{med(ts):,.0f}/s, dnsguard/tshark {med(r_ts):.2f}x (target >= 3x)")

    # 3. The flood.
    if args.flood:
        flood = WORK / f"flood-{args.flood}.pcap"
        if not flood.exists():
            build_flood(args.flood, flood)
        pps = []
        for _ in range(args.repeat):
            wall, _, s = dnsguard_run(flood, WORK / "forms-flood.json", extra)
            pps.append(s["packets"] / wall)
        print(f"flood, {s['packets']:,} new names: {med(pps):,.0f} packets/s (wall; "
              f"{s['packets_per_second']:,} in the pipeline; target >= 100k); caches "
              f"{s['caches']}")


if __name__ == "__main__":
    main()
