"""Cost of the long-horizon state on replay speed: the same captures replayed in one process
with ``Settings.long_horizon`` on and off, alternately, ``--repeat`` rounds; CPU time of the
feed loop (``time.process_time``: less sensitive than wall time to other processes on a
shared machine). Reports each round's ratio and the median.

    python bench/long_horizon_speed.py --repeat 7 ../shared/corpus/*.pcap*
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnsguard.capture.pcapfile import CaptureReader, open_capture  # noqa: E402
from dnsguard.detect.rules import load_dir  # noqa: E402
from dnsguard.pipeline import Pipeline, hot_loop_gc, restore_gc  # noqa: E402
from dnsguard.settings import Settings  # noqa: E402


def once(paths: list[Path], long_horizon: bool, model: bool) -> tuple[float, int]:
    s = Settings(use_model=model, long_horizon=long_horizon)
    pipe = Pipeline(s, load_dir(s.rules), lambda a: None)
    n = 0
    saved = hot_loop_gc()
    t = time.process_time()
    try:
        for p in paths:
            with open_capture(p) as f:
                n += pipe.feed_frames(CaptureReader(f, str(p)))
        pipe.finish()
    finally:
        dt = time.process_time() - t
        restore_gc(saved)
    return dt, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("captures", nargs="+", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--model", action="store_true", help="with the shipped model (default off)")
    a = ap.parse_args(argv)
    from dnsguard import _compiled

    print(f"hot path: {_compiled.hot_path()}", file=sys.stderr)
    ratios = []
    for i in range(a.repeat):
        off, n = once(a.captures, False, a.model)
        on, _ = once(a.captures, True, a.model)
        ratios.append(on / off)
        print(f"round {i + 1}: {n:,} packets, off {n / off:,.0f} pkt/s, on {n / on:,.0f} "
              f"pkt/s, cost {100 * (on / off - 1):+.1f}%", file=sys.stderr, flush=True)
    med = statistics.median(ratios)
    print(f"median CPU-time cost of the long horizon: {100 * (med - 1):+.1f}% "
          f"({a.repeat} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
