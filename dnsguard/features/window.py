"""Traffic features per key over tumbling time windows, with bounded state.

Keys (the ``scope`` a rule names):

``domain``         a registered domain, all clients together;
``client_domain``  one client's traffic to one registered domain;
``client``         one client across all domains: catches tunnels with no fixed domain
                   (data in the second-level label, or straight to a server's address);
``flow``           non-DNS bytes on a DNS port between one client and one server
                   (iodine's raw-UDP mode after its DNS handshake).

Each table is an LRU map capped at a configurable number of keys; evictions are counted. A
key's window starts with its first packet and closes ``window`` seconds later; the next packet
starts a new one. Distinct counts are exact up to a cap and HyperLogLog past it.

Example:
    >>> t = WindowTable("domain", window=60.0, max_keys=2)
    >>> st, closed = t.get("a.com", 0.0)
    >>> st.queries += 1; _, _ = t.get("b.com", 1.0); _, _ = t.get("c.com", 2.0)
    >>> len(t), t.evicted, "a.com" in t.keys
    (2, 1, False)
"""

from __future__ import annotations

from collections import OrderedDict

from dnsguard.dns import rdatatype
from dnsguard.features.namehash import hash_bytes
from dnsguard.features.sketch import DistinctCounter

try:
    import cython
except ImportError:  # interpreted, Cython not installed: the class decorators do nothing
    from dnsguard._compiled import NoCython as cython

# The long-horizon scopes (hours, not a window) are measured by dnsguard.features.horizon.
LONG_SCOPES = ("long_domain", "long_client_domain")
SCOPES = ("message", "domain", "client_domain", "client", "flow") + LONG_SCOPES

# Query-type classes: dnsguard.dns.rdatatype (their one home).
MIX_TYPES = rdatatype.buckets(rdatatype.MIX_ALERT)  # the qtype mix of ``stats``; rest "other"
ORDINARY_QTYPES = rdatatype.ORDINARY
CARRIER_QTYPES = rdatatype.CARRIER


# Not tracked by the cyclic collector (compiled; see the .pxd for why no cycle can pass
# through one): ``@cython.no_gc`` takes effect here, with ``cclass``, not in the .pxd.
@cython.no_gc
@cython.cclass
class KeyStats:
    """Counters for one key in its current window. All scopes share the class; each uses the
    fields that make sense for it."""

    __slots__ = ("start", "last", "queries", "responses", "names", "bytes_up", "bytes_down",
                 "sum_sub_len", "sum_entropy", "max_label", "encoded", "non_ldh", "rare",
                 "carrier", "txt", "nxdomain", "qtypes", "clients", "servers", "domains",
                 "enc_domains", "unk_domains", "samples", "suffix", "last_client",
                 "last_server", "packets", "evaluated_at", "uuid", "digest", "resource", "service",
                 "addr", "new_data", "last_hash", "factor", "label_map", "label_names",
                 "label_fresh")

    def __init__(self, ts: float, exact_cap: int, multi_client: bool = True) -> None:
        self.names = DistinctCounter(exact_cap)
        self.qtypes: dict[str, int] = {}
        # Only a domain has several clients; a client's and a client/domain pair's own key
        # is their one client (``clients`` = 1 once they have a query): no set per key.
        self.clients: set[bytes] | None = set() if multi_client else None
        self.servers = None  # not tracked: no feature reads it (the last server is kept)
        self.samples: list[str] = []
        self.reuse(ts)

    def reuse(self, ts: float) -> None:
        """Start a window at ``ts`` with empty counters, keeping the containers (``__init__``
        makes them; WindowTable recycles an evicted key's stats for its next new key)."""
        self.start = self.last = ts
        self.queries = self.responses = self.bytes_up = self.bytes_down = 0
        self.sum_sub_len = self.encoded = self.non_ldh = self.rare = self.carrier = 0
        self.txt = self.nxdomain = self.packets = self.max_label = self.evaluated_at = 0
        self.uuid = self.digest = self.resource = self.service = self.addr = 0
        self.sum_entropy = self.new_data = 0.0
        self.last_hash = 0
        # Labels the window's names held (domain keys only, made on the first new name):
        # see note_query.
        self.label_map = None
        self.label_names = self.label_fresh = 0
        # The allowlist factor of the window's last packet (set by features.measure): the
        # window is judged with it, on a packet or when it closes.
        self.factor = 1.0
        self.names.clear()
        self.qtypes.clear()
        if self.clients is not None:
            self.clients.clear()
        # Per-client views of the domains (note_client_domain), made on first use.
        self.domains: DistinctCounter | None = None
        self.enc_domains: DistinctCounter | None = None
        self.unk_domains: DistinctCounter | None = None
        self.samples.clear()
        self.suffix: tuple[bytes, ...] | None = None
        self.last_client = self.last_server = b""


