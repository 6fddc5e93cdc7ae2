"""The numbers that size a multi-worker sensor and a fleet (docs/scaling.md), measured on
replayed captures in one process (no capture, no root):

1. **Worker versus judge cost**: the capture split as the kernel's fanout would split it
   (:class:`dnsguard.workers.ShardedPipelines`, 1 worker), the time spent in the workers'
   ``feed`` (decode, client scopes, shipping) and in the judge's ``observe`` (domain scope,
   message rules, series) per frame and per observation; the judge's rate bounds the sensor.
2. **Observation size**: bytes per pickled observation in a batch (what a worker sends the
   supervisor per DNS message).
3. **State per key**: memory per tracked key of the domain table (tracemalloc of the
   window tables after the replay, divided by their keys): what a million keys cost.
4. **Window summary size**: bytes of a per-domain window summary as a fleet would publish it
   (the counters, the exact name hashes below the cap or the 256 HyperLogLog registers above
   it, the samples), counted as packed fixed-width fields — median, p99 and max over the
   domain keys of the replay.

Usage (from the repository root):

    python bench/workers_bench.py CAPTURE [CAPTURE ...] [--json out.json]

Numbers depend on the machine's load; say how loaded it was when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnsguard.capture.pcapfile import CaptureReader, open_capture  # noqa: E402
from dnsguard.detect.rules import load_dir  # noqa: E402
from dnsguard.settings import Settings  # noqa: E402
from dnsguard.workers import ShardedPipelines  # noqa: E402

_COUNTERS = ("queries", "responses", "bytes_up", "bytes_down", "sum_sub_len", "encoded",
             "non_ldh", "rare", "carrier", "txt", "nxdomain", "max_label")


def summary_bytes(st) -> int:
    """A per-domain window summary, packed: start/last (2 doubles), 12 counters (u32), the
    entropy sum (double), the query-type mix (u16 type + u32 count each), the distinct names
    (u64 hashes while exact, else 256 one-byte registers), up to 3 sample names."""
    n = 16 + 4 * len(_COUNTERS) + 8 + 6 * len(st.qtypes)
    names = st.names
    regs = getattr(names, "_regs", None)
    n += 256 if regs is not None else 8 * len(names)
    n += sum(2 + len(s.encode()) for s in st.samples)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("captures", type=Path, nargs="+")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    s = Settings()
    s.use_model = False
    rs = load_dir(s.rules)
    frames = []
    for p in args.captures:
        frames += [(ts, lt, bytes(d), wl) for ts, lt, d, wl in
                   CaptureReader(open_capture(p), p.name)]
    frames.sort(key=lambda f: f[0])
    # Run 1, timed; run 2 under tracemalloc (which slows Python several times) for memory.
    sp = ShardedPipelines(s, rs, lambda a: None, 1)
    judge = sp.judge
    t_judge = 0.0
    observe = judge.observe
    sizes: list = []

    def timed(rec):
        nonlocal t_judge
        t0 = time.perf_counter()
        observe(rec)
        t_judge += time.perf_counter() - t0
        if len(sizes) < 20000:
            sizes.append(rec)

    judge.observe = timed
    t0 = time.perf_counter()
    for f in frames:
        sp.feed(*f)
    total = time.perf_counter() - t0
    dom = judge.tables["domain"]
    tracemalloc.start()
    sp2 = ShardedPipelines(s, rs, lambda a: None, 1)
    for f in frames:
        sp2.feed(*f)
    mem = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # Window-table state: what the tables' key stats and their containers hold.
    table_bytes = sum(st.size for st in mem.statistics("filename")
                      if "features/window" in st.traceback[0].filename
                      or "features/sketch" in st.traceback[0].filename)
    keys = sum(len(t) for t in sp2.judge.tables.values()) + sum(
        len(t) for w in sp2.workers for t in w.tables.values())
    batch = [(i, r) for i, r in enumerate(sizes)]
    per_obs = len(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)) / max(len(batch), 1)
    summ = sorted(summary_bytes(st) for st in dom.keys.values())
    n_obs = judge.observed
    out = {
        "captures": [str(p) for p in args.captures],
        "frames": len(frames),
        "observations": n_obs,
        "seconds_total": round(total, 3),
        "judge_seconds": round(t_judge, 3),
        "worker_us_per_frame": round(1e6 * (total - t_judge) / len(frames), 2),
        "judge_us_per_observation": round(1e6 * t_judge / max(n_obs, 1), 2),
        "judge_observations_per_s": round(n_obs / t_judge) if t_judge else None,
        "observation_bytes_pickled": round(per_obs, 1),
        "tracked_keys": keys,
        "window_state_bytes_per_key": round(table_bytes / keys) if keys else None,
        "domain_keys": len(dom),
        "summary_bytes": {"median": statistics.median(summ) if summ else None,
                          "p99": summ[int(len(summ) * 0.99)] if summ else None,
                          "max": summ[-1] if summ else None},
        "load_average": os.getloadavg()[0],
        "compiled": not os.environ.get("DNSGUARD_PURE"),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
