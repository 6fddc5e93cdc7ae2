"""Prometheus metrics of the daemon, on its own registry.

Most values already exist as plain counters in the :class:`dnsguard.pipeline.Pipeline`; a
custom collector reads them at scrape time, so the per-packet path does no extra work for
metrics. What only the daemon sees (alerts written, reloads, processing time per batch,
kernel drops) lives in ordinary ``prometheus_client`` metrics.

No label ever carries a domain, name or address: labels are outcomes, fixed reasons, rule and
detector ids, severities, scopes, query-type buckets and configured interface names.

Example:
    >>> m = Metrics(version="0.0.0")
    >>> from prometheus_client import generate_latest
    >>> b'dnsguard_build_info{version="0.0.0"} 1.0' in generate_latest(m.registry)
    True
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dnsguard.decode import packet as pk
from dnsguard.dns import rdatatype

log = logging.getLogger(__name__)

# Query types counted by name; every other type is "other" (bounded label set).
QTYPE_BUCKETS = rdatatype.buckets(rdatatype.MIX_METRICS)
QTYPE_LABELS = (*sorted(set(QTYPE_BUCKETS.values())), "other")
SCOPES = ("domain", "client_domain", "client", "flow", "long_domain", "long_client_domain")

# Seconds to process the frames read after one select() wake-up (one batch).
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                   0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def qtype_bucket(qtype: int) -> str:
    return QTYPE_BUCKETS.get(qtype, "other")


def _snapshot(d: dict) -> dict:
    """Copy a dict the main thread may be updating (a copy is one C call, but be safe)."""
    for _ in range(5):
        try:
            return dict(d)
        except RuntimeError:  # changed size during iteration
            time.sleep(0)
    return {}


class PipelineCollector(Collector):
    """Reads the pipeline's and the capture sockets' counters at scrape time."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def describe(self):  # no pre-description: the registry must not call collect() early
        return []

    def collect(self):
        pipe = self.owner.pipeline
        ifaces = list(self.owner.interfaces)

        pk_total = CounterMetricFamily("dnsguard_packets", "Frames processed, by outcome "
                                       "(each frame counted under exactly one).",
                                       labels=["outcome"])
        msgs = CounterMetricFamily("dnsguard_dns_messages", "DNS messages parsed, by direction "
                                   "and query type (a fixed set of types, else 'other').",
                                   labels=["direction", "qtype"])
        errs = CounterMetricFamily("dnsguard_parse_errors", "Frames or DNS messages that broke "
                                   "their format or could not be handled, by reason.",
                                   labels=["reason"])
        tracked = GaugeMetricFamily("dnsguard_tracked_keys", "Keys held in the traffic window "
                                    "tables, by scope.", labels=["scope"])
        evicted = CounterMetricFamily("dnsguard_evicted_keys", "Keys evicted from a full "
                                      "window table (state cap reached), by scope.",
                                      labels=["scope"])
        suppressed = CounterMetricFamily("dnsguard_suppressed_alerts", "Alerts not raised "
                                         "because the key already alerted in its suppression "
                                         "window (counted after the rules ran; the model's "
                                         "repeats where it already alerted at high severity "
                                         "are not: it is not consulted there).")
        escalated = CounterMetricFamily("dnsguard_alerts_escalated", "Alerts raised inside "
                                        "their key's suppression window because they "
                                        "escalate: a higher severity or a new detector.")
        merged = CounterMetricFamily("dnsguard_alerts_merged", "Alerts merged into their key's "
                                     "record while it settled (detectors firing on one key "
                                     "within the settle interval make one record).")
        limited = CounterMetricFamily("dnsguard_alerts_rate_limited", "Alerts held back by "
                                      "the overall alert rate limit (alert_rate/alert_burst); "
                                      "their keys alert again as soon as the bucket allows.")
        suppressed2 = CounterMetricFamily("dnsguard_alerts_suppressed", "Alerts not raised "
                                          "because the key already alerted in its suppression "
                                          "window (same value as "
                                          "dnsguard_suppressed_alerts_total).")
        allowed = CounterMetricFamily("dnsguard_allowlisted_queries", "Queries exempted by the "
                                      "allowlist.")
        last = GaugeMetricFamily("dnsguard_last_packet_timestamp_seconds", "Capture time of "
                                 "the last frame processed (Unix seconds).")
        if pipe is not None:
            c = _snapshot(pipe.counters)
            for o in pk.OUTCOMES:
                pk_total.add_metric([o], c.get(o, 0))
            for direction, src in (("query", pipe.query_types),
                                   ("response", pipe.response_types)):
                by: dict[str, int] = dict.fromkeys(QTYPE_LABELS, 0)
                for qt, n in _snapshot(src).items():
                    by[qtype_bucket(qt)] += n
                for qt in QTYPE_LABELS:
                    msgs.add_metric([direction, qt], by[qt])
            for reason, n in sorted(_snapshot(pipe.malformed).items()):
                errs.add_metric([str(reason)], n)
            for scope in SCOPES:
                t = pipe.tables.get(scope)
                if t is None:
                    continue
                tracked.add_metric([scope], len(t))
                evicted.add_metric([scope], t.evicted)
            hz = pipe.horizon  # the long-horizon tables (None when turned off)
            if hz is not None:
                for scope, table in (("long_domain", hz.domains),
                                     ("long_client_domain", hz.pairs)):
                    tracked.add_metric([scope], len(table))
                    evicted.add_metric([scope], hz.evicted[scope])
            suppressed.add_metric([], pipe.policy.suppressed)
            suppressed2.add_metric([], pipe.policy.suppressed)
            escalated.add_metric([], pipe.policy.escalated)
            merged.add_metric([], pipe.policy.merged)
            limited.add_metric([], pipe.policy.rate_limited)
            allowed.add_metric([], c.get("allowlisted", 0))
            last.add_metric([], pipe.last_ts)
        yield from (pk_total, msgs, errs, tracked, evicted, suppressed, suppressed2, escalated,
                    merged, limited, allowed, last)
        pending = GaugeMetricFamily("dnsguard_alerts_pending", "Alerts kept in memory because "
                                    "the alert output cannot be written (disk full, …); "
                                    "retried every second.")
        w = self.owner.writer
        pending.add_metric([], len(w.pending) if w is not None else 0)
        yield pending

        kp = CounterMetricFamily("dnsguard_kernel_packets", "Packets that passed the kernel "
                                 "filter of a capture socket (PACKET_STATISTICS tp_packets).",
                                 labels=["interface"])
        kd = CounterMetricFamily("dnsguard_kernel_drops", "Packets the kernel dropped because "
                                 "the capture socket's buffer was full (tp_drops).",
                                 labels=["interface"])
        fr = CounterMetricFamily("dnsguard_captured_frames", "Frames read from a capture "
                                 "socket.", labels=["interface"])
        fz = CounterMetricFamily("dnsguard_kernel_freezes", "Times a capture ring was full "
                                 "(every block waiting for the sensor) and the kernel froze "
                                 "its queue, dropping until a block came back "
                                 "(PACKET_STATISTICS tp_freeze_q_cnt; 0 for a plain socket).",
                                 labels=["interface"])
        kind = GaugeMetricFamily("dnsguard_capture_info", "How each interface is captured: "
                                 "kind 'ring' (TPACKET_V3) or 'socket'; always 1.",
                                 labels=["interface", "kind"])
        for i in ifaces:
            kp.add_metric([i.name], i.kernel_packets)
            kd.add_metric([i.name], i.kernel_drops)
            fr.add_metric([i.name], i.frames)
            fz.add_metric([i.name], i.kernel_freezes)
            kind.add_metric([i.name, i.kind], 1)
        yield from (kp, kd, fr, fz, kind)

        # Online updates of the model (ModelDetector.learned; includes those resumed from
        # its checkpoint).
        updates = 0
        if pipe is not None:
            for det in list(pipe.extra_detectors):
                updates += int(getattr(det, "learned", 0) or 0)
        mu = CounterMetricFamily("dnsguard_model_updates", "Online updates of the model "
                                 "(learned from feedback, allowlist or rule verdicts).")
        mu.add_metric([], updates)
        yield mu