class WindowTable:
    """One scope's keys → :class:`KeyStats`, LRU-bounded, tumbling windows.

    Admission (``features.measure`` uses it when no rule or detector of the scope can fire on
    one query): a key not in the table is not given stats on its first packet; its packets
    are held (:meth:`hold`, a few tuples) until its second query, which replays them into new
    stats (:meth:`take`) — the same window as if it had been tracked from the start. Under a
    random-name flood almost every key is seen once: it then costs a dict entry, not stats
    reset, counted and evicted. Held keys live in two generations of ``hold_cap`` each (the
    older one is dropped when the newer fills, like the name cache): a key whose second query
    comes after 1-2 × ``hold_cap`` other new keys starts from that query (``forgotten``
    counts dropped keys).

    >>> t = WindowTable("domain", window=60.0, max_keys=2)
    >>> t.hold("a.com", (0.0,)); t.take("a.com"), t.take("a.com"), len(t)
    ((0.0,), None, 0)
    """

    def __init__(self, scope: str, window: float, max_keys: int, exact_cap: int = 128) -> None:
        self.scope = scope
        self.window = window
        self.max_keys = max_keys
        self.exact_cap = exact_cap
        self.keys: OrderedDict[object, KeyStats] = OrderedDict()
        # Bound once: the hot path's lookups then skip a method lookup and a bound-method
        # object per packet (``keys`` is never replaced).
        self.lookup = self.keys.get
        self.touch = self.keys.move_to_end
        self._multi_client = scope not in ("client", "client_domain")
        self.evicted = 0
        self.held: dict = {}  # key → its packets so far (admission), young generation
        self.held_old: dict = {}
        self.hold_cap = max_keys if max_keys > 0 else 65_536
        self.forgotten = 0  # held keys dropped with their generation

    def __len__(self) -> int:
        return len(self.keys)

    def hold(self, key: object, packets: tuple) -> None:
        """Remember a key's packets (not yet tracked) until :meth:`take`."""
        h = self.held
        if len(h) >= self.hold_cap:
            self.forgotten += len(self.held_old)
            self.held_old = h
            h = self.held = {}
        h[key] = packets

    def take(self, key: object) -> tuple | None:
        """The packets held for ``key`` (forgetting them), or None."""
        p = self.held.pop(key, None)
        if p is None and self.held_old:
            p = self.held_old.pop(key, None)
        return p

    def take_or_hold(self, key: object, packets: tuple) -> tuple | None:
        """:meth:`take`, and if nothing was held for ``key``, :meth:`hold` ``packets`` for
        it: the same tables as the two calls, with one hash and probe fewer for a key seen
        the first time (the young generation's ``setdefault`` is its lookup and its
        insert). The generation turning over keeps the two calls."""
        h = self.held
        if len(h) >= self.hold_cap:
            p = self.take(key)
            if p is None:
                self.hold(key, packets)
            return p
        p = h.setdefault(key, packets)
        if p is not packets:  # held in the young generation: taken
            del h[key]
            return p
        if self.held_old:
            p = self.held_old.pop(key, None)
            if p is not None:  # held in the old generation: taken, and not held anew
                del h[key]
                return p
        return None

    def holding(self) -> int:
        return len(self.held) + len(self.held_old)

    def get(self, key: object, ts: float) -> tuple[KeyStats, KeyStats | None]:
        """The key's stats for the window holding ``ts``, and the stats of the window that
        just closed (for a last evaluation) if ``ts`` began a new one."""
        keys = self.keys
        old = keys.get(key)
        if old is not None:
            if ts - old.start <= self.window:
                keys.move_to_end(key)
                if ts > old.last:
                    old.last = ts
                return old, None
            del keys[key]
        if self.max_keys > 0 and len(keys) >= self.max_keys:
            # Full: the least recently used key leaves (as it would after the insert) and its
            # stats, referenced from nowhere else, are reset for the new key: a new key on a
            # busy sensor then allocates nothing (new keys and evictions were ~8% of a replay).
            st = keys.popitem(last=False)[1]
            self.evicted += 1
            st.reuse(ts)
            keys[key] = st
            return st, old
        st = keys[key] = KeyStats(ts, self.exact_cap, self._multi_client)
        if len(keys) > self.max_keys:
            keys.popitem(last=False)
            self.evicted += 1
        return st, old


