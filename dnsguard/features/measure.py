"""Measurement: what the traffic did, per key and window, apart from any judgment of it.

:class:`Measurements` owns the window tables of every scope (``features.window``), the
vantage (who counts as a client), the memory of which domain a client/server pair last used
(so a flow alert can name it) and the feed of the per-client and per-domain series. It never
raises an alert: like Zeek's SumStats beside its Notice framework, it calls back an
:class:`Observer` (the judge, ``detect.judge.Judge``) when a key is due for evaluation
(:meth:`Observer.on_due`), when a window closes (:meth:`Observer.on_close`) and, for the
per-message rules, on each measured query (:meth:`Observer.on_query`). The observer also
answers the one question measurement asks of policy: is this query measured at all, and with
which allowlist factor (:meth:`Observer.factor`).

A window's summary is mergeable, so several processes can measure and one judge read the
sum: counters add, HyperLogLog registers take the maximum (``features.sketch``), the
allowlist factor takes the maximum.

Example:
    >>> from dnsguard.domain import RegisteredDomains
    >>> from dnsguard.features.payload import NameAnalyzer
    >>> from dnsguard.settings import Settings
    >>> class Count(Observer):
    ...     def __init__(self):
    ...         super().__init__(); self.due = []
    ...     def on_due(self, scope, key, st, ts):
    ...         self.due.append((scope, st.queries))
    >>> m, j = Measurements(Settings(series=False)), Count()
    >>> m.attach(j)
    >>> nf = NameAnalyzer(RegisteredDomains(16), 16).analyze((b"www", b"example", b"com"))
    >>> m.query(0.0, nf, 1, 40, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 53]))
    True
    >>> j.due, len(m.tables["domain"]), m.tables["domain"].keys["example.com"].queries
    ([('domain', 1), ('client_domain', 1), ('client', 1)], 1, 1)
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from dnsguard.decode.packet import ip_text
from dnsguard.dns import rdatatype
from dnsguard.features import horizon as hz
from dnsguard.features import window as win
from dnsguard.features.sketch import DistinctCounter
from dnsguard.features.window import note_client_domain, note_query, note_response
from dnsguard.series.store import SERVICE
from dnsguard.settings import Settings

#: The scopes with window tables, in the order keys of one query are measured.
WINDOW_SCOPES = ("domain", "client_domain", "client", "flow")
_ORDINARY = rdatatype.ORDINARY
PAIR_MEMORY = 4096  # (client, server) pairs and clients whose last domain is remembered
_PAIR_MEMORY = PAIR_MEMORY  # compiled: a C integer (measure.pxd), compared per packet
MAX_HELD = 4  # packets of a key held before admission (its first query and responses)
log = logging.getLogger(__name__)


def due(n: int) -> bool:
    """Evaluate a key after its n-th update? Often while evidence is thin, then sparser."""
    return n <= 32 or (n <= 512 and not n & 7) or not n & 63


class Observer:
    """What measurement calls back (the judge implements it; the defaults measure everything
    at factor 1 and judge nothing). ``message_rules``: whether :meth:`on_query` is wanted."""

    def __init__(self) -> None:
        self.message_rules = False

    def evidence_need(self) -> tuple:
        """Fewest queries before a domain, client/domain or client key is worth an
        :meth:`on_due` call (the judge's evidence gate, asked on every message)."""
        return (1, 1, 1)

    def factor(self, nf, client: bytes, server: bytes) -> float:
        """The allowlist factor of a query or response for its domain and client/domain
        keys: 1.0 (none), > 1 (thresholds on volume features raised), or < 0: exempt, not
        measured."""
        return 1.0

    def on_query(self, ts: float, nf, qtype: int, factor: float, st: win.KeyStats,
                 client: bytes, server: bytes) -> None:
        """A query was measured into its domain's window ``st`` (per-message rules)."""

    def message_hit(self, nf, qtype: int, factor: float) -> bool:
        """Could :meth:`on_query` raise an alert for this query? (If not, a domain seen for
        the first time need not be tracked yet: ``WindowTable``'s admission.)"""
        return True

    def on_due(self, scope: str, key, st: win.KeyStats, ts: float) -> None:
        """Key ``key`` of ``scope`` has new evidence (by :func:`due`'s schedule)."""

    def on_close(self, scope: str, key, st: win.KeyStats) -> None:
        """The window ``st`` of ``key`` has ended (a new one begins, the key is swept, or
        input ended): its last evaluation."""

    def on_long_due(self, due: int, client: bytes, server: bytes, rd: str, factor: float,
                    ts: float) -> None:
        """The long-horizon keys of a query have new evidence (``features.horizon``): the
        domain ``rd`` if ``due & DUE_DOMAIN``, the pair ``(client, rd)`` if ``due &
        DUE_PAIR``."""


class Measurements:
    """The window tables per scope and everything measured beside them."""

    def __init__(self, settings: Settings) -> None:
        self.ports = frozenset(settings.ports)
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
        # (client, server) → registered domain last queried directly between them: lets an
        # alert on a non-DNS flow name the domain its DNS handshake used (iodine raw mode).
        # The PAIR_MEMORY pairs first seen last are kept: a new pair takes the place of the
        # oldest in a ring (a plain dict and a list: an OrderedDict's insert and popitem
        # were ~1.5k instructions a packet when every pair is new, a flood).
        self.pair_domain: dict[tuple[bytes, bytes], str] = {}
        self._pair_ring: list[tuple[bytes, bytes] | None] = [None] * PAIR_MEMORY
        self._pair_pos = 0
        # client → registered domain it last queried with a rare type or an encoded name: a
        # raw-mode tunnel's handshake often goes through the resolver, not the pair itself.
        # The PAIR_MEMORY clients that did so most recently are kept (least recently used
        # leaves), as an OrderedDict with move_to_end would keep them, in a plain dict and a
        # queue of the clients in the order they did it (``_note_suspect``): an OrderedDict's
        # insert and popitem were ~1.7k instructions a new suspect, most flood packets.
        self.client_suspect: dict[bytes, str] = {}
        self._suspect_q: list[bytes] = []  # clients, oldest first; earlier entries stale
        self._suspect_head = 0  # the queue's first live position
        self._suspect_stale: dict[bytes, int] = {}  # client → its stale entries in the queue
        # The vantage (Settings.resolvers, Settings.home_networks): who counts as a client.
        self._resolvers = frozenset(ipaddress.ip_address(a) for a in settings.resolvers)
        self._home = tuple(ipaddress.ip_network(n, strict=False)
                           for n in settings.home_networks)
        self._vantage_filter = bool(self._resolvers or self._home)
        self._client_ok: dict[bytes, bool] = {}
        self.regdomains = DistinctCounter(cap=4096)
        # Optional observer of every query: (ts, client, server, lower-case name); eval uses it.
        self.on_query: Callable[[float, str, str, str], None] | None = None
        # Time series per client and registered domain (dnsguard.series, docs/timeseries.md):
        # per packet only integer adds; the detectors run when a step closes.
        self.series = None
        self._store = None  # the monitor's SeriesStore: fed per packet without indirection
        if settings.series:
            from dnsguard.series.monitor import SeriesMonitor

            self.series = SeriesMonitor(settings.series_step, settings.series_span,
                                        settings.series_keys, detect=settings.volume_alerts)
            self._store = self.series.store
        # Long-horizon state per registered domain and client → domain (hours, bounded):
        # low-and-slow exfiltration and beacons that no window holds enough of. Restored
        # from its checkpoint when there is one: a restart does not reset the clock.
        self.horizon = None
        self.long_state = settings.long_state
        if settings.long_horizon:
            self.horizon = hz.Horizon(settings.long_tau, settings.long_max_domains,
                                      settings.long_max_pairs)
            if self.long_state is not None:
                n = hz.load(self.horizon, self.long_state)
                if n > 0:
                    log.info("%s: resumed the long-horizon state (%d keys)", self.long_state,
                             n)
        self.judge = Observer()

    def attach(self, judge: Observer) -> None:
        """Report to ``judge`` from now on."""
        self.judge = judge

    # --- per message ------------------------------------------------------------------------
    def query(self, ts: float, nf, qtype: int, size: int, client: bytes,
              server: bytes) -> bool:
        """Measure one query for name features ``nf``; False if the allowlist exempts it."""
        rd = nf.regdomain
        if not nf.counted:
            # Once per name while it is cached: a distinct count needs each name only once.
            nf.counted = True
            self.regdomains.add_hash(nf.reg_hash)
        if self.on_query is not None:
            self.on_query(ts, ip_text(client), ip_text(server), nf.name)
        j = self.judge
        factor = j.factor(nf, client, server)
        if factor < 0.0:
            return False
        if self._store is not None:
            # Allowlisted ``raise`` traffic (reverse zones, CDNs) counts 1/factor in the
            # series, as the rules hold it to thresholds factor times higher: a monitoring
            # host's reverse sweeps are not a volume anomaly (issue #12), a tunnel under an
            # ordinary name still is.
            self._store.observe_query(ts, client, rd, nf.name_hash, size,
                                      SERVICE if nf.service else qtype, 1.0 / factor)
        # Whether the client gets client/domain and client keys (the vantage), and the
        # client/domain key, made once for the windows and the long horizon.
        per_client = not self._vantage_filter or self._per_client(client)
        key = (client, rd) if per_client else None
        lh = self.horizon
        if lh is not None:
            d = lh.observe_query(ts, client, nf, qtype, size, per_client, key)
            if d:
                j.on_long_due(d, client, server, rd, factor, ts)
        pd = self.pair_domain
        n = len(pd)
        pair = (client, server)
        pd[pair] = rd
        if len(pd) != n:  # a new pair
            ring = self._pair_ring
            i = self._pair_pos
            old = ring[i]
            if old is not None:
                del pd[old]
            ring[i] = pair
            self._pair_pos = i + 1 if i + 1 < _PAIR_MEMORY else 0
        if nf.encoded or qtype not in _ORDINARY:
            self._note_suspect(client, rd)
        t_dom, t_cd, t_cl = self._tables3
        need_dom, need_cd, need_cl = j.evidence_need()  # compiled: C integers
        # A key no rule or detector of its scope can judge on one query is tracked from its
        # second (WindowTable's admission): until then its first query is held, as
        # ``first`` (one record, immutable, shared by the keys of the query that are held;
        # held alone, not in a 1-tuple of records: ``_window`` tells the two apart).
        first = None
        st = self._window(t_dom, rd, ts, factor, need_dom > 1, 0, None)
        if st is None and j.message_rules and j.message_hit(nf, qtype, factor):
            st = self._window(t_dom, rd, ts, factor, False, 0, None)  # a message alert
        if st is None:
            first = (ts, nf, qtype, -1, client, server)
            t_dom.hold(rd, first)
        else:
            note_query(st, nf, qtype, client, server)
            if j.message_rules:
                j.on_query(ts, nf, qtype, factor, st, client, server)
            self._due(t_dom, rd, st, need_dom, ts)
        if not per_client:
            return True
        # Given ``first`` (the domain key held it), _window holds it itself when the key is
        # not tracked (WindowTable.take_or_hold: one hash and probe fewer a key).
        st = self._window(t_cd, key, ts, factor, need_cd > 1, 1, None, first)
        if st is None:
            if first is None:
                first = (ts, nf, qtype, -1, client, server)
                t_cd.hold(key, first)
        else:
            note_query(st, nf, qtype, client, server)
            self._due(t_cd, key, st, need_cd, ts)
        st = self._window(t_cl, client, ts, 1.0, need_cl > 1, 2, None, first)
        if st is None:
            if first is None:
                first = (ts, nf, qtype, -1, client, server)
                t_cl.hold(client, first)
        else:
            note_query(st, nf, qtype, client, server, False)
            note_client_domain(st, nf)
            self._due(t_cl, client, st, need_cl, ts)
        return True

    def response(self, ts: float, nf, rcode: int, down: int, size: int, client: bytes,
                 server: bytes) -> None:
        """Measure one response (``down``: answer rdata octets) to ``client``."""
        rd = nf.regdomain
        j = self.judge
        factor = j.factor(nf, client, server)
        if factor < 0.0:
            return
        if self._store is not None:
            self._store.observe_response(ts, client, rd, size, rcode, 1.0 / factor)
        per_client = not self._vantage_filter or self._per_client(client)
        key = (client, rd) if per_client else None
        if self.horizon is not None:
            self.horizon.observe_response(ts, client, rd, down, per_client, key)
        t_dom, t_cd, t_cl = self._tables3
        need = j.evidence_need()
        rec = (ts, nf, rcode, down, client, server)  # held with the key's query (admission)
        # The key's last pair is this response's, as a query's is the query's: a response
        # can complete the evidence, and the alert names its flow (the domain of a resolver
        # chain has two: client-resolver and resolver-server).
        st = self._window(t_dom, rd, ts, factor, need[0] > 1, 0, rec)
        if st is not None:
            note_response(st, down, rcode)
            st.last_client = client
            st.last_server = server
            self._due(t_dom, rd, st, need[0], ts)
        if not per_client:
            return
        st = self._window(t_cd, key, ts, factor, need[1] > 1, 1, rec)
        if st is not None:
            note_response(st, down, rcode)
            st.last_client = client
            st.last_server = server
            self._due(t_cd, key, st, need[1], ts)
        st = self._window(t_cl, client, ts, 1.0, need[2] > 1, 2, rec)
        if st is not None:
            note_response(st, down, rcode)
            st.last_client = client
            st.last_server = server
            self._due(t_cl, client, st, need[2], ts)

    def non_dns(self, ts: float, src: bytes, dst: bytes, dport: int, size: int) -> None:
        """Non-DNS or broken payload on a DNS port: account it to the (client, server) flow."""
        to_server = dport in self.ports
        client, server = (src, dst) if to_server else (dst, src)
        key = (client, server)
        st, old = self.tables["flow"].get(key, ts)
        if old is not None:
            self.judge.on_close("flow", key, old)
        st.packets += 1
        st.queries += 1
        if to_server:
            st.bytes_up += size
        else:
            st.bytes_down += size
        st.last_client, st.last_server = client, server
        if due(st.packets):
            self.judge.on_due("flow", key, st, ts)

    def flow_domain(self, key: tuple[bytes, bytes]) -> str | None:
        """The domain a flow's pair (else its client) last used in DNS, if remembered."""
        return self.pair_domain.get(key) or self.client_suspect.get(key[0])

    def _window(self, table: win.WindowTable, key, ts: float, factor: float,
                hold: bool = False, kind: int = 0, rec: tuple | None = None,
                first: tuple | None = None) -> win.KeyStats | None:
        """The key's stats for the window holding ``ts`` (its factor now ``factor``); a
        window that just closed gets its last evaluation. The common case (open window) is
        WindowTable.get inlined.

        ``hold``: admission (``WindowTable.hold``) for a key not in the table. None if the
        key is not tracked yet: a query (``rec`` None) the caller must hold, or a response
        ``rec`` held here. A query of a held key (or a response past ``MAX_HELD``) admits it:
        new stats from its first held packet, the held packets replayed into them (``kind``:
        0 domain, 1 client/domain, 2 client, as ``query`` notes them). ``first``: the
        query's record if it is at hand; a query of a key not tracked is then held here (as
        the caller would hold it), not returned to be held."""
        # dict.get on the table's OrderedDict (a dict: its lookups are dict's): compiled, a
        # C lookup, where the bound ``table.lookup`` was a Python call per key.
        st = dict.get(table.keys, key)
        if st is not None and ts - st.start <= table.window:
            table.touch(key)
            if ts > st.last:
                st.last = ts
            st.factor = factor
            return st
        if st is None and hold:
            if first is not None and rec is None:
                held = table.take_or_hold(key, first)
                if held is None:
                    return None  # not tracked, not held before: ``first`` is held now
                if held[0].__class__ is not tuple:
                    held = (held,)  # a query's first packet, held alone (``query``)
                if ts - held[0][0] > table.window:
                    # Its window ended, below any rule's evidence: nothing to judge; this
                    # query is the key's first again.
                    table.hold(key, first)
                    return None
            else:
                held = table.take(key)
            if held is not None and held[0].__class__ is not tuple:
                held = (held,)  # a query's first packet, held alone (``query``)
            if held is not None and ts - held[0][0] > table.window:
                held = None  # its window ended, below any rule's evidence: nothing to judge
            if rec is not None and (held is None or len(held) < MAX_HELD):
                table.hold(key, (rec,) if held is None else held + (rec,))
                return None
            if held is None:
                return None
            st = table.get(key, held[0][0])[0]  # not in the table: no window closed
            for p in held:
                self._replay(st, p, kind)
            if ts > st.last:
                st.last = ts
            st.factor = factor
            return st
        st, old = table.get(key, ts)
        if old is not None:
            self.judge.on_close(table.scope, key, old)
        st.factor = factor
        return st

    def _note_suspect(self, client: bytes, rd: str) -> None:
        """``client`` asked a rare type or an encoded name under ``rd``: it is now the most
        recent suspect. The queue holds every such client in turn; an entry followed by a
        later one of its client is stale (``_suspect_stale`` counts them per client), so the
        least recently used client is the first entry that is not. Amortised O(1): the queue
        is rebuilt without its stale entries once they could outnumber the live ones."""
        cs = self.client_suspect
        q = self._suspect_q
        n = len(cs)
        cs[client] = rd
        q.append(client)
        if len(cs) == n:  # a client it held: its earlier entry is stale now
            stale = self._suspect_stale
            stale[client] = stale.get(client, 0) + 1
            if len(q) - self._suspect_head > 2 * _PAIR_MEMORY + 2:
                self._suspect_q = self.suspects_lru()
                self._suspect_head = 0
                stale.clear()
        elif n >= _PAIR_MEMORY:  # a new client past the bound: the least recent leaves
            stale = self._suspect_stale
            i = self._suspect_head
            while True:
                old = q[i]
                i += 1
                if stale and old in stale:
                    k = stale[old] - 1
                    if k:
                        stale[old] = k
                    else:
                        del stale[old]
                    continue
                del cs[old]
                break
            if i >= _PAIR_MEMORY:  # drop the consumed front (amortised: once per PAIR_MEMORY)
                del q[:i]
                i = 0
            self._suspect_head = i

    def suspects_lru(self) -> list[bytes]:
        """The suspect clients, least recently used first (the queue's live entries)."""
        stale = dict(self._suspect_stale)
        out = []
        q = self._suspect_q
        for j in range(self._suspect_head, len(q)):
            c = q[j]
            k = stale.get(c, 0)
            if k:
                stale[c] = k - 1
            else:
                out.append(c)
        return out

    def _replay(self, st: win.KeyStats, p: tuple, kind: int) -> None:
        """Note a held packet ``p`` (``(ts, nf, qtype, -1, client, server)`` for a query,
        ``(ts, nf, rcode, down, client, server)`` for a response) as ``query``/``response``
        would have for a key of ``kind``."""
        nf, a, b = p[1], p[2], p[3]
        if b < 0:
            note_query(st, nf, a, p[4], p[5], kind != 2)
            if kind == 2:
                note_client_domain(st, nf)
        else:
            note_response(st, b, a)
            st.last_client = p[4]
            st.last_server = p[5]

    def _due(self, table: win.WindowTable, key, st: win.KeyStats, need: int,
             ts: float) -> None:
        """Report the key due? Not below the judge's minimum evidence, then by ``due``
        (inlined)."""
        if st.queries >= need:
            n = st.queries + st.responses
            if n <= 32 or (n <= 512 and not n & 7) or not n & 63:
                self.judge.on_due(table.scope, key, st, ts)

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

    # --- windows without traffic ------------------------------------------------------------
    def finish(self) -> None:
        """End of input: every key's last window closes."""
        j = self.judge
        for scope, table in self.tables.items():
            for key, st in list(table.keys.items()):
                j.on_close(scope, key, st)
        if self.series is not None:
            self.series.finish()

    def sweep(self, now: float, limit: int = 2_000) -> int:
        """Live capture, no packet for a while: close the windows that ended
        (start + window < now) and forget their keys, as their next packet would
        (``WindowTable.get``). Examines at most ``limit`` keys per table from the least
        recently used end, where ended windows are; returns the number of keys closed."""
        done = 0
        j = self.judge
        for scope, table in self.tables.items():
            keys, w = table.keys, table.window
            ended = []
            for n, (key, st) in enumerate(keys.items()):
                if n >= limit:
                    break
                if st.start + w < now:
                    ended.append((key, st))
            for key, st in ended:
                j.on_close(scope, key, st)
                if keys.get(key) is st:
                    del keys[key]
                done += 1
        return done

    def checkpoint(self) -> None:
        """Save the long-horizon state to ``Settings.long_state`` (if set): the daemon calls
        this every ``checkpoint_every`` seconds and at exit. A failure is logged, not
        raised: detection goes on."""
        if self.horizon is None or self.long_state is None:
            return
        try:
            hz.write(self.long_checkpoint(), self.long_state)
        except OSError as e:
            log.error("%s: cannot checkpoint the long-horizon state: %s", self.long_state,
                      e.strerror or e)

    def long_checkpoint(self) -> dict:
        """The long-horizon snapshot :meth:`checkpoint` writes (keys looked up once left
        out: they carry no long-horizon evidence)."""
        return self.horizon.to_state(min_queries=2)

    def summary(self) -> dict:
        return {
            "registered_domains": len(self.regdomains),
            "tracked_keys": {k: len(t) for k, t in self.tables.items()},
            "evicted_keys": {k: t.evicted for k, t in self.tables.items()},
            # Keys seen once, not tracked yet (admission), and those forgotten so.
            "held_keys": {k: t.holding() for k, t in self.tables.items()},
            "forgotten_keys": {k: t.forgotten for k, t in self.tables.items()},
            "long_horizon": self.horizon.summary() if self.horizon is not None else None,
        }
