"""The cost of a never-seen name: a flood fed in-process, warm state, one measured stretch.

Usage (from the repository root):

    python bench/flood_cost.py [--shape random|torture] [--warm 60000] [--count 20000]
                               [--no-model] [--small-caps]
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*feed_frames*' \\
        python bench/flood_cost.py --count 20000 --callgrind

Builds ``--warm + --count`` flood frames (``run_bench.flood_frames``: ``random``, every name
under a new registered domain from a new client; ``torture``, random subdomains under a few
victim domains from a bounded pool of clients), feeds the first ``--warm`` to a pipeline
configured as ``dnsguard replay`` configures it (rules, the shipped model unless
``--no-model``, series, long horizon) so that every table, cache and sketch is at its
steady state (full, turning over), then feeds ``--count`` more with ``Pipeline.feed_frames``
and prints packets/s of that stretch. Under callgrind (``--callgrind``: nothing else is
timed), the instructions counted in ``feed_frames``, divided by ``--count``,
are the cost per flood packet: independent of the machine's load, unlike packets/s.

``--small-caps`` shrinks the key tables and caches tenfold (so the warm-up under callgrind
can be short); per-packet costs do not depend on the caps, only how soon they are reached.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import flood_frames  # noqa: E402

from dnsguard._compiled import hot_path  # noqa: E402
from dnsguard.detect.rules import load_dir  # noqa: E402
from dnsguard.pipeline import Pipeline, hot_loop_gc  # noqa: E402
from dnsguard.settings import Settings  # noqa: E402

SMALL = {"max_domains": 2000, "max_client_domains": 2000, "max_clients": 1000,
         "name_cache": 10_000, "domain_cache": 2000, "long_max_domains": 10_000,
         "long_max_pairs": 5000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("random", "torture"), default="random")
    ap.add_argument("--warm", type=int, default=60_000)
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--small-caps", action="store_true")
    ap.add_argument("--callgrind", action="store_true",
                    help="under valgrind: print no timing, only what was fed")
    args = ap.parse_args()
    s = Settings(use_model=not args.no_model, **(SMALL if args.small_caps else {}))
    pipe = Pipeline(s, load_dir(s.rules), lambda a: None)
    frames = list(flood_frames(args.warm + args.count, args.shape))
    feed = pipe.feed
    hot_loop_gc()
    for ts, data in frames[:args.warm]:
        feed(ts, 101, data, len(data))
    batch = [(ts, 101, data, len(data)) for ts, data in frames[args.warm:]]
    t = time.perf_counter()
    # The stretch callgrind counts: Pipeline.feed_frames (compiled, its own C function) runs
    # only here; the warm-up calls Pipeline.feed.
    pipe.feed_frames(batch)
    dt = time.perf_counter() - t
    summ = pipe.summary()
    if not args.callgrind:
        print(f"{args.shape}: {args.count:,} packets in {dt:.2f} s = {args.count / dt:,.0f} "
              f"packets/s (load average {os.getloadavg()[0]:.2f}); hot path "
              f"{hot_path()}")
    print(f"alerts {summ['alerts']}; tracked {summ['tracked_keys']}; caches {summ['caches']}")


if __name__ == "__main__":
    main()
