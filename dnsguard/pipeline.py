"""The data path, shared by ``replay`` and the live daemon; this module only wires the stages
(docs/architecture.md):

    frame → decode (link/IP/UDP/TCP) → DNS message → name features (features.payload)
          → measurement (features.measure: windows per scope)
          → judgment (detect.judge: rules, model, allowlist, policy) → alert (output.alerts)

:meth:`Pipeline.feed` takes one captured frame, :meth:`Pipeline.feed_message` one DNS message
without a frame; :meth:`Pipeline.finish` closes what is left at the end of input. Everything
the run met is counted in :attr:`Pipeline.counters`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

from dnsguard.decode import packet as pk
from dnsguard.decode.fastpath import FastScanner
from dnsguard.decode.packet import Datagram, decode_frame
from dnsguard.decode.tcpstream import TcpReassembler
from dnsguard.detect.base import Detector
from dnsguard.detect.judge import Judge
from dnsguard.detect.rules import RuleSet
from dnsguard.dns.exception import DNSError, NotDNS
from dnsguard.dns.message import parse
from dnsguard.domain import RegisteredDomains
from dnsguard.features.measure import Measurements
from dnsguard.features.namehash import set_key
from dnsguard.features.payload import NameAnalyzer
from dnsguard.settings import Settings

try:
    import cython
except ImportError:  # interpreted, Cython not installed
    from dnsguard._compiled import NoCython as cython

log = logging.getLogger(__name__)
# The fast path's outcomes as module globals (compiled, a cached global read; ``pk.X`` is a
# module attribute lookup per packet).
_QUERY = pk.DNS_QUERY
_RESPONSE = pk.DNS_RESPONSE


def _u32(p: bytes, i: int, big: bool) -> int:
    """A pcap record header's unsigned 32-bit field at ``p[i:i + 4]`` (compiled: ``p`` is a C
    pointer). The same as ``capture.pcapfile._u32``: a C function of one compiled module is
    callable from another only through a cimport, which the interpreted fallback lacks."""
    a, b, c, d = p[i], p[i + 1], p[i + 2], p[i + 3]  # compiled: unsigned ints (no sign bit)
    if big:
        return (a << 24) | (b << 16) | (c << 8) | d
    return (d << 24) | (c << 16) | (b << 8) | a


# Young collections every 200k allocations (default 700), the older generations rarely.
# The hot loop's state has almost no reference cycles to reclaim; at 50k the collector
# walked 831k young objects over the bench workload (11 collections, ~4 % of its CPU), at
# 200k 196k (2), with the same peak RSS (bench/gc_work.py; bench/README, "Session 7, long
# horizon"). Bounded still: any cyclic garbage goes at the next young collection.
GC_THRESHOLD = (200_000, 50, 1000)


def hot_loop_gc() -> tuple[tuple[int, int, int], bool]:
    """Before a long feed loop (replay; the daemon may do the same): the pipeline's state is
    many small containers (window keys, caches) and almost no reference cycles, and with the
    default thresholds the cyclic collector walked all of it again and again (~15% of replay
    time, measured with py-spy). Objects alive now (rules, model) are frozen out of
    collection and collections run far less often. The collector is on during the loop even
    if start-up ran with it off (``dnsguard replay`` does). Returns what
    :func:`restore_gc` needs."""
    saved = (gc.get_threshold(), gc.isenabled())
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    gc.enable()
    return saved


def restore_gc(saved: tuple[tuple[int, int, int], bool]) -> None:
    threshold, enabled = saved
    gc.set_threshold(*threshold)
    gc.unfreeze()
    if not enabled:
        gc.disable()


class Tally(dict):
    """Counts by key, 0 when absent (``t[k] += 1`` works). Not ``collections.Counter``: it
    defines ``__delitem__``, which makes CPython route every ``c[k] = v`` through a
    Python-level slot lookup; three counts per packet cost ~5% of a replay that way."""

    __slots__ = ()

    def __missing__(self, key: object) -> int:
        return 0


def _with_types(base: Tally, fast) -> Tally:
    """A copy of ``base`` with the counts of ``fast`` (per type number below 256) added."""
    out = Tally(base)
    for i in range(256):
        if fast[i]:
            out[i] += fast[i]
    return out


class Pipeline:
    def __init__(self, settings: Settings, ruleset: RuleSet,
                 emit: Callable[[dict], None]) -> None:
        self.s = settings
        # Before any name is hashed: every sketch of this process (and of the workers it
        # forks) uses this key (features.namehash).
        set_key(settings.hash_key)
        self.ports = frozenset(settings.ports)
        self.scan = FastScanner(self.ports)  # the common frame, read in place (decode/)
        self.fast_path = True  # False: every frame through decode_frame + parse (tests)
        self.domains = RegisteredDomains(settings.domain_cache)
        self.names = NameAnalyzer(self.domains, settings.name_cache)
        self.tcp = TcpReassembler(settings.tcp_max_flows, settings.tcp_max_bytes)
        self.measure = Measurements(settings)
        self.judge = Judge(settings, ruleset, self.measure, emit)
        self.measure.attach(self.judge)
        self.tables = self.measure.tables
        self.horizon = self.measure.horizon
        self.series = self.measure.series
        if self.series is not None:
            self.series.raise_fn = self.judge.raise_alert  # volume anomalies: the same policy
        self.policy = self.judge.policy
        # The flow of the packet being processed: an alert it completes names it (ports,
        # community_id). Set per packet; cleared at the end of input.
        self._psrc = self._pdst = None
        self._psport = self._pdport = 0
        self._ptcp = False
        self.judge.flow_ports = self._flow_ports
        # Optional DNS transaction log (output/dnslog.DnsLog): every message through the
        # general decoder, which parses what the log needs (id, ports, rcode).
        self.dns_log = None
        self._counters: Tally = Tally()
        self.malformed: Tally = Tally()
        # DNS messages by query type number (bucketed by the metrics exporter at scrape time).
        self._query_types: Tally = Tally()
        self._response_types: Tally = Tally()
        # The fast path's messages (each a counted outcome and query or response) and their
        # types below 256, counted in C fields compiled: three Tally increments a packet were
        # ~2k instructions (bench/README, "Session 8, flood"). Added in when read
        # (:attr:`counters`, :attr:`query_types`, :attr:`response_types`).
        self._fast_queries = self._fast_responses = 0
        if not cython.compiled:  # compiled: C arrays of the object, zero from the start
            # (setattr: no assignment of a list to the C array for Cython to type-check)
            setattr(self, "_fast_qtypes", [0] * 256)  # noqa: B010
            setattr(self, "_fast_rtypes", [0] * 256)  # noqa: B010
        self.first_ts: float | None = None
        self.last_ts = 0.0
        # Capture time at which _timely runs: -inf for the first packet, then the due time of
        # the earliest alert record settling (detect.policy), +inf when none. One comparison
        # per packet, in place of the first packet's check: the settling costs per alert.
        self._due = float("-inf")
        self.policy.on_open = self._settling
        self._set_rules(ruleset)

    @property
    def counters(self) -> Tally:
        """Frames by outcome, and messages by kind (``queries``, ``responses``,
        ``allowlisted``…): a copy, with the fast path's counts added."""
        c = Tally(self._counters)
        n = self._fast_queries
        if n:
            c[_QUERY] += n
            c["queries"] += n
        n = self._fast_responses
        if n:
            c[_RESPONSE] += n
            c["responses"] += n
        return c

    @property
    def query_types(self) -> Tally:
        """Queries by query type number (a copy, with the fast path's counts added)."""
        return _with_types(self._query_types, self._fast_qtypes)

    @property
    def response_types(self) -> Tally:
        """Responses by query type number (a copy, with the fast path's counts added)."""
        return _with_types(self._response_types, self._fast_rtypes)

    # The parts' own fields, under the names the daemon, replay, eval and train use.
    @property
    def extra_detectors(self) -> list[Detector]:
        """Detectors beside the rules (the judge's)."""
        return self.judge.extra_detectors

    @extra_detectors.setter
    def extra_detectors(self, detectors: list[Detector]) -> None:
        self.judge.extra_detectors = detectors

    @property
    def on_query(self) -> Callable[[float, str, str, str], None] | None:
        """Optional observer of every query: (ts, client, server, lower-case name)."""
        return self.measure.on_query

    @on_query.setter
    def on_query(self, fn: Callable[[float, str, str, str], None] | None) -> None:
        self.measure.on_query = fn

    @property
    def source(self) -> str:
        """Where the frames come from (a file name, ``live:eth0``): each alert's ``source``."""
        return self.judge.source

    @source.setter
    def source(self, src: str) -> None:
        self.judge.source = src

    @property
    def alerts(self) -> int:
        return self.judge.alerts

    @property
    def ruleset(self) -> RuleSet:
        return self.judge.ruleset

    @property
    def allow(self):
        return self.judge.allow

    # --- input ------------------------------------------------------------------------------
    def feed(self, ts: float, linktype: int, data: bytes, wirelen: int) -> str:
        """Process one frame; return its outcome."""
        if type(data) is bytes:  # compiled: a type pointer compared (__class__ is a getattr)
            return self._feed_at(ts, linktype, data, 0, len(data), wirelen)
        if ts >= self._due:  # the first packet, or a record's settle interval has ended
            self._timely(ts)
        self.last_ts = ts
        return self._feed_general(ts, linktype, data, wirelen)

    def _feed_at(self, ts: float, linktype: int, data: bytes, base: int, end: int,
                 wirelen: int) -> str:
        """:meth:`feed` of the frame at ``data[base:end]``."""
        if ts >= self._due:  # the first packet, or a record's settle interval has ended
            self._timely(ts)
        self.last_ts = ts
        if self.fast_path and self.scan.frame(linktype, data, base, end):
            sc = self.scan
            self._psrc = sc.src  # the packet's flow, for an alert it completes (_flow_ports)
            self._pdst = sc.dst
            self._psport = sc.sport
            self._pdport = sc.dport
            self._ptcp = False
            return self._fast_message(ts, data)  # counted there
        if base or end != len(data):
            data = data[base:end]
        return self._feed_general(ts, linktype, data, wirelen)

    def feed_frames(self, frames, tick: Callable[[int], None] | None = None) -> int:
        """Feed every ``(ts, linktype, data, wirelen)`` of ``frames`` (a capture reader);
        ``tick(n)`` every 16,384 frames (a progress bar). Returns the number fed. The loop
        lives here so that, compiled, it runs in C with the pipeline (replay's own loop
        in the interpreter cost ~0.2 µs a frame). From a pcap or pcapng file's reader it takes
        whole runs of records (``CaptureReader.pcap_runs``, ``pcapng_runs``) and reads each
        record in place: no bytes object, tuple or float per frame unless the general path
        needs the frame."""
        n = 0
        fmt = getattr(frames, "pcap_format", None)
        fmt = fmt() if fmt is not None else None
        if fmt is not None:
            hdr, big, unit, lt = fmt
            for buf, pos, stop in frames.pcap_runs():
                while pos < stop:
                    # The record header: seconds, fraction, captured length, wire length.
                    ts = _u32(buf, pos, big) + _u32(buf, pos + 4, big) * unit
                    wirelen = _u32(buf, pos + 12, big)
                    start = pos + hdr
                    pos = start + _u32(buf, pos + 8, big)
                    self._feed_at(ts, lt, buf, start, pos, wirelen)
                    n += 1
                    if tick is not None and not n & 0x3FFF:
                        tick(n)
            return n
        if getattr(frames, "kind", None) == "pcapng":
            # Runs of enhanced packet blocks read in place (capture.pcapfile.pcapng_runs);
            # a packet from another kind of block comes as a frame.
            for item in frames.pcapng_runs():
                if len(item) == 4:
                    ts, lt, data, wirelen = item
                    self.feed(ts, lt, data, wirelen)
                else:
                    buf, pos, stop, lt, unit, tsoff, big = item
                    while pos < stop:
                        # Block type, length, interface, timestamp (high, low), captured and
                        # wire lengths, then the packet.
                        hi = _u32(buf, pos + 12, big)
                        ts = ((hi << 32) | _u32(buf, pos + 16, big)) * unit + tsoff
                        start = pos + 28
                        self._feed_at(ts, lt, buf, start, start + _u32(buf, pos + 20, big),
                                      _u32(buf, pos + 24, big))
                        pos += _u32(buf, pos + 4, big)
                        n += 1
                        if tick is not None and not n & 0x3FFF:
                            tick(n)
                    continue
                n += 1
                if tick is not None and not n & 0x3FFF:
                    tick(n)
            return n
        for ts, lt, data, wirelen in frames:
            self.feed(ts, lt, data, wirelen)
            n += 1
            if tick is not None and not n & 0x3FFF:
                tick(n)
        return n

    def _fast_message(self, ts: float, data: bytes) -> str:
        """Account and count the message the fast scanner just read (``self.scan``'s
        fields); return its outcome."""
        sc = self.scan
        buf = data
        q = sc.q
        key = buf[q:sc.qend]  # compiled: a bytes object straight from the C pointer
        names = self.names
        nf = names._cache.get(key)  # a name seen before: no analysis, no method call
        if nf is None:  # not in the young generation: what analyze_wire does next
            nf = names._miss(key, None, data, q)
        qt = sc.qtype
        if sc.qr:
            self._fast_responses += 1
            if qt < 256:
                self._fast_rtypes[qt] += 1
            else:
                self._response_types[qt] += 1
            self.measure.response(ts, nf, sc.rcode, sc.down, sc.size, sc.dst, sc.src)
            return _RESPONSE
        self._fast_queries += 1
        if qt < 256:
            self._fast_qtypes[qt] += 1
        else:
            self._query_types[qt] += 1
        if not self.measure.query(ts, nf, qt, sc.size, sc.src, sc.dst):
            self._counters["allowlisted"] += 1
        return _QUERY

    def _feed_general(self, ts: float, linktype: int, data: bytes, wirelen: int) -> str:
        d = decode_frame(linktype, data, wirelen, self.ports)
        if d.__class__ is not Datagram:
            self._counters[d.outcome] += 1
            if d.outcome == pk.MALFORMED or d.outcome == pk.UNSUPPORTED:
                self.malformed[d.reason] += 1
            return d.outcome
        if d.tcp:
            msgs = self.tcp.feed((d.src, d.sport, d.dst, d.dport), d.seq, d.flags, d.payload)
            if not msgs:
                self._counters[pk.DNS_PARTIAL] += 1
                return pk.DNS_PARTIAL
        else:
            msgs = (d.payload,)
        outcome = None
        skip = self._exempt(d.sport, d.dport)
        self._psrc = d.src
        self._pdst = d.dst
        self._psport = d.sport
        self._pdport = d.dport
        self._ptcp = d.tcp
        for raw in msgs:
            o = self._message(ts, d.src, d.dst, d.sport, d.dport, raw, d.cut, skip)
            if outcome is None:
                outcome = o
        self._counters[outcome] += 1  # a frame counts once, under its first message's outcome
        return outcome

    def feed_message(self, ts: float, src: bytes, dst: bytes, sport: int, dport: int,
                     wire: bytes, tcp: bool = False) -> str:
        """Process one DNS message that arrived without a frame (a resolver's log, e.g.
        dnstap): ``src``/``dst`` are the packed 4- or 16-byte addresses of the packet that
        carried ``wire`` (so a query's ``src`` is the client, a response's ``dst``), ``wire``
        the message itself (over TCP: without its two-octet length prefix). Measured and
        judged exactly as a message decoded from a frame; returns its outcome, counted in
        :attr:`counters` like a frame's (``dns_query``, ``dns_response``, ``not_dns`` or
        ``malformed``)."""
        if wire.__class__ is not bytes:
            wire = bytes(wire)
        return self._feed_wire(ts, src, dst, sport, dport, wire, 0, len(wire), tcp)

    def feed_dnstap(self, runs, sc) -> int:
        """Feed the dnstap messages of ``runs`` (``framestream.read_file_runs``: runs of whole
        Frame Streams data frames, ``buf[pos:stop]``), each payload read in place by ``sc``
        (a :class:`~dnsguard.capture.dnstapwire.DnstapScanner`, which counts what it does not
        hand on) and its DNS message fed where it lies: no payload, tuple or message object
        per frame. Returns the number of data frames read."""
        n = 0
        for buf, pos, stop in runs:
            while pos < stop:
                start = pos + 4
                pos = start + _u32(buf, pos, True)
                n += 1
                if sc.message(buf, start, pos):
                    self._feed_wire(sc.ts, sc.src, sc.dst, sc.sport, sc.dport, buf, sc.ws,
                                    sc.we, sc.tcp)
        return n

    def _feed_wire(self, ts: float, src: bytes, dst: bytes, sport: int, dport: int,
                   data: bytes, start: int, stop: int, tcp: bool) -> str:
        """:meth:`feed_message` of the DNS message at ``data[start:stop]``."""
        self._psrc = src
        self._pdst = dst
        self._psport = sport
        self._pdport = dport
        self._ptcp = tcp
        if ts >= self._due:  # the first packet, or a record's settle interval has ended
            self._timely(ts)
        self.last_ts = ts
        skip = self._exempt(sport, dport)
        if self.fast_path and not skip:
            # The compiled scanner first, as for a frame (one uncompressed question: nearly
            # every message; ~25% of a dnstap replay was the general parser); it refuses
            # anything else, which the general parser then takes.
            sc = self.scan
            if sc.message(data, start, stop):
                sc.src, sc.dst = src, dst
                return self._fast_message(ts, data)  # counted there
        if start or stop != len(data):
            data = data[start:stop]
        o = self._message(ts, src, dst, sport, dport, data, False, skip)
        self._counters[o] += 1
        return o

    def _exempt(self, sport: int, dport: int) -> bool:
        """Whether either port is exempt by the allowlist (its queries count, nothing else)."""
        ex = self.exempt_ports
        return bool(ex) and (sport in ex or dport in ex)

    def _message(self, ts: float, src: bytes, dst: bytes, sport: int, dport: int, raw: bytes,
                 cut: bool, skip: bool) -> str:
        """Parse and account one DNS message (``cut``: its datagram was cut by the snaplen;
        ``skip``: on an exempt port); return its outcome, not yet counted."""
        try:
            m = parse(raw, cut)
        except NotDNS:
            self.measure.non_dns(ts, src, dst, dport, len(raw))
            return pk.NOT_DNS
        except DNSError as e:
            self.malformed[e.reason] += 1
            self.measure.non_dns(ts, src, dst, dport, len(raw))
            return pk.MALFORMED
        if m.partial:
            self._counters["snaplen_cut"] += 1
        if self.dns_log is not None:
            self.dns_log.message(ts, src, dst, sport, dport, self._ptcp, m)
        if m.qr:
            self._counters["responses"] += 1
            self._response_types[m.qtype] += 1
            if not skip and m.qlabels is not None:
                down = 0
                for _, _, ln in m.answers:
                    down += ln
                self.measure.response(ts, self.names.analyze(m.qlabels), m.rcode, down, m.size,
                                      dst, src)
            return pk.DNS_RESPONSE
        self._counters["queries"] += 1
        self._query_types[m.qtype] += 1
        if skip:
            self._counters["allowlisted"] += 1
        elif m.qlabels is None:
            self._counters["no_question"] += 1
        elif not self.measure.query(ts, self.names.analyze(m.qlabels), m.qtype, m.size, src,
                                    dst):
            self._counters["allowlisted"] += 1
        return pk.DNS_QUERY

    def _flow_ports(self, client: bytes, server: bytes) -> tuple | None:
        """(client port, server port, over TCP) of the packet being processed, if it
        passed between ``client`` and ``server`` (either way), else None."""
        if self._psrc == client and self._pdst == server:
            return self._psport, self._pdport, self._ptcp
        if self._psrc == server and self._pdst == client:
            return self._pdport, self._psport, self._ptcp
        return None

    def set_dns_log(self, log) -> None:
        """Write every DNS message to ``log`` (output/dnslog.DnsLog), or stop (None)."""
        self.dns_log = log
        self.fast_path = log is None  # the fast path does not parse what the log shows

    def _set_rules(self, ruleset: RuleSet) -> None:
        self.judge.set_rules(ruleset)
        self.exempt_ports = ruleset.allowlist.ports
        self.scan.set_exempt(self.exempt_ports)
        self.names.clear()  # cached message-rule verdicts belong to the old rules

    def reload(self, ruleset: RuleSet) -> None:
        """Swap in new rules and allowlists (SIGHUP); traffic state is kept."""
        self._set_rules(ruleset)

    def close(self) -> None:
        """Before exit: let detectors persist what they learned, and checkpoint the
        long-horizon state."""
        self.judge.close()
        self.measure.checkpoint()

    def checkpoint(self) -> None:
        """Checkpoint the long-horizon state (the daemon, every ``checkpoint_every`` s)."""
        self.measure.checkpoint()

    def finish(self) -> None:
        """End of input: evaluate every key's last window once more."""
        self._psrc = self._pdst = None  # no packet completes what closes now
        self.measure.finish()
        self.judge.flush_alerts()  # the records still settling (detect.policy)

    def flush_alerts(self, now: float | None = None) -> None:
        """Write the alert records that settled by capture time ``now`` (the daemon's
        timer; all of them: None)."""
        self.judge.flush_alerts(now)
        self._due = self.policy.next_due()

    def _settling(self, due: float) -> None:
        """The policy holds a record until capture time ``due``."""
        if due < self._due:
            self._due = due

    def _timely(self, ts: float) -> None:
        """A packet at or past ``_due``: the first one, or the first after an alert record's
        settle interval ended, which is written now (so a record reaches the output within
        its interval of capture time however quiet the other keys are)."""
        if self.first_ts is None:
            self.first_ts = ts
        self.flush_alerts(ts)

    def sweep(self, now: float, limit: int = 2_000) -> int:
        """Live capture, no packet for a while: close the windows that ended (see
        ``Measurements.sweep``); returns the number of keys closed."""
        return self.measure.sweep(now, limit)

    def summary(self) -> dict:
        c = self.counters
        m, j = self.measure.summary(), self.judge.summary()
        allow = self.judge.allow
        return {
            "packets": sum(c[o] for o in pk.OUTCOMES),
            "outcomes": {o: c[o] for o in pk.OUTCOMES},
            "malformed": dict(self.malformed),
            "queries": c["queries"],
            "responses": c["responses"],
            "allowlisted_queries": c["allowlisted"],
            "registered_domains": m["registered_domains"],
            "alerts": j["alerts"],
            "suppressed_alerts": j["suppressed_alerts"],
            "escalated_alerts": j["escalated_alerts"],
            "merged_alerts": j["merged_alerts"],
            "rate_limited_alerts": j["rate_limited_alerts"],
            "tracked_keys": m["tracked_keys"],
            "evicted_keys": m["evicted_keys"],
            "held_keys": m["held_keys"],
            "forgotten_keys": m["forgotten_keys"],
            "tcp": dict(self.tcp.counters),
            "caches": {
                "names": len(self.names), "names_cap": self.names._cache_size,
                "names_analysed": self.names.computed, "names_turnovers": self.names.turnovers,
                "psl_walks": len(self.domains._cache), "psl_walks_cap": self.domains._cache_size,
                "allowlist": len(allow._cache) if hasattr(allow, "_cache") else 0,
                "suppression": len(self.policy._until), "suppression_cap": self.policy.max_keys,
            },
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "series": self.series.summary() if self.series is not None else None,
            "long_horizon": m["long_horizon"],
        }
