"""The cyclic garbage collector's work over one ``dnsguard replay``, counted, not timed.

At the start of every collection during the replay this counts the tracked objects in the
generations that collection examines (what it walks); their sum over the run is the
collector's work, the same on a loaded machine as on a quiet one (with the same build; no
hash seed needs pinning since the sketches hash with the keyed ``features.namehash``).
``--types`` also tallies those objects by type (slow: minutes), to see which objects the
collector walks. Runs the replay in-process exactly as the CLI does
(``cli.main``: start-up without the collector, then ``pipeline.hot_loop_gc``).

    python bench/gc_work.py bench/work/workload.pcap
    python bench/gc_work.py --no-long-horizon bench/work/workload.pcap

Results: bench/README.md, "Session 7, long horizon".
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from collections import Counter


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="+")
    ap.add_argument("--no-long-horizon", action="store_true",
                    help="Settings.long_horizon off (the long-horizon tables' share)")
    ap.add_argument("--types", type=int, metavar="N", default=0,
                    help="also list the N object types the collector examined most")
    args = ap.parse_args()

    examined: Counter = Counter()
    collections: Counter = Counter()
    types: Counter = Counter()
    gc_cpu = 0.0
    started = 0.0
    busy = False

    def count(phase: str, info: dict) -> None:
        nonlocal busy, gc_cpu, started
        if busy:
            return
        if phase == "stop":
            gc_cpu += time.process_time() - started
            return
        busy = True  # get_objects allocates: no recursion if it starts a collection
        g = info["generation"]
        collections[g] += 1
        for x in range(g + 1):
            objs = gc.get_objects(x)
            examined[g] += len(objs)
            if args.types:
                types.update(type(o).__name__ for o in objs)
        busy = False
        started = time.process_time()  # the collection's own CPU time, not the counting

    from dnsguard import cli, settings

    if args.no_long_horizon:
        init = settings.Settings.__init__

        def no_long(self, *a, **k) -> None:
            init(self, *a, **k)
            self.long_horizon = False

        settings.Settings.__init__ = no_long
    gc.callbacks.append(count)
    cpu = time.process_time()
    cli.main(["replay", "-q", "--alerts", "/dev/null", *args.capture])
    cpu = time.process_time() - cpu
    gc.callbacks.remove(count)
    out = {"collections": {str(k): v for k, v in sorted(collections.items())},
           "objects_examined": {str(k): v for k, v in sorted(examined.items())},
           "objects_examined_total": sum(examined.values()),
           "tracked_at_end": len(gc.get_objects()),
           # CPU time: machine load changes these two (cache, frequency), less than wall time
           "cpu_seconds": round(cpu, 2), "gc_cpu_seconds": round(gc_cpu, 3),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    if args.types:
        out["types"] = dict(types.most_common(args.types))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
