"""The data path, shared by ``replay`` and the live daemon:

    frame → decode (link/IP/UDP/TCP) → DNS message → name features → windows → rules → policy
          → alert

:meth:`Pipeline.feed` takes one captured frame; :meth:`Pipeline.finish` evaluates what is
left at the end of input. Everything the run met is counted in :attr:`Pipeline.counters`.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable

from dnsguard.decode import packet as pk
from dnsguard.decode.packet import Datagram, decode_frame, ip_text
from dnsguard.decode.tcpstream import TcpReassembler
from dnsguard.detect.policy import Policy, combine
from dnsguard.detect.rules import RuleSet
from dnsguard.dns.exception import DNSError, NotDNS
from dnsguard.dns.message import parse
from dnsguard.dns.name import to_text
from dnsguard.domain import RegisteredDomains
from dnsguard.features import window as win
from dnsguard.features.payload import NameAnalyzer
from dnsguard.features.sketch import DistinctCounter
from dnsguard.output.alerts import EVENT_TUNNEL, iso_time
from dnsguard.settings import Settings

log = logging.getLogger(__name__)

_ORDINARY = win.ORDINARY_QTYPES


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
        self.domains = RegisteredDomains()
        self.names = NameAnalyzer(self.domains)
        w, cap = settings.window, settings.exact_cap
        self.tables = {
            "domain": win.WindowTable("domain", w, settings.max_domains, cap),
            "client_domain": win.WindowTable("client_domain", w, settings.max_client_domains,
                                             cap),
            "client": win.WindowTable("client", w, settings.max_clients, cap),
            "flow": win.WindowTable("flow", w, settings.max_flows, cap),
        }
        self.tcp = TcpReassembler(settings.tcp_max_flows, settings.tcp_max_bytes)
        self.policy = Policy(settings.suppress)
        self.rules = {sc: ruleset.for_scope(sc) for sc in win.SCOPES}
        self.allow = ruleset.allowlist
        self.exempt_ports = ruleset.allowlist.ports
        # (client, server) → registered domain last queried directly between them: lets an
        # alert on a non-DNS flow name the domain its DNS handshake used (iodine raw mode).
        self.pair_domain: OrderedDict[tuple[bytes, bytes], str] = OrderedDict()
        # client → registered domain it last queried with a rare type or an encoded name: a
        # raw-mode tunnel's handshake often goes through the resolver, not the pair itself.
        self.client_suspect: OrderedDict[bytes, str] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()
        self.regdomains = DistinctCounter(cap=4096)
        self.alerts = 0
        self.source = ""
        self.first_ts: float | None = None
        self.last_ts = 0.0
        # Optional observer of every query: (ts, client, server, lower-case name); eval uses it.
        self.on_query: Callable[[float, str, str, str], None] | None = None
        # Detectors beside the rules (the model): objects with
        #   score(scope, features, key) -> (detector id, severity, score, reasons) | None
        # called on the same feature vectors, at the same moments, as the rules.
        self.extra_detectors: list = []

    # --- input ------------------------------------------------------------------------------
    def feed(self, ts: float, linktype: int, data: bytes, wirelen: int) -> str:
        """Process one frame; return its outcome."""
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
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
        skip = bool(self.exempt_ports) and (d.sport in self.exempt_ports
                                            or d.dport in self.exempt_ports)
        for raw in msgs:
            try:
                m = parse(raw, d.cut)
            except NotDNS:
                o = pk.NOT_DNS
                self._non_dns(ts, d, len(raw))
            except DNSError as e:
                o = pk.MALFORMED
                self.malformed[e.reason] += 1
                self._non_dns(ts, d, len(raw))
            else:
                if m.partial:
                    self.counters["snaplen_cut"] += 1
                if m.qr:
                    o = pk.DNS_RESPONSE
                    self.counters["responses"] += 1
                    if not skip:
                        self._response(ts, m, d.dst, d.src)
                else:
                    o = pk.DNS_QUERY
                    self.counters["queries"] += 1
                    if skip:
                        self.counters["allowlisted"] += 1
                    else:
                        self._query(ts, m, d.src, d.dst)
            if outcome is None:
                outcome = o
        self.counters[outcome] += 1
        return outcome

    # --- DNS ----------------------------------------------------------------------------------
    def _query(self, ts: float, m, client: bytes, server: bytes) -> None:
        labels = m.qlabels
        if labels is None:
            self.counters["no_question"] += 1
            return
        nf = self.names.analyze(labels)
        rd = nf.regdomain
        self.regdomains.add(rd)
        if self.on_query is not None:
            self.on_query(ts, ip_text(client), ip_text(server), nf.name)
        factor = 1.0
        entry = self.allow.for_domain(nf.name) if self.allow.entries else None
        if entry is None and self.allow._nets:
            entry = (self.allow.for_address("client", ip_text(client))
                     or self.allow.for_address("resolver", ip_text(server)))
        if entry is not None:
            if entry.action == "exempt":
                self.counters["allowlisted"] += 1
                return
            factor = entry.factor
        qtype = m.qtype
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
        t = self.tables
        st, old = t["domain"].get(rd, ts)
        if old is not None:
            self._check("domain", rd, old, factor, old.last)
        win.note_query(st, nf, qtype, client, server, labels)
        if self.rules["message"] and not self.policy.is_suppressed(("d", rd), ts):
            f = nf.fdict()
            f["qtype"] = qtype
            f["qtype_rare"] = 0 if qtype in _ORDINARY else 1
            self._evaluate("message", ("d", rd), f, factor, ts, client, server, rd, st,
                           [nf.name] + [x for x in st.samples if x != nf.name])
        if due(st.queries + st.responses):
            self._check("domain", rd, st, factor, ts)
        key = (client, rd)
        st, old = t["client_domain"].get(key, ts)
        if old is not None:
            self._check("client_domain", key, old, factor, old.last)
        win.note_query(st, nf, qtype, client, server, labels)
        if due(st.queries + st.responses):
            self._check("client_domain", key, st, factor, ts)
        st, old = t["client"].get(client, ts)
        if old is not None:
            self._check("client", client, old, 1.0, old.last)
        win.note_query(st, nf, qtype, client, server, None)
        win.note_client_domain(st, nf)
        if due(st.queries + st.responses):
            self._check("client", client, st, 1.0, ts)

    def _response(self, ts: float, m, client: bytes, server: bytes) -> None:
        labels = m.qlabels
        if labels is None:
            return
        nf = self.names.analyze(labels)
        rd = nf.regdomain
        factor = 1.0
        entry = self.allow.for_domain(nf.name) if self.allow.entries else None
        if entry is None and self.allow._nets:
            entry = (self.allow.for_address("client", ip_text(client))
                     or self.allow.for_address("resolver", ip_text(server)))
        if entry is not None:
            if entry.action == "exempt":
                return
            factor = entry.factor
        down = 0
        for _, _, ln in m.answers:
            down += ln
        rcode = m.rcode
        for scope, key, fac in (("domain", rd, factor), ("client_domain", (client, rd), factor),
                                ("client", client, 1.0)):
            st, old = self.tables[scope].get(key, ts)
            if old is not None:
                self._check(scope, key, old, fac, old.last)
            win.note_response(st, down, rcode)
            if st.queries and due(st.queries + st.responses):
                self._check(scope, key, st, fac, ts)

    def _non_dns(self, ts: float, d: Datagram, size: int) -> None:
        """Non-DNS or broken payload on a DNS port: account it to the (client, server) flow."""
        to_server = d.dport in self.ports
        client, server = (d.src, d.dst) if to_server else (d.dst, d.src)
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
        st.evaluated_at = n
        if scope == "flow":
            ident = ("f", key)
            domain = self.pair_domain.get(key) or self.client_suspect.get(key[0])
        elif scope == "client":
            ident = ("c", key)
            domain = None
        else:
            rd = key if scope == "domain" else key[1]
            ident = ("d", rd)
            domain = self._base_domain(st, rd)
        if self.policy.is_suppressed(ident, ts):
            return
        if not self.rules[scope] and not self.extra_detectors:
            return
        f = win.features(st, scope)
        self._evaluate(scope, ident, f, factor, ts, st.last_client, st.last_server, domain, st,
                       st.samples)

    def _base_domain(self, st: win.KeyStats, rd: str) -> str:
        """The deepest zone all of the key's names share (a tunnel's base domain), at least
        the registered domain."""
        suf = st.suffix
        if suf and len(st.names) > 1:
            text = to_text(suf)
            if len(text) > len(rd) and text.endswith("." + rd):
                return text
        return rd

    def _evaluate(self, scope: str, ident: tuple, f: dict, factor: float, ts: float,
                  client: bytes, server: bytes, domain: str | None, st, samples) -> None:
        hits = []
        for r in self.rules[scope]:
            reasons = r.match(f, factor)
            if reasons is not None:
                hits.append((r.id, r.severity, r.score, reasons))
        for det in self.extra_detectors:
            h = det.score(scope, f, ident)
            if h is not None:
                hits.append(h)
        if not hits:
            return
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
        alert = {
            "timestamp": iso_time(ts),
            "event_type": EVENT_TUNNEL,
            "severity": sev,
            "score": score,
            "domain": domain,
            "src_ip": ip_text(client) if client else None,
            "dest_ip": ip_text(server) if server else None,
            "scope": scope,
            "detectors": detectors,
            "reasons": reasons,
            "stats": stats,
            "samples": list(samples)[:3],
            "source": self.source,
        }
        if self.s.sensor:
            alert["sensor"] = self.s.sensor
        self.alerts += 1
        self.emit(alert)

    def reload(self, ruleset: RuleSet) -> None:
        """Swap in new rules and allowlists (SIGHUP); traffic state is kept."""
        self.ruleset = ruleset
        self.rules = {sc: ruleset.for_scope(sc) for sc in win.SCOPES}
        self.allow = ruleset.allowlist
        self.exempt_ports = ruleset.allowlist.ports

    def close(self) -> None:
        """Before exit: let detectors persist what they learned."""
        for det in self.extra_detectors:
            close = getattr(det, "close", None)
            if close is not None:
                close()

    def finish(self) -> None:
        """End of input: evaluate every key's last window once more."""
        for scope, table in self.tables.items():
            fac = 1.0
            for key, st in list(table.keys.items()):
                if scope in ("domain", "client_domain"):
                    rd = key if scope == "domain" else key[1]
                    e = self.allow.for_domain(rd) if self.allow.entries else None
                    fac = e.factor if e is not None else 1.0
                self._check(scope, key, st, fac, st.last)

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
            "tracked_keys": {k: len(t) for k, t in self.tables.items()},
            "evicted_keys": {k: t.evicted for k, t in self.tables.items()},
            "tcp": dict(self.tcp.counters),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }
