"""Replay capture files through the pipeline: the analyst's entry point and eval's engine."""

from __future__ import annotations

import heapq
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dnsguard import _compiled
from dnsguard.capture.dnstap import DnstapCounters, DnstapFile
from dnsguard.capture.framestream import looks_like_framestream
from dnsguard.capture.pcapfile import (
    STDIN,
    CaptureError,
    CaptureReader,
    merge_frames,
    open_capture,
)
from dnsguard.decode.packet import SUPPORTED_LINKTYPES
from dnsguard.detect.rules import RuleSet
from dnsguard.pipeline import Pipeline, hot_loop_gc, restore_gc
from dnsguard.settings import Settings

log = logging.getLogger(__name__)



@dataclass
class ReplayResult:
    summary: dict
    errors: list[str] = field(default_factory=list)  # files that could not be read at all
    damaged: list[str] = field(default_factory=list)  # files read only in part
    files_read: int = 0


class _Progress:
    """A one-line progress bar on a terminal (bytes of input consumed)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.next = 0.0
        self.t0 = time.monotonic()

    def update(self, done: int, packets: int) -> None:
        now = time.monotonic()
        if not self.enabled or now < self.next:
            return
        self.next = now + 0.25
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        rate = packets / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}% {packets} packets {rate:,.0f}/s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 78 + "\r")
            sys.stderr.flush()


def replay(paths: list[str | Path], settings: Settings, ruleset: RuleSet,
           emit: Callable[[dict], None], progress: bool = False,
           pipeline: Pipeline | None = None) -> ReplayResult:
    """Replay ``paths`` as one stream in time order; never raises for bad input."""
    pipe = pipeline or Pipeline(settings, ruleset, emit)
    readers: list[CaptureReader] = []
    taps: list[DnstapFile] = []  # dnstap files, recognised by content
    tap_counters = DnstapCounters()
    errors: list[str] = []
    for p in paths:
        try:
            # Opened once and told apart by content: a pipe or stdin cannot be opened twice.
            f = open_capture(p)
            if _is_framestream(f):
                taps.append(DnstapFile(p, tap_counters, f))
                continue
            try:
                r = CaptureReader(f, name="stdin" if str(p) == STDIN else str(p))
            except CaptureError:
                f.close()
                raise
        except CaptureError as e:
            errors.append(str(e))
            log.error("%s", e)
            continue
        lt = getattr(r, "_linktype", None)
        if lt is not None and lt not in SUPPORTED_LINKTYPES:
            msg = (f"{p}: unsupported link type {lt} (supported: "
                   f"{', '.join(f'{k} {v}' for k, v in sorted(SUPPORTED_LINKTYPES.items()))})")
            errors.append(msg)
            log.error("%s", msg)
            r.close()
            continue
        readers.append(r)
    total = sum(_size(p) for p in paths)
    bar = _Progress(total, progress and sys.stderr.isatty())
    t0 = time.monotonic()
    n = 0
    feed = pipe.feed
    gc_saved = hot_loop_gc()
    try:
        if taps:
            n = _feed_mixed(pipe, readers, taps)
        elif len(readers) == 1:
            # One file: no merge, no per-frame (source, frame) pairs.
            r0 = readers[0]
            pipe.source = r0.name
            n = pipe.feed_frames(r0, (lambda k: bar.update(r0.offset, k)) if bar.enabled
                                 else None)
        else:
            for src, (ts, lt, data, wirelen) in merge_frames((r.name, r) for r in readers):
                if src is not pipe.source:
                    pipe.source = src
                feed(ts, lt, data, wirelen)
                n += 1
                if not n & 0x3FFF:
                    bar.update(sum(r.offset for r in readers), n)
        pipe.finish()
    finally:
        restore_gc(gc_saved)
        bar.close()
        for r in readers:
            r.close()
        for t in taps:
            t.close()
    elapsed = time.monotonic() - t0
    summary = pipe.summary()
    summary["seconds"] = round(elapsed, 3)
    summary["packets_per_second"] = round(summary["packets"] / elapsed) if elapsed > 0 else 0
    summary["hot_path"] = _compiled.hot_path()
    res = ReplayResult(summary, errors, files_read=len(readers) + len(taps))
    if taps:
        summary["dnstap"] = tap_counters.summary()
        for t in taps:
            if t.stats.damaged:
                res.damaged.append(f"{t.name}: {t.stats.damaged}")
    for r in readers:
        if r.stats.damaged:
            res.damaged.append(f"{r.name}: {r.stats.damaged}")
        unsupported = [t for t in r.stats.linktypes if t not in SUPPORTED_LINKTYPES]
        if unsupported and r.stats.frames and pipe.counters["unsupported"] >= r.stats.frames:
            msg = f"{r.name}: unsupported link type {unsupported[0]}; no frame could be decoded"
            errors.append(msg)
            log.error("%s", msg)
    summary["files"] = {"read": res.files_read, "unreadable": len(errors),
                        "damaged": len(res.damaged)}
    return res


def _feed_mixed(pipe: Pipeline, readers: list[CaptureReader], taps: list[DnstapFile]) -> int:
    """Feed dnstap files (and any captures beside them) as one stream in time order: a
    dnstap message goes to ``Pipeline.feed_message``, a frame to ``Pipeline.feed``."""
    if len(taps) == 1 and not readers:
        t = taps[0]
        pipe.source = t.name
        return t.feed(pipe)
    streams = [_tagged(i, r.name, False, r) for i, r in enumerate(readers)]
    streams += [_tagged(len(readers) + i, t.name, True, t.messages())
                for i, t in enumerate(taps)]
    n = 0
    for _, _, src, is_msg, item in heapq.merge(*streams):
        if src is not pipe.source:
            pipe.source = src
        if is_msg:
            pipe.feed_message(*item)
        else:
            pipe.feed(*item)
        n += 1
    return n


def _tagged(i: int, src: str, is_msg: bool, items) -> Iterator[tuple]:
    # A function, not a generator expression: each stream keeps its own ``i`` and ``src``.
    for it in items:
        yield it[0], i, src, is_msg, it


def _is_framestream(f) -> bool:
    """Whether the opened input starts like a dnstap (Frame Streams) file; nothing is
    consumed (a peek at the buffer). Unreadable input says no: the capture reader reports
    it."""
    try:
        return looks_like_framestream(f.peek(12)[:12])
    except (OSError, EOFError, ValueError, zlib.error):
        return False


def _size(p: str | Path) -> int:
    try:
        return os.path.getsize(p)
    except OSError:
        return 0