# Bounded per-key sets: counts of clients/servers beyond these are "at least".
MAX_TRACKED_PEERS = 32
MAX_SAMPLES = 3
# The labels a domain's names held in the window, as a bitmap indexed by the label's hash:
# a label is "fresh" when its bit was clear. A bitmap has no false "fresh" (a label seen
# before is always recognised: a reused vocabulary never reads as new data) and a fixed size
# (512 octets per domain key); a channel's labels read as seen by collision only as the map
# fills (under 10% of them by its 400th label; the rules decide long before).
LABEL_MAP_BITS = 4096


def _qtype_info(qtype: int) -> tuple[int, int, int, str]:
    """(rare, carrier, txt, mix bucket) of a query type, as note_query counts them."""
    return (0 if qtype in ORDINARY_QTYPES else 1, 1 if qtype in CARRIER_QTYPES else 0,
            1 if qtype == rdatatype.TXT else 0, MIX_TYPES.get(qtype, "other"))


# qtype → _qtype_info(qtype), filled on first use (at most 65,536 entries). A plain dict:
# a dict subclass's [] goes through a Python-level slot.
_QINFO: dict[int, tuple[int, int, int, str]] = {}


def note_query(st: KeyStats, nf, qtype: int, client: bytes, server: bytes,
               track_suffix: bool = True) -> None:
    """Account one query with name features ``nf`` (a :class:`NameFeatures`) in ``st``;
    ``track_suffix`` keeps the deepest zone all the key's names share."""
    st.queries += 1
    name = nf.name
    names = st.names
    s = names._set
    h = nf.name_hash
    if s is not None and len(s) < names.cap:
        n0 = len(s)
        s.add(h)  # == names.add(name): the keyed hash is cached with the name
        new = len(s) != n0  # a name new in this window: what it holds is new data
    else:
        names.add_hash(h)
        # Past the exact cap membership is unknown: a name counts as new unless it repeats
        # the key's previous one (keys this busy are CDN pools or channels: mostly new).
        new = h != st.last_hash
    st.last_hash = h
    if new:
        st.new_data += nf.info_bytes
        nsub = nf.sub_labels
        if nsub and st.clients is not None:  # a domain key (the one multi-client scope)
            # Does the new name bring a label no earlier name of the window held? A channel's
            # names each carry fresh data; search-list expansions (<svc>.<ns>.svc.cluster.local
            # and <host>.<search suffix>) and service discovery recombine a few labels.
            lm = st.label_map
            if lm is None:
                lm = st.label_map = bytearray(LABEL_MAP_BITS >> 3)
            lower = nf.lowered()
            fresh = 0
            for i in range(nsub):
                b = hash_bytes(lower[i]) & (LABEL_MAP_BITS - 1)  # keyed: features.namehash
                bit = 1 << (b & 7)
                if not lm[b >> 3] & bit:
                    lm[b >> 3] |= bit
                    fresh = 1
            st.label_names += 1
            st.label_fresh += fresh
    shape = nf.id_shape
    if shape:
        if shape == 1:
            st.uuid += 1
        elif shape == 2:
            st.digest += 1
        else:
            st.resource += 1
    if nf.service:
        st.service += 1
    if nf.addr:
        st.addr += 1
    sub_len = nf.sub_len
    st.bytes_up += sub_len
    st.sum_sub_len += sub_len
    st.sum_entropy += nf.sub_entropy
    if nf.max_label > st.max_label:
        st.max_label = nf.max_label
    if nf.encoded:
        st.encoded += 1
    if nf.non_ldh:
        st.non_ldh += 1
    info = _QINFO.get(qtype)
    if info is None:
        info = _QINFO[qtype] = _qtype_info(qtype)
    rare, carrier, txt, t = info
    if rare:
        st.rare += 1
    if carrier:
        st.carrier += 1
        st.txt += txt
    qt = st.qtypes
    qt[t] = qt.get(t, 0) + 1
    clients = st.clients
    if clients is not None and len(clients) < MAX_TRACKED_PEERS:
        clients.add(client)
    st.last_client = client
    st.last_server = server
    samples = st.samples
    if len(samples) < MAX_SAMPLES:
        if name not in samples:
            samples.append(name)
    elif nf.encoded and name not in samples:
        # Prefer names that show the encoding to the analyst.
        for i, x in enumerate(samples):
            if len(x) < len(name) // 2:
                samples[i] = name
                break
    if track_suffix:
        lower = nf.lowered()
        suf = st.suffix
        if suf is None:
            st.suffix = lower
        elif suf is not lower and lower[len(lower) - len(suf):] != suf:
            i = 0
            m = min(len(suf), len(lower))
            while i < m and suf[-1 - i] == lower[-1 - i]:
                i += 1
            if i < len(suf):
                st.suffix = suf[len(suf) - i:]