class Metrics:
    """All the daemon's metrics, on one private registry."""

    def __init__(self, version: str, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import ProcessCollector

        self.registry = r = registry or CollectorRegistry()
        self.pipeline = None  # set once the pipeline exists
        self.interfaces: list = []  # capture.live.Capture objects (name, frames, kernel_*)
        self.alerts = Counter("dnsguard_alerts", "Alerts raised, by detector (a rule id or "
                              "the model) and the alert's severity; an alert several detectors "
                              "raised together counts once for each.",
                              ["detector", "severity"], registry=r)
        self.alert_records = Counter("dnsguard_alert_records", "Alert records written to the "
                                     "alert output (one JSON line each).", registry=r)
        self.alert_errors = Counter("dnsguard_alert_write_errors", "Failed attempts to write "
                                    "to the alert output (disk full, read-only, I/O error); "
                                    "the alerts stay pending, see dnsguard_alerts_pending.",
                                    registry=r)
        self.alert_dropped = Counter("dnsguard_alerts_dropped", "Alerts that could not be "
                                     "written and no longer fit the pending queue: logged at "
                                     "ERROR with their JSON on stderr instead.", registry=r)
        self.writer = None  # the AlertWriter (pending alerts), set by the daemon
        self.reloads = Counter("dnsguard_reloads", "SIGHUP reloads of rules and allowlists, by "
                               "result.", ["result"], registry=r)
        for res in ("ok", "error"):
            self.reloads.labels(res)
        self.processing = Histogram("dnsguard_processing_seconds", "Time to process the frames "
                                    "read after one wake-up of the capture loop (one batch).",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_frames = Counter("dnsguard_processed_batches", "Batches of frames processed "
                                    "by the capture loop.", registry=r)
        self.model_score = Histogram("dnsguard_model_score", "Scores the model gave "
                                     "(observed by the model detector, if enabled).",
                                     buckets=SCORE_BUCKETS, registry=r)
        self.feedback_labels = Counter("dnsguard_feedback_labels", "Analyst feedback labels "
                                       "applied to the model (one per window it learned from "
                                       "a verdict).", registry=r)
        self.build = Gauge("dnsguard_build_info", "dnsguard's version; always 1.",
                           ["version"], registry=r)
        self.build.labels(version).set(1)
        self.start_time = Gauge("dnsguard_start_time_seconds", "When the daemon started (Unix "
                                "seconds).", registry=r)
        self.start_time.set(time.time())
        r.register(PipelineCollector(self))
        ProcessCollector(registry=r)
        self._server = None
        self._thread: threading.Thread | None = None

    def count_alert(self, alert: dict) -> None:
        sev = str(alert.get("severity", ""))
        for det in alert.get("detectors") or ("unknown",):
            self.alerts.labels(str(det), sev).inc()

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Start the HTTP exporter in a background thread; returns the bound address."""
        from prometheus_client import start_http_server

        res = start_http_server(port, addr=host, registry=self.registry)
        if isinstance(res, tuple):
            self._server, self._thread = res
            addr = self._server.server_address
            return addr[0], addr[1]
        return host, port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class DnstapCollector(Collector):
    """The dnstap inputs' counters (:class:`dnsguard.capture.dnstap.DnstapCounters`), read at
    scrape time; registered by the daemon only when it listens for dnstap. Labels are fixed
    sets: frame kinds, dnstap message types, transports, error reasons."""

    def __init__(self, counters) -> None:
        self.c = counters

    def describe(self):
        return []

    def collect(self):
        c = self.c
        g = GaugeMetricFamily("dnsguard_dnstap_senders", "dnstap senders (DNS servers) "
                              "connected now.")
        g.add_metric([], c.senders)
        conns = CounterMetricFamily("dnsguard_dnstap_connections", "dnstap sender "
                                    "connections accepted.")
        conns.add_metric([], c.connections)
        fr = CounterMetricFamily("dnsguard_dnstap_frames", "Frame Streams frames received, "
                                 "by kind (data: one dnstap payload each; control: the "
                                 "handshake).", labels=["kind"])
        for k, n in _snapshot(c.frames).items():
            fr.add_metric([k], n)
        msgs = CounterMetricFamily("dnsguard_dnstap_messages", "dnstap messages decoded, by "
                                   "dnstap message type (client_query, resolver_response, …).",
                                   labels=["type"])
        for k, n in sorted(_snapshot(c.messages).items()):
            msgs.add_metric([k], n)
        tr = CounterMetricFamily("dnsguard_dnstap_transport_messages", "dnstap messages by "
                                 "the transport the DNS message travelled on (udp, tcp, dot, "
                                 "doh, doq, …).", labels=["transport"])
        for k, n in sorted(_snapshot(c.transports).items()):
            tr.add_metric([k], n)
        errs = CounterMetricFamily("dnsguard_dnstap_errors", "dnstap frames or messages not "
                                   "analysed, by reason (framing faults close the sender's "
                                   "connection; see docs/daemon.md).", labels=["reason"])
        for k, n in sorted(_snapshot(c.errors).items()):
            errs.add_metric([k], n)
        b = CounterMetricFamily("dnsguard_dnstap_bytes", "Octets received from dnstap "
                                "senders.")
        b.add_metric([], c.bytes)
        yield from (g, conns, fr, msgs, tr, errs, b)
