"""Ties the series store to the detectors and the alert path.

When a step closes (capture time; never per packet), every tracked series — and the
``other`` aggregate of each kind — that has at least ``MIN_HISTORY`` closed steps before the
newest one (10 steps: 10 minutes at the default 60 s step) and whose last ``SUSTAIN`` (2)
points each pass the volume floor of a metric is tested on that metric, on log(1 + x), with
every detector of :data:`dnsguard.series.detectors.VOLUME_DETECTORS`, and its query-type
mix with the chi-square test. A metric is anomalous when at least ``consensus`` detectors
(default 4 of 7) fire on it, as Skyline's consensus; a key alerts on volume only when a
bytes metric (``data_metrics``) is among its anomalous ones. The query-type test alerts on
its own, on a move toward data-carrying types (its effect size is required as well as its
p-value). The anomalies of one key at one step become one ``dns_volume_anomaly`` alert
through the pipeline's policy (suppression per key and kind, the overall rate limit), with
the schema of tunnel alerts. Why each of these (issue #12: browsing sessions, reverse
sweeps and mix changes on the lab's benign sets): docs/timeseries.md.

Volume floor (per 60 s, scaled with the step): each of the last two points must be at least
the floor, and at least the floor above the median of the baseline before them. Defaults:
120 queries, 60 distinct names, 12 KiB up, 48 KiB down, 60 NXDOMAIN answers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dnsguard.dns import rdatatype
from dnsguard.output.alerts import iso_time
from dnsguard.series import detectors as det
from dnsguard.series.store import METRICS, OTHER, QTYPE_NAMES, SeriesStore

log = logging.getLogger(__name__)

EVENT_VOLUME = "dns_volume_anomaly"
# Points handed to the detectors: the longest baseline (60) plus the longest recent part (10).
WINDOW = 70
LAST_POINTS = 5  # newest points quoted in an alert's stats
CHI2_MIN_SHIFT = 0.25  # how far the mix must move toward carrier types (checked before scipy)
EXCESS = 1.0  # the newest points must exceed the baseline median by EXCESS × the floor
# Steps a rise must last (each over the floor and the excess) before it is tested: a browser
# loading pages, a monitoring host's /24 reverse sweep or a mail burst fills one step after a
# quiet spell; exfiltration at a volume worth reporting keeps going.
SUSTAIN = 2
# The volume tests run on log(1 + x): DNS volume driven by people and jobs is heavy-tailed
# (a host idles at a few queries a minute and loads a page with 150), so a rise is judged
# as a factor against the spread of the key's own factors, not as a count against a count
# scale. The scale floor on that axis: a change of ~10 % is never more than one unit of noise.
LOG_MIN_SCALE = 0.1
# Query-type buckets whose answers can carry data down (rdatatype.CARRIER, and the types
# outside the mix): the chi-square test alerts only on a move toward these.
CARRIER_BUCKETS = np.array([rdatatype.is_carrier(t) for t in rdatatype.MIX_SERIES]
                           + [False, True])  # "service" (store.SERVICE), "other"


@dataclass
class MonitorConfig:
    consensus: int = 4
    # Floors per 60 s of step.
    floors: dict[str, float] = field(default_factory=lambda: {
        "queries": 120.0, "names": 60.0, "bytes_up": 12288.0, "bytes_down": 49152.0,
        "nxdomain": 60.0})
    chi2: bool = True
    other: bool = True  # also test the "other" aggregates
    log_scale: bool = True  # volume tests on log(1 + x) (LOG_MIN_SCALE); False: raw counts
    # A volume anomaly needs one of these among its anomalous metrics: a data channel moves
    # bytes; queries, distinct names or NXDOMAINs rising alone (a browsing session, a /24
    # reverse sweep) are activity, reported only as corroboration. Empty: any metric.
    data_metrics: tuple[str, ...] = ("bytes_up", "bytes_down")


class SeriesMonitor:
    """The pipeline's ``series`` object.

    ``raise_fn(scope, ident, stats, hits, ts, client, server, domain, st, samples,
    event_type=...)`` is the pipeline's ``_raise``: the policy admits or suppresses.
    """

    def __init__(self, step: float = 60.0, span: float = 86400.0, max_keys: int = 64,
                 detect: bool = True, raise_fn: Callable | None = None,
                 config: MonitorConfig | None = None) -> None:
        self.store = SeriesStore(step, span, max_keys)
        self.cfg = config or MonitorConfig()
        self.detect = detect
        self.raise_fn = raise_fn
        scale = step / 60.0
        self.floors = {m: self.cfg.floors[m] * scale for m in METRICS}
        self._floor_row = np.array([self.floors[m] for m in METRICS])  # in METRICS order
        # The volume tests in order, with the scale floor of the axis they run on.
        self._tests: list[Callable] = [
            fn if not self.cfg.log_scale or name in ("histogram", "ks")  # scale-free
            else functools.partial(fn, min_scale=LOG_MIN_SCALE, rel_scale=0.0)
            for name, fn in det.VOLUME_DETECTORS.items()]
        self.anomalies = 0  # alerts handed to the policy
        self.evaluated = 0  # series tested
        self.store.on_close = self._on_close
        # Per-packet entry points (bound methods of the store: no extra call level).
        self.observe_query = self.store.observe_query
        self.observe_response = self.store.observe_response

    def finish(self) -> None:
        self.store.flush()

    def tick(self, now: float) -> None:
        """Close the steps that ended before ``now`` (a live sensor's clock) although no
        packet came to close them; replay never needs it."""
        st = self.store
        if st.cur_step is not None and now >= st._end:
            st.advance_to(int(now // st.step))

    # --- detection --------------------------------------------------------------------------
    def _on_close(self, step: int, ts: float) -> None:
        if not self.detect or self.raise_fn is None:
            return
        floors = self._floor_row
        for kind, table in self.store.tables.items():
            # evaluate() finds nothing for a row with no metric at or above its floor in this
            # step (the volume tests skip such metrics; the chi-square needs the queries
            # over theirs): one numpy comparison spares the per-row calls, which were most
            # of a step close on a busy network.
            over = (table.data[:, :, step % table.capacity] >= floors).any(axis=1)
            for slot, key in list(table.rows()):
                if not over[slot]:
                    continue
                if key == OTHER and not self.cfg.other:
                    continue
                if table.history_len(slot) < det.MIN_HISTORY + 1:
                    continue
                if table.data[slot, 0, step % table.capacity] <= 0 and key != OTHER:
                    continue
                found = self.evaluate(table, slot)
                if found:
                    self._alert(kind, key, table, slot, step, ts, found)

    def evaluate(self, table, slot: int) -> list[tuple[str, list[det.Finding]]]:
        """Anomalous metrics of one series at its newest step: [(metric, fired findings)]."""
        out: list[tuple[str, list[det.Finding]]] = []
        q = table.values(slot, 0, WINDOW)
        if len(q) < det.MIN_HISTORY + 1 or np.count_nonzero(q[:-1]) < det.MIN_HISTORY:
            return out  # no established baseline (new, or back from idle): not a change
        for mi, metric in enumerate(METRICS):
            x = table.values(slot, mi, WINDOW)
            if len(x) < det.MIN_HISTORY + SUSTAIN:
                continue
            floor = self.floors[metric]
            low = float(x[-SUSTAIN:].min())  # the rise must hold over the last SUSTAIN steps
            if low < floor or low - float(np.median(x[:-SUSTAIN])) < floor * EXCESS:
                continue
            self.evaluated += 1
            if self.cfg.log_scale:
                x = np.log1p(x)
            fired = []
            left = len(self._tests)
            for fn in self._tests:  # cheapest first
                if len(fired) + left < self.cfg.consensus:
                    break  # consensus out of reach: spare the costlier tests
                left -= 1
                f = fn(x)
                if f is not None and f.fired:
                    fired.append(f)
            if len(fired) >= self.cfg.consensus:
                out.append((metric, fired))
        if out and self.cfg.data_metrics and not any(
                m in self.cfg.data_metrics for m, _ in out):
            out = []  # no evidence of data moving: activity, not a channel
        if self.cfg.chi2:
            q = table.values(slot, 0, 1)
            if len(q) and q[-1] >= self.floors["queries"]:
                recent, hist = table.qtype_counts(slot)
                if hist.sum() > 0 and det.carrier_shift(
                        recent, hist, CARRIER_BUCKETS) >= CHI2_MIN_SHIFT:
                    f = det.chi2_qtypes(recent, hist, min_shift=CHI2_MIN_SHIFT,
                                        toward=CARRIER_BUCKETS)
                    if f is not None and f.fired:
                        out.append(("qtypes", [f]))
        return out

    def _alert(self, kind: str, key, table, slot: int, step: int, ts: float,
               found: list[tuple[str, list[det.Finding]]]) -> None:
        hits = []
        tests = []
        ntests = sum(len(fs) for _, fs in found)
        sev = "medium" if ntests >= 6 or len(found) >= 2 else "low"
        seen: dict[str, int] = {}
        for metric, fs in found:
            for f in fs:
                axis = "log(1+x) " if self.cfg.log_scale and metric != "qtypes" else ""
                reason = f"{metric}: {axis}{f.reason}"
                d = f.as_dict()
                d["metric"] = metric
                tests.append(d)
                i = seen.get(f.test)
                if i is None:
                    seen[f.test] = len(hits)
                    hits.append((f"series:{f.test}", sev, 0.25, [reason]))
                else:
                    hits[i][3].append(reason)
        shown = {m for m, _ in found} | {"queries"}
        last = {m: table.values(slot, m, LAST_POINTS).tolist() for m in METRICS if m in shown}
        if any(m == "qtypes" for m, _ in found):
            recent, hist = table.qtype_counts(slot)
            last["qtypes"] = {QTYPE_NAMES[i]: int(v) for i, v in enumerate(recent) if v}
            last["qtypes_history"] = {QTYPE_NAMES[i]: int(v) for i, v in enumerate(hist) if v}
        if key == OTHER:
            name = f"{kind}:other"
        elif kind == "client":
            from dnsguard.decode.packet import ip_text
            name = f"client:{ip_text(key)}"
        else:
            name = f"domain:{key}"
        step_s = self.store.step
        stats = {
            "series": name,
            "metrics": [m for m, _ in found],
            "tests": tests,
            "last_points": last,
            "step_seconds": step_s,
            "step_start": iso_time(step * step_s),
            "history_steps": table.history_len(slot),
        }
        if kind == "client":
            ident = ("v", "c", key)
            client, domain = (key if key != OTHER else b""), None
        else:
            ident = ("v", "d", key)
            client, domain = b"", (key if key != OTHER else None)
        self.anomalies += 1
        self.raise_fn(kind, ident, stats, hits, ts, client, b"", domain, None, [],
                      event_type=EVENT_VOLUME)

    # --- for the report and the summary -----------------------------------------------------
    def summary(self) -> dict:
        s = self.store
        return {
            "step_seconds": s.step,
            "steps_closed": s.closed,
            "tracked": {k: len(t) for k, t in s.tables.items()},
            "promoted": {k: t.promoted for k, t in s.tables.items()},
            "replaced": {k: t.demoted for k, t in s.tables.items()},
            "series_tested": self.evaluated,
            "volume_anomalies": self.anomalies,
        }
