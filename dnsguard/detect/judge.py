"""Judgment: when a measured key is evaluated, by what, and whether an alert is raised.

:class:`Judge` is the :class:`~dnsguard.features.measure.Observer` that measurement calls
back. It owns

- the evidence gates: the fewest queries before any rule or detector of a scope could fire
  (:meth:`Judge.evidence_need`, read on the hot path) and the evaluation schedule's
  once-per-update check;
- the rules by scope, the per-message rules with their verdict cached per name, and the
  detectors beside the rules (``detect.base.Detector``: the model);
- the allowlist, through one function (:meth:`Judge.allowed`, and its factor
  :meth:`Judge.factor`) for every query and response. A window remembers the factor of its
  last packet, and that factor is the one it is judged with, on a packet or when the window
  closes (``finish``, ``sweep``, the next window);
- the policy (``detect.policy``): one alert per key per suppression window, a global rate,
  detectors combined, the detectors that fire on a key within the settle interval merged
  into one record; the record itself is ``output.alerts.alert_record``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

from dnsguard.decode.packet import ip_text
from dnsguard.detect.base import Detector
from dnsguard.detect.policy import Policy, combine, escalates_past, severity_of
from dnsguard.detect.rules import RuleSet, name_test
from dnsguard.dns import rdatatype
from dnsguard.dns.name import to_text
from dnsguard.domain import block_zone
from dnsguard.features import window as win
from dnsguard.features.horizon import DUE_DOMAIN, DUE_PAIR
from dnsguard.features.measure import WINDOW_SCOPES, Measurements, Observer
from dnsguard.features.payload import UNCHECKED
from dnsguard.features.window import features as window_features
from dnsguard.output.alerts import EVENT_TUNNEL, alert_record, iso_time
from dnsguard.series import DESCRIPTION as SERIES_DESCRIPTION
from dnsguard.settings import Settings

_ORDINARY = rdatatype.ORDINARY
_NO_HITS = ()  # a name's cached message-rule verdict when no rule fires (shared)
# Integer name features a message rule's gate reads as C fields (_gate_value).
_GATE_FIELDS = ("max_label", "non_ldh", "sub_len", "qname_len", "label_count", "sub_labels",
                "nonprint")


def _gate(rules: list, factor: float) -> tuple | None:
    """Of each message rule, one condition that must hold for it to fire and that reads an
    integer name feature from below (``max_label >= 40``, ``non_ldh >= 8``): ``(field,
    bar, strict)``. A name that meets none of them fires no rule, decided without the
    rules' combined test (an interpreted call: most of the judge's cost for a never-seen
    name, a flood's every name). None if some rule has no such condition (no gate)."""
    out = []
    for r in rules:
        for c in r._fn(factor)[1]:  # its ``when`` conditions at this factor
            if c.feature in _GATE_FIELDS and c.op in (">=", ">"):
                out.append((_GATE_FIELDS.index(c.feature), float(c.value), c.op == ">"))
                break
        else:
            return None
    return tuple(out)


def _gate_value(nf, idx: int) -> int:
    """The name feature ``_GATE_FIELDS[idx]`` (compiled: a C field read)."""
    if idx == 0:
        return nf.max_label
    if idx == 1:
        return nf.non_ldh
    if idx == 2:
        return nf.sub_len
    if idx == 3:
        return nf.qname_len
    if idx == 4:
        return nf.label_count
    if idx == 5:
        return nf.sub_labels
    return nf.nonprint


def _gate_open(nf, gate: tuple) -> bool:
    """Whether a name meets some rule's gating condition (:func:`_gate`)."""
    for idx, bar, strict in gate:
        v = _gate_value(nf, idx)
        if v > bar or (v == bar and not strict):
            return True
    return False
_suffix_text = lru_cache(maxsize=4096)(to_text)  # a key's shared suffix changes rarely
_EXEMPT = -1.0  # Judge.factor of an exempt query: not measured


def _rounded(f: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in f.items()}


def identity(scope: str, key) -> tuple:
    """What an alert (and its suppression) is about: ``("d", domain)``, ``("c", client)`` or
    ``("f", (client, server))``. The one place a window key becomes an identity."""
    if scope == "flow":
        return ("f", key)
    if scope == "client":
        return ("c", key)
    return ("d", key if scope == "domain" else key[1])


