"""Memory of the long-horizon state over a day: 1M registered domains in 24 h of capture time.

Feeds a pipeline (default settings: rules, model, series, long horizon) in-process with
generated raw-IP frames covering ``--hours`` of capture time:

* ``--domains`` distinct registered domains, each looked up 1–3 times (names under it) by one
  of ``--clients`` clients, spread evenly over the day: every one is new to every table;
* 2,000 popular domains asked again and again (a third of the queries), with answers;
* three slow exfiltrations (one Base32 chunk a minute each, all day) that must survive the
  churn: the run checks that each one's long_domain key is still tracked at the end and
  raised an alert.

Every simulated hour it records the process's resident memory (``VmRSS``), the tracked and
evicted keys per table and the long-horizon table sizes. The result is **flat** when the
resident memory of the last hour is within ``--tolerance`` (default 10%) of the hour
half-way through the run (or the hour both long-horizon tables began evicting, if later);
the exit status is 1 when it is not, or when an exfiltration was lost. Run it on a quiet machine:

    python bench/long_horizon_memory.py                    # 1M domains, 24 h (~3.4M frames)
    python bench/long_horizon_memory.py --domains 100000   # a quicker look
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnsguard.detect.rules import load_dir  # noqa: E402
from dnsguard.pipeline import Pipeline  # noqa: E402
from dnsguard.settings import Settings  # noqa: E402

RESOLVER = bytes([10, 255, 0, 1])
_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


def _wire(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in (p.encode() for p in name.split("."))) + b"\0"


def frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    udp = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    return _IP.pack(0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst) + udp


def query(qid: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _wire(name) + struct.pack(
        "!HH", qtype, 1)


def response(qid: int, name: str) -> bytes:
    return (struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + _wire(name)
            + struct.pack("!HH", 1, 1) + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4)
            + b"\xc6\x33\x64\x07")


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", type=int, default=1_000_000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--clients", type=int, default=5_000)
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--long-max-domains", type=int, help="Settings.long_max_domains "
                    "(default: the product's)")
    ap.add_argument("--long-max-pairs", type=int, help="Settings.long_max_pairs")
    a = ap.parse_args(argv)
    rng = random.Random(7)
    s = Settings()
    if a.no_model:
        s.use_model = False
    if a.long_max_domains:
        s.long_max_domains = a.long_max_domains
    if a.long_max_pairs:
        s.long_max_pairs = a.long_max_pairs
    alerts: list[dict] = []
    pipe = Pipeline(s, load_dir(s.rules), alerts.append)
    hz = pipe.horizon
    t0 = 1_700_000_000.0
    clients = [bytes([10, 1 + i // 65536 % 200, i // 256 % 256, i % 256])
               for i in range(a.clients)]
    popular = [f"site{i}.com" for i in range(2000)]
    exfil = [(bytes([10, 250, 0, 1 + i]), f"x.sync-cdn{i}.net") for i in range(3)]
    letters = "abcdefghijklmnopqrstuvwxyz"
    # Events: each new domain gets 1–3 lookups at one moment; popular lookups are spread.
    per_hour_new = a.domains / a.hours
    rows = []
    fed = 0
    qid = 0
    next_exfil = 0.0
    cap_hour = None
    started = time.perf_counter()
    hour = 0
    made = 0
    while hour < a.hours:
        h_end = (hour + 1) * 3600.0
        n_new = int(per_hour_new * (hour + 1)) - made
        events = []
        for _ in range(n_new):
            made += 1
            d = "".join(rng.choice(letters) for _ in range(rng.randint(5, 12))) + \
                f"{made}.{rng.choice(('com', 'net', 'org', 'io', 'de'))}"
            t = hour * 3600.0 + rng.random() * 3600.0
            c = rng.choice(clients)
            for k in range(rng.randint(1, 3)):
                events.append((t + k * 0.05, c, ("www", "api", "cdn")[k] + "." + d, False))
        for _ in range(n_new // 2):
            t = hour * 3600.0 + rng.random() * 3600.0
            events.append((t, rng.choice(clients), "www." + rng.choice(popular), True))
        while next_exfil < h_end:
            for i, (c, zone) in enumerate(exfil):
                chunk = rng.randbytes(30)
                label = base64.b32encode(chunk).decode().rstrip("=").lower()
                events.append((next_exfil + i, c, f"{label}.{zone}", True))
            next_exfil += 60.0
        events.sort(key=lambda e: e[0])
        for t, c, name, answer in events:
            qid = (qid + 1) & 0xFFFF
            ts = t0 + t
            f = frame(c, RESOLVER, 40000 + qid % 20000, 53, query(qid, name))
            pipe.feed(ts, 101, f, len(f))
            fed += 1
            if answer:
                f = frame(RESOLVER, c, 53, 40000 + qid % 20000, response(qid, name))
                pipe.feed(ts + 0.01, 101, f, len(f))
                fed += 1
        hour += 1
        sm = pipe.summary()
        lh = sm["long_horizon"]
        full = lh["evicted"]["long_domain"] > 0 and lh["evicted"]["long_client_domain"] > 0
        if full and cap_hour is None:
            cap_hour = hour
        rows.append({"hour": hour, "frames": fed, "rss_mb": round(rss_kb() / 1024, 1),
                     "long_domain": lh["long_domain"], "long_client_domain":
                     lh["long_client_domain"], "long_evicted": lh["evicted"],
                     "tracked": sm["tracked_keys"], "evicted": sm["evicted_keys"],
                     "registered_domains": sm["registered_domains"],
                     "seconds": round(time.perf_counter() - started, 1)})
        r = rows[-1]
        print(f"hour {hour:>4}: {fed:>9,} frames  RSS {r['rss_mb']:>7.1f} MB  long_domain "
              f"{r['long_domain']:>7,}  pairs {r['long_client_domain']:>7,}  evicted "
              f"{r['long_evicted']}  {r['seconds']:.0f} s", file=sys.stderr, flush=True)
    pipe.finish()
    kept = [zone for c, zone in exfil if hz is not None
            and zone.split(".", 1)[1] in hz.domains]
    alerted = sorted({a["domain"] for a in alerts if a.get("scope") == "long_domain"})
    # The baseline: half-way through the run, or when both long-horizon tables began to
    # evict if that came later (the other caps, e.g. the name cache, fill in the first hours).
    base = None if cap_hour is None else next(
        (r for r in rows if r["hour"] >= max(cap_hour, a.hours / 2)), None)
    last = rows[-1]
    flat = base is not None and last["rss_mb"] <= base["rss_mb"] * (1 + a.tolerance)
    result = {"domains": a.domains, "hours": a.hours, "clients": a.clients, "frames": fed,
              "rows": rows, "caps_reached_hour": cap_hour,
              "baseline_hour": base["hour"] if base else None, "flat": flat,
              "exfil_kept": kept, "exfil_alerted": alerted,
              "seconds": round(time.perf_counter() - started, 1),
              "pipeline_summary": {k: v for k, v in pipe.summary().items()
                                   if k in ("tracked_keys", "evicted_keys", "long_horizon",
                                            "caches")}}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    ok = flat and len(kept) == len(exfil) and len(alerted) >= len(exfil)
    if not ok:
        print("NOT OK: " + ("memory grew after the caps filled; " if not flat else "")
              + ("an exfiltration key was evicted or not alerted" if len(kept) < len(exfil)
                 or len(alerted) < len(exfil) else ""), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