def note_client_domain(st: KeyStats, nf) -> None:
    """Per-client view of the registered domain a query went to."""
    if st.domains is None:
        cap = st.names.cap
        st.domains, st.enc_domains, st.unk_domains = (DistinctCounter(cap), DistinctCounter(cap),
                                                     DistinctCounter(cap))
    rh = nf.reg_hash  # the keyed hash of nf.regdomain
    st.domains.add_hash(rh)
    if nf.reg_encoded:
        st.enc_domains.add_hash(rh)
    if not nf.tld_known:
        st.unk_domains.add_hash(rh)


def note_response(st: KeyStats, answer_bytes: int, rcode: int) -> None:
    st.responses += 1
    st.bytes_down += answer_bytes
    if rcode == 3:
        st.nxdomain += 1


def features(st: KeyStats, scope: str) -> dict[str, float]:
    """The feature vector rules and models read, for a key of ``scope``. Compiled, ``st``'s
    fields are C reads; the keys are set one by one, in the order the alert's ``stats`` shows
    them (no temporary dict for an update)."""
    q = st.queries or 0
    dur = st.last - st.start
    resp = st.responses
    f: dict[str, float] = {
        "queries": q,
        "responses": resp,
        "duration": dur,
        "rate": q / max(dur, 1.0),
        "bytes_up": st.bytes_up,
        "bytes_down": st.bytes_down,
        "nxdomain_share": st.nxdomain / resp if resp else 0.0,
    }
    if scope == "flow":
        f["packets"] = st.packets
        return f
    qd = q or 1
    distinct = len(st.names)
    f["distinct_names"] = distinct
    f["distinct_ratio"] = distinct / qd
    f["clients"] = len(st.clients) if st.clients is not None else (1 if st.queries else 0)
    f["mean_sub_len"] = st.sum_sub_len / qd
    f["mean_sub_entropy"] = st.sum_entropy / qd
    f["max_label"] = st.max_label
    f["encoded_share"] = st.encoded / qd
    f["encoded_queries"] = st.encoded
    f["non_ldh_share"] = st.non_ldh / qd
    f["rare_qtype_share"] = st.rare / qd
    f["carrier_share"] = st.carrier / qd
    f["txt_share"] = st.txt / qd
    f["down_per_response"] = st.bytes_down / resp if resp else 0.0
    f["new_data"] = st.new_data
    f["new_data_rate"] = st.new_data / max(dur, 1.0)
    f["uuid_share"] = st.uuid / qd
    f["digest_share"] = st.digest / qd
    f["ident_share"] = (st.uuid + st.digest + st.resource) / qd
    f["service_share"] = st.service / qd
    f["addr_share"] = st.addr / qd
    if scope == "domain":
        ln = st.label_names
        f["new_label_share"] = st.label_fresh / ln if ln else 0.0
    if scope == "client":
        nd = len(st.domains) if st.domains is not None else 0
        ne = len(st.enc_domains) if st.enc_domains is not None else 0
        nu = len(st.unk_domains) if st.unk_domains is not None else 0
        f["distinct_domains"] = nd
        f["encoded_domains"] = ne
        f["encoded_domain_share"] = ne / nd if nd else 0.0
        f["unknown_tld_domains"] = nu
        f["unknown_tld_share"] = nu / nd if nd else 0.0
    return f


def qtype_mix(st: KeyStats) -> dict[str, int]:
    return dict(sorted(st.qtypes.items(), key=lambda kv: -kv[1]))


def rdtype_name(t: int) -> str:
    return rdatatype.to_text(t)