class Judge(Observer):
    def __init__(self, settings: Settings, ruleset: RuleSet, measure: Measurements,
                 emit: Callable[[dict], None]) -> None:
        super().__init__()
        self.s = settings
        self.m = measure
        self.emit = emit
        self.policy = Policy(settings.suppress, max_keys=settings.policy_keys,
                             rate=settings.alert_rate, burst=settings.alert_burst,
                             settle=settings.settle, out=self.written)
        self.alerts = 0
        self.source = ""
        # (client, server) → (client port, server port, over TCP) of the packet being
        # processed when it is theirs, else None: the alert's flow (pipeline sets it).
        self.flow_ports: Callable[[bytes, bytes], tuple | None] | None = None
        # Detectors beside the rules (the model), called on the same feature vectors, at the
        # same moments, as the rules.
        self.extra_detectors: list[Detector] = []
        if settings.use_model:
            from dnsguard.detect.model import detector_for

            det = detector_for(settings)
            if det is not None:
                self.extra_detectors.append(det)
        # The long-horizon model (detect.longmodel), asked on due long-horizon keys beside
        # the long-horizon rules (on_long_due); None: rules only there.
        self.long_model = None
        if settings.use_model and settings.use_long_model:
            from dnsguard.detect.longmodel import detector_for as long_detector_for

            self.long_model = long_detector_for(settings)
        self.set_rules(ruleset)

    # --- rules --------------------------------------------------------------------------------
    def set_rules(self, ruleset: RuleSet) -> None:
        """Swap in new rules and allowlists (a reload keeps traffic state; the caller empties
        the name cache, which holds the old rules' message verdicts)."""
        self.ruleset = ruleset
        self.rules = {sc: ruleset.for_scope(sc) for sc in win.SCOPES}
        self.allow = ruleset.allowlist
        if hasattr(self.allow, "cache_size"):
            self.allow.cache_size = self.s.allow_cache
        self._allow_nets = ruleset.allowlist.has_networks
        self.message_rules = bool(self.rules["message"])
        # Fewest check-ins (a pair's queries: features.horizon.pair_features) before a
        # long_client_domain rule could fire: below it the pair's features (the beacon
        # score sorts its interval ring) are not computed. An allowlist factor only raises
        # the bars.
        lm = self.long_model
        self._min_checkins = min([r.min_of("checkins") for r in self.rules["long_client_domain"]]
                                 + ([lm.min_checkins] if lm is not None else []), default=0.0)
        # The same for a long_domain rule and its domain's new names: the decayed count
        # (``new_names``) never exceeds the names counted (``LongStats.new_total``). And for
        # either scope the key's ``span`` (last - first, not decayed): below the least a
        # rule asks for, the features (and a pair's beacon score) are not computed.
        # The long-horizon model's gate (detect.longmodel.judged) lowers them to its own.
        self._min_new_names = min([r.min_of("new_names") for r in self.rules["long_domain"]]
                                  + ([lm.min_new_names] if lm is not None else []),
                                  default=0.0)
        self._min_span = {sc: min([r.min_of("span") for r in self.rules[sc]]
                                  + ([lm.min_span] if lm is not None else []), default=0.0)
                          for sc in ("long_domain", "long_client_domain")}
        # The message rules as one test of a name's features per allowlist factor, and
        # each rule's own (rules.name_test: no feature dict to judge a name).
        self._msg_test: dict[float, tuple] = {}
        # The last factor's entry of _msg_test (nearly every name is judged at factor 1):
        # compiled, a C comparison of doubles, where the dict lookup boxed the factor.
        self._msg_factor = 0.0
        self._msg_last = None
        # Per scope and allowlist factor, each rule with its compiled test (_rule_hits).
        self._tests: dict[str, dict[float, list]] = {sc: {} for sc in win.SCOPES}
        self._rule_by_id = {r.id: r for r in ruleset.rules}
        # Per scope, the fewest queries a key needs before any rule could fire: keys below it
        # are not evaluated (most keys on a busy network never get there). Extra detectors
        # lower it with their own ``min_queries``.
        self._rule_min = {sc: min((r.min_queries() for r in self.rules[sc]), default=1 << 30)
                          for sc in win.SCOPES}
        self._need, self._need_for = (1, 1, 1), -1  # recomputed on the next packet

    def evidence_need(self) -> tuple:
        """Fewest queries before a domain, client/domain or client key is worth evaluating
        (recomputed when the detectors change)."""
        if self._need_for == len(self.extra_detectors):
            return self._need
        need = []
        for sc in WINDOW_SCOPES[:3]:
            need.append(max(self._min_queries(sc), 1))
        self._need = tuple(need)
        self._need_for = len(self.extra_detectors)
        return self._need

    def _min_queries(self, scope: str) -> int:
        n = self._rule_min[scope]
        for d in self.extra_detectors:
            n = min(n, d.min_queries)
        return n

    # --- the allowlist: one function for queries, responses and windows -------------------
    def allowed(self, nf, client: bytes, server: bytes):
        """The allowlist entry covering a message: by its name, else by client, else by
        resolver."""
        entry = nf.allow
        if entry is UNCHECKED:
            allow = self.allow
            entry = nf.allow = allow.for_name(nf.name, nf.regdomain) if allow.entries else None
        if entry is None and self._allow_nets:
            allow = self.allow
            entry = (allow.for_address("client", ip_text(client))
                     or allow.for_address("resolver", ip_text(server)))
        return entry

    def factor(self, nf, client: bytes, server: bytes) -> float:
        entry = self.allowed(nf, client, server)
        if entry is None:
            return 1.0
        if entry.action == "exempt":
            return _EXEMPT
        return entry.factor

    # --- measurement's callbacks --------------------------------------------------------------
    def on_query(self, ts: float, nf, qtype: int, factor: float, st: win.KeyStats,
                 client: bytes, server: bytes) -> None:
        """The per-message rules. They see only the name and its type: their verdict is
        cached with the name, so a name seen again costs a dict lookup."""
        cached = self._verdict(nf, qtype, factor)
        if cached:
            rd = nf.regdomain
            ident = ("d", rd)
            if self.policy.repeat(ident, ts, cached):
                return  # counted; the features, zone and samples only for an alert raised
            f = nf.fdict()
            f["qtype"] = qtype
            f["qtype_rare"] = 0 if qtype in _ORDINARY else 1
            hits = [(h[0], h[1], h[2], partial(h[3].reasons, f, factor)) for h in cached]
            self.raise_alert("message", ident, f, hits, ts, client, server,
                             self._base_domain(st, rd), st,
                             [nf.name] + [x for x in st.samples if x != nf.name])

    def message_hit(self, nf, qtype: int, factor: float) -> bool:
        return bool(self._verdict(nf, qtype, factor))

    def _verdict(self, nf, qtype: int, factor: float) -> tuple:
        """The message rules that fire on a query, cached with its name: a tuple of
        ``(rule id, severity, score, rule)``, empty if none does."""
        vkey: object = qtype
        if factor != 1.0:
            vkey = (qtype, factor)
        verdicts = nf.verdicts  # None until one is stored (features.payload)
        cached = verdicts.get(vkey) if verdicts is not None else None
        if cached is None:
            # A tunnel asks a new name per query, so this runs per query on a tunnel: the
            # rules test the name's features in place (rules.name_test), all at once, then
            # one by one for a name that fires. No feature dict: it is built for an alert
            # raised (~1 KB per cached name was most of the name cache).
            tests = self._msg_last
            if tests is None or factor != self._msg_factor:
                tests = self._msg_test.get(factor)
                if tests is None:
                    rules = self.rules["message"]
                    tests = self._msg_test[factor] = (
                        name_test(rules, factor), [(r, name_test([r], factor)) for r in rules],
                        _gate(rules, factor))
                self._msg_last = tests
                self._msg_factor = factor
            gate = tests[2]
            if gate is not None and not _gate_open(nf, gate):
                return _NO_HITS  # not cached: the gate costs less than the cache insert
            rare = 0 if qtype in _ORDINARY else 1
            if tests[0](nf, qtype, rare):
                cached = tuple([(r.id, r.severity, r.score, r) for r, test in tests[1]
                                if test(nf, qtype, rare)])
            else:
                cached = _NO_HITS
            if verdicts is None:
                verdicts = nf.verdicts = {}
            verdicts[vkey] = cached
        return cached

    def on_due(self, scope: str, key, st: win.KeyStats, ts: float) -> None:
        self._check(scope, key, st, ts)

    def on_close(self, scope: str, key, st: win.KeyStats) -> None:
        self._check(scope, key, st, st.last)

    def on_long_due(self, due: int, client: bytes, server: bytes, rd: str, factor: float,
                    ts: float) -> None:
        """The long-horizon rules (``long_domain``, then ``long_client_domain``) on the keys
        of a query that have new evidence. Both share the domain's identity (and its
        suppression and escalation) with the window scopes. The alert says what moved since
        when:
        ``first_seen``/``last_seen`` and ``bytes_up``/``bytes_down`` since the key was first
        seen (up: the decoded data its new names carried), totals in ``stats`` (with, for a
        domain, the clients that sent its new names)."""
        lh = self.m.horizon
        lm = self.long_model
        for bit, scope in ((DUE_DOMAIN, "long_domain"), (DUE_PAIR, "long_client_domain")):
            if not due & bit or (not self.rules[scope] and lm is None):
                continue
            if bit == DUE_DOMAIN:
                r = lh.domains[rd]
                if r.new_total < self._min_new_names or r.last - r.first < self._min_span[scope]:
                    # No rule could fire yet: no feature dict. The decay reading its
                    # features applies is applied, so the key's state is as it would be.
                    if ts - r.t_dec > 0:
                        r.decay(ts, lh.tau)
                    continue
                f = lh.domain_features(rd, ts)
            else:
                r = lh.pairs[(client, rd)]
                if r.q_total < self._min_checkins:
                    continue  # no rule could fire yet: spare the beacon score
                if r.last - r.first < self._min_span[scope]:
                    if ts - r.t_dec > 0:  # as above
                        r.decay(ts, lh.tau)
                    continue
                f = lh.pair_features((client, rd), ts)
            hits = self._rule_hits(scope, f, factor)
            if lm is not None:
                h = lm.score(scope, f, ("d", rd), client, factor)
                if h is not None:
                    hits.append(h)
            if not hits:
                continue
            # What moved since when (raise_alert reads first_seen, last_seen, bytes_up and
            # bytes_down from here when there is no window).
            f.update(lh.moved(r))
            if bit == DUE_DOMAIN and r.clients:
                # Who sent the new names (the first 16): a multi-host trickle names them all.
                f["clients"] = [ip_text(c) for c in r.clients]
            domain = rd
            if r.suffix is not None and len(r.suffix) > 1:
                text = _suffix_text(r.suffix)
                if len(text) > len(rd) and text.endswith("." + rd):
                    domain = text
            self.raise_alert(scope, ("d", rd), f, hits, ts, client, server, domain, None,
                             r.samples or ())
            return

    # --- evaluation ---------------------------------------------------------------------------
    def _check(self, scope: str, key, st: win.KeyStats, ts: float) -> None:
        n = st.queries + st.responses
        if st.evaluated_at == n:
            return
        if st.queries < self._min_queries(scope):
            return
        st.evaluated_at = n
        ident = identity(scope, key)
        # No early exit for a key in its suppression window: the rules run, and what they
        # find is suppressed (and counted) or escalates (detect/policy.py).
        if not self.rules[scope] and not self.extra_detectors:
            return
        if scope == "flow":
            domain = self.zone_of(self.m.flow_domain(key))
        elif scope == "client":
            domain = None
        else:
            domain = self._base_domain(st, ident[1])
        f = window_features(st, scope)
        self._evaluate(scope, ident, f, st.factor, ts, st.last_client, st.last_server, domain,
                       st, st.samples)

    def zone_of(self, rd: str | None) -> str | None:
        """The zone to block for a registered domain a flow's DNS handshake used (a tunnel
        in raw mode): as a domain alert names it, from the domain's window while it is
        tracked; else the registered domain."""
        if rd is None:
            return None
        st = self.m.tables["domain"].lookup(rd)
        return rd if st is None else self._base_domain(st, rd)

    def _base_domain(self, st: win.KeyStats, rd: str) -> str:
        """The zone to block (``domain.block_zone``): the deepest zone all of the key's
        names share, through hostname labels, named once enough names share it; at least
        the registered domain."""
        suf = st.suffix
        if suf and len(st.names) > 1:
            return block_zone(_suffix_text(suf), rd, len(st.names))
        return rd

    def _rule_hits(self, scope: str, f: dict, factor: float) -> list:
        """The hits of the scope's rules on ``f``; their reasons (texts) deferred to an
        alert the policy raises: most hits on a tunnel are repeats it suppresses."""
        by_factor = self._tests[scope]
        tests = by_factor.get(factor)
        if tests is None:  # the rules' compiled tests at this factor, kept (Rule.test)
            tests = by_factor[factor] = [(r, r.test(factor)) for r in self.rules[scope]]
        hits = []
        for r, test in tests:
            if test(f):
                hits.append((r.id, r.severity, r.score, partial(r.reasons, f, factor)))
        return hits

    def _evaluate(self, scope: str, ident: tuple, f: dict, factor: float, ts: float,
                  client: bytes, server: bytes, domain: str | None, st, samples) -> None:
        """Rules, then the extra detectors (windowed scopes only), then policy."""
        hits = self._rule_hits(scope, f, factor)
        dets = self.extra_detectors
        consult = True
        if dets:
            held = self.policy.held(ident, ts)
            if held is not None:
                # A key in its suppression window that no rule escalates: a detector whose
                # hit could not escalate either (it alerted on the key at its highest
                # severity) is not consulted: its hit could only be suppressed. The model
                # on a busy tunnel's keys was most of the judge's time. All or none, so an
                # alert that escalates carries every detector's hit. (Loops, not any() over
                # generators: this runs on every evaluation of a suppressed key.)
                for h in hits:
                    if escalates_past(held, h[1], h[0]):
                        break
                else:
                    consult = False
                    for d in dets:
                        if not d.detector_id or escalates_past(held, d.max_severity,
                                                               d.detector_id):
                            consult = True
                            break
        for det in dets:
            # What the detector may learn from: rule verdicts, allowlist factor, addresses.
            det.observe(scope, f, ident, factor=factor, hits=hits, ts=ts, client=client,
                        server=server, domain=domain)
            if not consult:
                continue
            h = det.score(scope, f, ident)
            if h is not None:
                hits.append(h)
        if hits:
            self.raise_alert(scope, ident, f, hits, ts, client, server, domain, st, samples,
                             annotate=consult)

    def raise_alert(self, scope: str, ident: tuple, f: dict, hits: list, ts: float,
                    client: bytes, server: bytes, domain: str | None, st, samples,
                    event_type: str = EVENT_TUNNEL, annotate: bool = False) -> None:
        """Policy: one alert per key per suppression window unless it escalates (a higher
        severity, a new detector: ``escalates`` names the earlier alert), detectors
        combined. Only an admitted alert costs more than the policy's check: the
        detectors' annotations (``annotate``: an evaluation they observed and scored),
        reasons in words, rounded stats."""
        policy = self.policy
        if not policy.admit(ident, ts, severity_of(hits), [h[0] for h in hits]):
            return
        if annotate:
            for det in self.extra_detectors:
                det.annotate(scope, f, ident, hits)
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
        description, mitre = self._describe(hits, sev)
        ports = self.flow_ports(client, server) if self.flow_ports is not None else None
        if st is not None:  # the key's window
            first, last, up, down = st.start, st.last, st.bytes_up, st.bytes_down
        else:  # what the detector measured, if it says (a long-horizon key, a series)
            first, last = f.get("first_seen"), f.get("last_seen")
            up, down = f.get("bytes_up", 0), f.get("bytes_down", 0)
        alert = alert_record(
            ts, event_type, scope, sev, score, detectors, reasons, domain, client, server,
            stats, samples, self.source, self.s.sensor, ident=ident, description=description,
            mitre=mitre, escalates=policy.escalates, first_seen=first, last_seen=last,
            bytes_up=up, bytes_down=down, ports=ports)
        policy.write(ident, ts, alert)  # held while it settles, or written now

    def written(self, alert: dict) -> None:
        """The policy's output: a record to write (``emit``)."""
        self.alerts += 1
        self.emit(alert)

    def flush_alerts(self, now: float | None = None) -> None:
        """Write the records that settled by capture time ``now`` (all: None)."""
        if self.policy.pending:
            self.policy.flush(now)

    def _describe(self, hits: list, sev: str) -> tuple[str, list[str]]:
        """The alert's description (the first detector's at the alert's severity: its
        strongest evidence) and its ATT&CK techniques (every detector's)."""
        desc = ""
        mitre: list[str] = []
        for h in hits:
            d, m = self._detector_info(h[0])
            if not desc and h[1] == sev:
                desc = d
            mitre += m
        return desc, mitre

    def _detector_info(self, det_id: str) -> tuple[str, tuple[str, ...]]:
        r = self._rule_by_id.get(det_id)
        if r is not None:
            return r.description, r.mitre
        for det in self.extra_detectors:
            if det_id == det.detector_id:
                return det.description, det.mitre
        lm = self.long_model
        if lm is not None and det_id == lm.detector_id:
            return lm.description, lm.mitre
        if det_id.startswith("series:"):
            return SERIES_DESCRIPTION, ()
        return "", ()

    def close(self) -> None:
        """Before exit: let detectors persist what they learned."""
        for det in self.extra_detectors:
            det.close()

    def summary(self) -> dict:
        return {
            "alerts": self.alerts,
            "suppressed_alerts": self.policy.suppressed,
            "escalated_alerts": self.policy.escalated,
            "merged_alerts": self.policy.merged,
            "rate_limited_alerts": self.policy.rate_limited,
        }

