"""The data path, shared by ``replay`` and the live daemon:

    frame → decode (link/IP/UDP/TCP) → DNS message → name features → windows → rules → policy
          → alert

:meth:`Pipeline.feed` takes one captured frame; :meth:`Pipeline.finish` evaluates what is
left at the end of input. Everything the run met is counted in :attr:`Pipeline.counters`.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache

from dnsguard.decode import packet as pk
from dnsguard.decode.packet import Datagram, decode_frame, ip_text
from dnsguard.decode.tcpstream import TcpReassembler
from dnsguard.detect.base import Detector
from dnsguard.detect.policy import Policy, combine
from dnsguard.detect.rules import RuleSet
from dnsguard.dns.exception import DNSError, NotDNS
from dnsguard.dns.message import VALID_OPCODES, parse
from dnsguard.dns.name import to_text
from dnsguard.domain import RegisteredDomains
from dnsguard.features import window as win
from dnsguard.features.payload import UNCHECKED, NameAnalyzer
from dnsguard.features.sketch import DistinctCounter
from dnsguard.features.window import note_query, note_response
from dnsguard.output.alerts import EVENT_TUNNEL, alert_record, iso_time
from dnsguard.settings import Settings

log = logging.getLogger(__name__)

_ORDINARY = win.ORDINARY_QTYPES
_RAW_LINKTYPES = frozenset({pk.LINKTYPE_RAW, pk.LINKTYPE_RAW_OLD, pk.LINKTYPE_RAW_OPENBSD,
                            pk.LINKTYPE_IPV4})
try:
    import cython

    _COMPILED = cython.compiled
except ImportError:  # interpreted, Cython not installed
    _COMPILED = False

_OPCODE_MASK = sum(1 << o for o in VALID_OPCODES)


def _u32(p: bytes, i: int, big: bool) -> int:
    """A pcap record header's unsigned 32-bit field at ``p[i:i + 4]`` (compiled: ``p`` is a C
    pointer). The same as ``capture.pcapfile._u32``: a C function of one compiled module is
    callable from another only through a cimport, which the interpreted fallback lacks."""
    a, b, c, d = p[i], p[i + 1], p[i + 2], p[i + 3]  # compiled: unsigned ints (no sign bit)
    if big:
        return (a << 24) | (b << 16) | (c << 8) | d
    return (d << 24) | (c << 16) | (b << 8) | a


def port_map(ports) -> bytes:
    """A 65,536-bit map of ``ports`` (the fast path tests a port with two byte reads)."""
    m = bytearray(8192)
    for p in ports:
        m[p >> 3] |= 1 << (p & 7)
    return bytes(m)


def _either_port(m: bytes, a: int, b: int) -> bool:
    """Whether port ``a`` or ``b`` is in the map ``m`` (:func:`port_map`)."""
    return bool((m[a >> 3] >> (a & 7)) & 1 or (m[b >> 3] >> (b & 7)) & 1)


# Young collections every 50k allocations (default 700), the older generations rarely.
GC_THRESHOLD = (50_000, 50, 1000)


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


_NO_HITS = ((), None)  # a name's cached message-rule verdict when no rule fires (shared)
_suffix_text = lru_cache(maxsize=4096)(to_text)  # a key's shared suffix changes rarely


def due(n: int) -> bool:
    """Evaluate a key after its n-th update? Often while evidence is thin, then sparser."""
    return n <= 32 or (n <= 512 and not n & 7) or not n & 63


def _rounded(f: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in f.items()}


class Pipeline:
    def __init__(self, settings: Settings, ruleset: RuleSet,
                 emit: Callable[[dict], None]) -> None:
        self.s = settings
        self.ruleset = ruleset
        self.emit = emit
        self.ports = frozenset(settings.ports)
        self._port_map = port_map(self.ports)
        self.fast_path = True  # False: every frame through decode_frame + parse (tests)
        self.domains = RegisteredDomains(settings.domain_cache)
        self.names = NameAnalyzer(self.domains, settings.name_cache)
        w, cap = settings.window, settings.exact_cap
        self.tables = {
            "domain": win.WindowTable("domain", w, settings.max_domains, cap),
            "client_domain": win.WindowTable("client_domain", w, settings.max_client_domains,
                                             cap),
            "client": win.WindowTable("client", w, settings.max_clients, cap),
            "flow": win.WindowTable("flow", w, settings.max_flows, cap),
        }
        self._tables3 = (self.tables["domain"], self.tables["client_domain"],
                         self.tables["client"])
        self.tcp = TcpReassembler(settings.tcp_max_flows, settings.tcp_max_bytes)
        self.policy = Policy(settings.suppress, max_keys=settings.policy_keys,
                             rate=settings.alert_rate,
                             burst=settings.alert_burst)
        self._set_rules(ruleset)
        # (client, server) → registered domain last queried directly between them: lets an
        # alert on a non-DNS flow name the domain its DNS handshake used (iodine raw mode).
        self.pair_domain: OrderedDict[tuple[bytes, bytes], str] = OrderedDict()
        # client → registered domain it last queried with a rare type or an encoded name: a
        # raw-mode tunnel's handshake often goes through the resolver, not the pair itself.
        self.client_suspect: OrderedDict[bytes, str] = OrderedDict()
        # The vantage (Settings.resolvers, Settings.home_networks): who counts as a client.
        self._resolvers = frozenset(ipaddress.ip_address(a) for a in settings.resolvers)
        self._home = tuple(ipaddress.ip_network(n, strict=False)
                           for n in settings.home_networks)
        self._vantage_filter = bool(self._resolvers or self._home)
        self._client_ok: dict[bytes, bool] = {}
        self.counters: Tally = Tally()
        self.malformed: Tally = Tally()
        # DNS messages by query type number (bucketed by the metrics exporter at scrape time).
        self.query_types: Tally = Tally()
        self.response_types: Tally = Tally()
        self.regdomains = DistinctCounter(cap=4096)
        self.alerts = 0
        self.source = ""
        self.first_ts: float | None = None
        self.last_ts = 0.0
        # Optional observer of every query: (ts, client, server, lower-case name); eval uses it.
        self.on_query: Callable[[float, str, str, str], None] | None = None
        # Detectors beside the rules (the model): dnsguard.detect.base.Detector subclasses,
        # called on the same feature vectors, at the same moments, as the rules.
        self.extra_detectors: list[Detector] = []
        if settings.use_model:
            from dnsguard.detect.model import detector_for

            det = detector_for(settings)
            if det is not None:
                self.extra_detectors.append(det)
        # Time series per client and registered domain (dnsguard.series, docs/timeseries.md):
        # per packet only integer adds; the detectors run when a step closes.
        self.series = None
        self._store = None  # the monitor's SeriesStore: fed per packet without indirection
        if getattr(settings, "series", False):
            from dnsguard.series.monitor import SeriesMonitor

            self.series = SeriesMonitor(settings.series_step, settings.series_span,
                                        settings.series_keys, detect=settings.volume_alerts,
                                        raise_fn=self._raise)
            self._store = self.series.store

    # --- input ------------------------------------------------------------------------------
    def feed(self, ts: float, linktype: int, data: bytes, wirelen: int) -> str:
        """Process one frame; return its outcome."""
        if data.__class__ is bytes:
            return self._feed_at(ts, linktype, data, 0, len(data), wirelen)
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        return self._feed_general(ts, linktype, data, wirelen)

    def _feed_at(self, ts: float, linktype: int, data: bytes, base: int, end: int,
                 wirelen: int) -> str:
        """:meth:`feed` of the frame at ``data[base:end]``."""
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        if self.fast_path:
            o = self._fast(ts, linktype, data, base, end)
            if o is not None:
                self.counters[o] += 1
                return o
        if base or end != len(data):
            data = data[base:end]
        return self._feed_general(ts, linktype, data, wirelen)

    def feed_frames(self, frames, tick: Callable[[int], None] | None = None) -> int:
        """Feed every ``(ts, linktype, data, wirelen)`` of ``frames`` (a capture reader);
        ``tick(n)`` every 16,384 frames (a progress bar). Returns the number fed. The loop
        lives here so that, compiled, it runs in C with the pipeline (replay's own loop
        in the interpreter cost ~0.2 µs a frame). From a pcap file's reader it takes whole
        runs of records (``CaptureReader.pcap_runs``) and reads each record in place: no
        bytes object, tuple or float per frame unless the general path needs the frame."""
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
        for ts, lt, data, wirelen in frames:
            self.feed(ts, lt, data, wirelen)
            n += 1
            if tick is not None and not n & 0x3FFF:
                tick(n)
        return n

    def _fast(self, ts: float, linktype: int, data: bytes, base: int,
              end: int) -> str | None:
        """Fast path for the frame at ``data[base:end]``: one UDP/IPv4 datagram (no IP
        options, not a fragment, not cut by the snaplen) on untagged Ethernet or raw IP,
        carrying one DNS message with one uncompressed question. Anything else, including
        every case the fast path would have to report (a malformed header, a cut packet),
        returns None and takes the general path, which gives the same outcome for what the
        fast path handles (tests/test_fastpath.py). Fields are read byte by byte after each
        length check (compiled, ``buf`` is a C pointer: no Python object per field)."""
        n = end - base
        buf = data
        if linktype == 1:
            off = base + 14
            if n < 42 or buf[base + 12] != 8 or buf[base + 13] != 0 or buf[off] != 0x45:
                return None
        elif linktype in _RAW_LINKTYPES:
            off = base
            if n < 28 or buf[off] != 0x45:
                return None
        else:
            return None
        total = (buf[off + 2] << 8) | buf[off + 3]
        ulen = (buf[off + 24] << 8) | buf[off + 25]
        if (buf[off + 9] != 17 or (buf[off + 6] & 0x3F) or buf[off + 7] or ulen < 20
                or total < 28 + ulen - 8 or off + total > end):
            return None
        sport = (buf[off + 20] << 8) | buf[off + 21]
        dport = (buf[off + 22] << 8) | buf[off + 23]
        if not _either_port(self._port_map, sport, dport):
            return None
        em = self._exempt_map
        if em is not None and _either_port(em, sport, dport):
            return None
        start = off + 28
        # Slices of ``buf``: compiled, a bytes object straight from the C pointer (slicing
        # ``data`` built a slice object first).
        return self._fast_dns(ts, data, start, start + ulen - 8, buf[off + 12:off + 16],
                              buf[off + 16:off + 20])

    def _fast_dns(self, ts: float, data: bytes, start: int, stop: int, src: bytes,
                  dst: bytes) -> str | None:
        """One DNS message at ``data[start:stop]`` whose question name is not compressed;
        None (nothing counted) for anything else."""
        if stop - start < 17:
            return None
        buf = data
        flags = (buf[start + 2] << 8) | buf[start + 3]
        if (buf[start + 4] or buf[start + 5] != 1
                or not (_OPCODE_MASK >> ((flags >> 11) & 0xF)) & 1):
            return None
        an = (buf[start + 6] << 8) | buf[start + 7]
        ns = (buf[start + 8] << 8) | buf[start + 9]
        ar = (buf[start + 10] << 8) | buf[start + 11]
        q = start + 12
        limit = min(stop, q + 255)
        # A name seen before: the bytes up to the first zero octet are a cached name's wire
        # form only if walking its labels from here ends exactly there (the walk reads
        # nothing else), so a cache hit needs no walk.
        if _COMPILED:  # a C loop; interpreted, bytes.find is the fast way
            z = q
            while z < limit and buf[z]:
                z += 1
            if z == limit:
                z = -1
        else:
            z = data.find(0, q, limit)
        nf = self.names._cache.get(buf[q:z + 1]) if z >= 0 else None
        if nf is not None:
            off = z + 1
        else:
            # Walk the question name's labels (lengths only) to find where it ends.
            off = q
            while True:
                if off >= limit:
                    return None  # runs past the message, or longer than 255 octets
                ln = buf[off]
                if not ln:
                    break
                if ln > 63:
                    return None  # a pointer or a reserved label type
                off += ln + 1
            off += 1
        if off + 4 > stop:
            return None
        qtype = (buf[off] << 8) | buf[off + 1]
        rcode = flags & 0xF
        down = 0
        if an or ns or ar:
            # Answer, authority and additional records: validated as parse() does; of the
            # answers only the rdata lengths are used, of the additional only OPT's rcode.
            p = off + 4
            i = 0
            total = an + ns + ar
            while i < total:
                if p >= stop:
                    return None
                ln = buf[p]
                if ln >= 0xC0:
                    owner_root = False
                    p += 2
                elif ln == 0:
                    owner_root = True
                    p += 1
                else:  # an uncompressed owner name (or one ending in a pointer): skip it
                    owner_root = False
                    while True:
                        if ln > 63:
                            if ln < 0xC0:
                                return None  # reserved label type: the general path says so
                            p += 2
                            break
                        p += ln + 1
                        if p >= stop:
                            return None
                        ln = buf[p]
                        if not ln:
                            p += 1
                            break
                if p + 10 > stop:
                    return None
                rdlen = (buf[p + 8] << 8) | buf[p + 9]
                if i < an:
                    down += rdlen
                elif i >= an + ns and buf[p] == 0 and buf[p + 1] == 41:  # OPT
                    if not owner_root:
                        return None
                    rcode |= buf[p + 4] << 4  # the extended rcode: the TTL's top octet
                p += 10 + rdlen
                if p > stop:
                    return None
                i += 1
        size = stop - start
        if nf is None:
            nf = self.names.analyze_wire(buf[q:off], data, q)
        if flags & 0x8000:
            self.counters["responses"] += 1
            self.response_types[qtype] += 1
            self._response(ts, nf, rcode, down, size, dst, src)
            return pk.DNS_RESPONSE
        self.counters["queries"] += 1
        self.query_types[qtype] += 1
        self._query(ts, nf, qtype, size, src, dst)
        return pk.DNS_QUERY

    def _feed_general(self, ts: float, linktype: int, data: bytes, wirelen: int) -> str:
        d = decode_frame(linktype, data, wirelen, self.ports)
        if d.__class__ is not Datagram:
            self.counters[d.outcome] += 1
            if d.outcome == pk.MALFORMED or d.outcome == pk.UNSUPPORTED:
                self.malformed[d.reason] += 1
            return d.outcome
        if d.tcp:
            msgs = self.tcp.feed((d.src, d.sport, d.dst, d.dport), d.seq, d.flags, d.payload)
            if not msgs:
                self.counters[pk.DNS_PARTIAL] += 1
                return pk.DNS_PARTIAL
        else:
            msgs = (d.payload,)
        outcome = None
        skip = self._exempt(d.sport, d.dport)
        for raw in msgs:
            o = self._message(ts, d.src, d.dst, d.sport, d.dport, raw, d.cut, skip)
            if outcome is None:
                outcome = o
        self.counters[outcome] += 1  # a frame counts once, under its first message's outcome
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
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        skip = self._exempt(sport, dport)
        if self.fast_path and not skip and wire.__class__ is bytes:
            # The compiled scanner first, as for a frame (one uncompressed question: nearly
            # every message; ~25% of a dnstap replay was the general parser); it returns None
            # for anything else, which the general parser then takes.
            o = self._fast_dns(ts, wire, 0, len(wire), src, dst)
            if o is not None:
                self.counters[o] += 1
                return o
        o = self._message(ts, src, dst, sport, dport, wire, False, skip)
        self.counters[o] += 1
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
            self._non_dns(ts, src, dst, dport, len(raw))
            return pk.NOT_DNS
        except DNSError as e:
            self.malformed[e.reason] += 1
            self._non_dns(ts, src, dst, dport, len(raw))
            return pk.MALFORMED
        if m.partial:
            self.counters["snaplen_cut"] += 1
        if m.qr:
            self.counters["responses"] += 1
            self.response_types[m.qtype] += 1
            if not skip and m.qlabels is not None:
                down = 0
                for _, _, ln in m.answers:
                    down += ln
                self._response(ts, self.names.analyze(m.qlabels), m.rcode, down, m.size, dst,
                               src)
            return pk.DNS_RESPONSE
        self.counters["queries"] += 1
        self.query_types[m.qtype] += 1
        if skip:
            self.counters["allowlisted"] += 1
        elif m.qlabels is None:
            self.counters["no_question"] += 1
        else:
            self._query(ts, self.names.analyze(m.qlabels), m.qtype, m.size, src, dst)
        return pk.DNS_QUERY

    # --- DNS ----------------------------------------------------------------------------------
    def _query(self, ts: float, nf, qtype: int, size: int, client: bytes,
               server: bytes) -> None:
        rd = nf.regdomain
        if not nf.counted:
            # Once per name while it is cached: a distinct count needs each name only once.
            nf.counted = True
            self.regdomains.add(rd)
        if self.on_query is not None:
            self.on_query(ts, ip_text(client), ip_text(server), nf.name)
        factor = 1.0
        entry = self._allowed(nf, client, server)
        if entry is not None:
            if entry.action == "exempt":
                self.counters["allowlisted"] += 1
                return
            factor = entry.factor
        if self._store is not None:
            self._store.observe_query(ts, client, rd, nf.name_hash, size, qtype)
        pd = self.pair_domain
        pd[(client, server)] = rd
        if len(pd) > 4096:
            pd.popitem(last=False)
        if nf.encoded or qtype not in _ORDINARY:
            cs = self.client_suspect
            cs[client] = rd
            cs.move_to_end(client)
            if len(cs) > 4096:
                cs.popitem(last=False)
        t_dom, t_cd, t_cl = self._tables3
        need = (self._need if self._need_for == len(self.extra_detectors)
                else self._refresh_need())
        st = self._window(t_dom, rd, ts, factor)
        note_query(st, nf, qtype, client, server)
        if self._message_rules and not self.policy.is_suppressed(("d", rd), ts):
            # Message rules see only the name and its type: their verdict is cached with the
            # name, so a name seen again costs a dict lookup.
            vkey: object = qtype
            if factor != 1.0:
                vkey = (qtype, factor)
            cached = nf.verdicts.get(vkey)
            if cached is None:
                f = nf.fdict()
                f["qtype"] = qtype
                f["qtype_rare"] = 0 if qtype in _ORDINARY else 1
                hits = self._rule_hits("message", f, factor)
                # The feature dict is kept only for the alert it may become: most names
                # fire nothing, and ~1 KB per cached name was most of the name cache.
                cached = nf.verdicts[vkey] = (tuple(hits), f) if hits else _NO_HITS
            if cached[0]:
                self._raise("message", ("d", rd), cached[1], list(cached[0]), ts, client,
                            server, self._base_domain(st, rd),
                            st, [nf.name] + [x for x in st.samples if x != nf.name])
        self._due(t_dom, rd, st, need[0], factor, ts)
        if self._vantage_filter and not self._per_client(client):
            return
        key = (client, rd)
        st = self._window(t_cd, key, ts, factor)
        note_query(st, nf, qtype, client, server)
        self._due(t_cd, key, st, need[1], factor, ts)
        st = self._window(t_cl, client, ts, 1.0)
        note_query(st, nf, qtype, client, server, False)
        win.note_client_domain(st, nf)
        self._due(t_cl, client, st, need[2], 1.0, ts)

    def _window(self, table: win.WindowTable, key, ts: float, factor: float) -> win.KeyStats:
        """The key's stats for the window holding ``ts``; a window that just closed gets its
        last evaluation. The common case (open window) is WindowTable.get inlined."""
        st = table.lookup(key)
        if st is not None and ts - st.start <= table.window:
            table.touch(key)
            if ts > st.last:
                st.last = ts
            return st
        st, old = table.get(key, ts)
        if old is not None:
            self._check(table.scope, key, old, factor, old.last)
        return st

    def _due(self, table: win.WindowTable, key, st: win.KeyStats, need: int, factor: float,
             ts: float) -> None:
        """Evaluate the key now? Not below the scope's minimum evidence (where _check would
        return at once), then by ``due`` (inlined)."""
        if st.queries >= need:
            n = st.queries + st.responses
            if n <= 32 or (n <= 512 and not n & 7) or not n & 63:
                self._check(table.scope, key, st, factor, ts)

    def _per_client(self, client: bytes) -> bool:
        """Whether an address gets client/domain and client keys (the vantage): not one of
        our resolvers — its queries are many users' at once, or at a resolver's egress all of
        them — and, when home networks are set, inside them (queries from outside, e.g. to our
        own authoritative servers, are not our clients'). Their queries still count for the
        domain scope. Cached per address."""
        ok = self._client_ok.get(client)
        if ok is None:
            ip = ipaddress.ip_address(ip_text(client))
            ok = ip not in self._resolvers and (
                not self._home or any(ip.version == n.version and ip in n for n in self._home))
            if len(self._client_ok) >= 65_536:
                self._client_ok.clear()
            self._client_ok[client] = ok
        return ok

    def _refresh_need(self) -> tuple[int, int, int]:
        """Fewest queries before ``_check`` evaluates a domain, client/domain or client key
        (what it computes on each call), for the hot path to skip the call below it."""
        need = []
        for sc in ("domain", "client_domain", "client"):
            n = self._rule_min[sc]
            for d in self.extra_detectors:
                n = min(n, d.min_queries)
            need.append(max(n, 1))
        self._need = tuple(need)
        self._need_for = len(self.extra_detectors)
        return self._need

    def _allowed_address(self, client: bytes, server: bytes):
        allow = self.allow
        return (allow.for_address("client", ip_text(client))
                or allow.for_address("resolver", ip_text(server)))

    def _allowed(self, nf, client: bytes, server: bytes):
        """The allowlist entry covering a query: by name, else by client, else by resolver."""
        entry = nf.allow
        if entry is UNCHECKED:
            allow = self.allow
            entry = nf.allow = allow.for_domain(nf.name) if allow.entries else None
        if entry is None and self._allow_nets:
            entry = self._allowed_address(client, server)
        return entry

    def _response(self, ts: float, nf, rcode: int, down: int, size: int, client: bytes,
                  server: bytes) -> None:
        rd = nf.regdomain
        factor = 1.0
        entry = self._allowed(nf, client, server)
        if entry is not None:
            if entry.action == "exempt":
                return
            factor = entry.factor
        if self._store is not None:
            self._store.observe_response(ts, client, rd, size, rcode)
        t_dom, t_cd, t_cl = self._tables3
        need = (self._need if self._need_for == len(self.extra_detectors)
                else self._refresh_need())
        st = self._window(t_dom, rd, ts, factor)
        note_response(st, down, rcode)
        self._due(t_dom, rd, st, need[0], factor, ts)
        if self._vantage_filter and not self._per_client(client):
            return
        key = (client, rd)
        st = self._window(t_cd, key, ts, factor)
        note_response(st, down, rcode)
        self._due(t_cd, key, st, need[1], factor, ts)
        st = self._window(t_cl, client, ts, 1.0)
        note_response(st, down, rcode)
        self._due(t_cl, client, st, need[2], 1.0, ts)

    def _non_dns(self, ts: float, src: bytes, dst: bytes, dport: int, size: int) -> None:
        """Non-DNS or broken payload on a DNS port: account it to the (client, server) flow."""
        to_server = dport in self.ports
        client, server = (src, dst) if to_server else (dst, src)
        key = (client, server)
        st, old = self.tables["flow"].get(key, ts)
        if old is not None:
            self._check("flow", key, old, 1.0, old.last)
        st.packets += 1
        st.queries += 1
        if to_server:
            st.bytes_up += size
        else:
            st.bytes_down += size
        st.last_client, st.last_server = client, server
        if due(st.packets):
            self._check("flow", key, st, 1.0, ts)

    # --- detection ----------------------------------------------------------------------------
    def _check(self, scope: str, key, st: win.KeyStats, factor: float, ts: float) -> None:
        n = st.queries + st.responses
        if st.evaluated_at == n:
            return
        need = self._rule_min[scope]
        if self.extra_detectors:
            for d in self.extra_detectors:
                need = min(need, d.min_queries)
        if st.queries < need:
            return
        st.evaluated_at = n
        if scope == "flow":
            ident = ("f", key)
        elif scope == "client":
            ident = ("c", key)
        else:
            ident = ("d", key if scope == "domain" else key[1])
        if self.policy.is_suppressed(ident, ts):
            return
        if not self.rules[scope] and not self.extra_detectors:
            return
        if scope == "flow":
            domain = self.pair_domain.get(key) or self.client_suspect.get(key[0])
        elif scope == "client":
            domain = None
        else:
            domain = self._base_domain(st, ident[1])
        f = win.features(st, scope)
        self._evaluate(scope, ident, f, factor, ts, st.last_client, st.last_server, domain, st,
                       st.samples)

    def _base_domain(self, st: win.KeyStats, rd: str) -> str:
        """The deepest zone all of the key's names share (a tunnel's base domain), at least
        the registered domain."""
        suf = st.suffix
        if suf and len(st.names) > 1:
            text = _suffix_text(suf)
            if len(text) > len(rd) and text.endswith("." + rd):
                return text
        return rd

    def _rule_hits(self, scope: str, f: dict, factor: float) -> list:
        hits = []
        for r in self.rules[scope]:
            reasons = r.match(f, factor)
            if reasons is not None:
                hits.append((r.id, r.severity, r.score, reasons))
        return hits

    def _evaluate(self, scope: str, ident: tuple, f: dict, factor: float, ts: float,
                  client: bytes, server: bytes, domain: str | None, st, samples) -> None:
        """Rules, then the extra detectors (windowed scopes only), then policy."""
        hits = self._rule_hits(scope, f, factor)
        for det in self.extra_detectors:
            # What the detector may learn from: rule verdicts, allowlist factor, addresses.
            det.observe(scope, f, ident, factor=factor, hits=hits, ts=ts, client=client,
                        server=server, domain=domain)
            h = det.score(scope, f, ident)
            if h is not None:
                hits.append(h)
        if hits:
            self._raise(scope, ident, f, hits, ts, client, server, domain, st, samples)

    def _raise(self, scope: str, ident: tuple, f: dict, hits: list, ts: float, client: bytes,
               server: bytes, domain: str | None, st, samples,
               event_type: str = EVENT_TUNNEL) -> None:
        """Policy: one alert per key per suppression window, detectors combined."""
        if not self.policy.admit(ident, ts):
            return
        sev, score, detectors, reasons = combine(hits)
        if scope == "message":
            # The window's traffic features stay the record's `stats`; the one name's
            # features that fired go beside them.
            stats = _rounded(win.features(st, "domain"))
            stats["message"] = _rounded(f)
        else:
            stats = _rounded(f)
        if st is not None:
            stats["qtypes"] = win.qtype_mix(st)
            stats["window_start"] = iso_time(st.start)
        alert = alert_record(ts, event_type, scope, sev, score, detectors, reasons, domain,
                             client, server, stats, samples, self.source, self.s.sensor)
        self.alerts += 1
        self.emit(alert)

    def _set_rules(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.rules = {sc: ruleset.for_scope(sc) for sc in win.SCOPES}
        self.allow = ruleset.allowlist
        if hasattr(self.allow, "cache_size"):
            self.allow.cache_size = self.s.allow_cache
        self.exempt_ports = ruleset.allowlist.ports
        self._exempt_map = port_map(self.exempt_ports) if self.exempt_ports else None
        self._allow_nets = ruleset.allowlist.has_networks
        self._message_rules = bool(self.rules["message"])
        self._need, self._need_for = (1, 1, 1), -1  # _refresh_need() on the next packet
        self.names.clear()  # cached message-rule verdicts belong to the old rules
        # Per scope, the fewest queries a key needs before any rule could fire: keys below it
        # are not evaluated (most keys on a busy network never get there). Extra detectors
        # lower it with their own ``min_queries``.
        self._rule_min = {sc: min((r.min_queries() for r in self.rules[sc]), default=1 << 30)
                          for sc in win.SCOPES}

    def reload(self, ruleset: RuleSet) -> None:
        """Swap in new rules and allowlists (SIGHUP); traffic state is kept."""
        self.ruleset = ruleset
        self._set_rules(ruleset)

    def close(self) -> None:
        """Before exit: let detectors persist what they learned."""
        for det in self.extra_detectors:
            det.close()

    def _close_window(self, scope: str, key, st: win.KeyStats) -> None:
        """A window's last evaluation, at its last packet's time, with its allowlist factor."""
        fac = 1.0
        if scope in ("domain", "client_domain") and self.allow.entries:
            e = self.allow.for_domain(key if scope == "domain" else key[1])
            fac = e.factor if e is not None else 1.0
        self._check(scope, key, st, fac, st.last)

    def finish(self) -> None:
        """End of input: evaluate every key's last window once more."""
        for scope, table in self.tables.items():
            for key, st in list(table.keys.items()):
                self._close_window(scope, key, st)
        if self.series is not None:
            self.series.finish()

    def sweep(self, now: float, limit: int = 2_000) -> int:
        """Live capture, no packet for a while: give keys whose window has ended
        (start + window < now) their final evaluation and forget them, as their next packet
        would (``WindowTable.get``). Examines at most ``limit`` keys per table from the least
        recently used end, where ended windows are; returns the number of keys closed."""
        done = 0
        for scope, table in self.tables.items():
            keys, w = table.keys, table.window
            ended = []
            for n, (key, st) in enumerate(keys.items()):
                if n >= limit:
                    break
                if st.start + w < now:
                    ended.append((key, st))
            for key, st in ended:
                self._close_window(scope, key, st)
                if keys.get(key) is st:
                    del keys[key]
                done += 1
        return done

    def summary(self) -> dict:
        c = self.counters
        return {
            "packets": sum(c[o] for o in pk.OUTCOMES),
            "outcomes": {o: c[o] for o in pk.OUTCOMES},
            "malformed": dict(self.malformed),
            "queries": c["queries"],
            "responses": c["responses"],
            "allowlisted_queries": c["allowlisted"],
            "registered_domains": len(self.regdomains),
            "alerts": self.alerts,
            "suppressed_alerts": self.policy.suppressed,
            "rate_limited_alerts": self.policy.rate_limited,
            "tracked_keys": {k: len(t) for k, t in self.tables.items()},
            "evicted_keys": {k: t.evicted for k, t in self.tables.items()},
            "tcp": dict(self.tcp.counters),
            "caches": {
                "names": len(self.names), "names_cap": self.names._cache_size,
                "names_analysed": self.names.computed, "names_turnovers": self.names.turnovers,
                "psl_walks": len(self.domains._cache), "psl_walks_cap": self.domains._cache_size,
                "allowlist": len(self.allow._cache) if hasattr(self.allow, "_cache") else 0,
                "suppression": len(self.policy._until), "suppression_cap": self.policy.max_keys,
            },
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "series": self.series.summary() if self.series is not None else None,
        }
