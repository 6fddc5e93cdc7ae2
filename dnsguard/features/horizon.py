"""Long-horizon state: what a registered domain, and one client's traffic to it, did over
hours, in bounded memory. The windows of :mod:`dnsguard.features.window` forget a key after
five minutes; a client exfiltrating a few kilobytes at one query a minute, or a C2 implant
checking in every minute, never puts more than a handful of names in one window. Here each key
remembers, over a time constant of hours (``tau``):

``long_domain``          a registered domain, all clients together;
``long_client_domain``   one client → one registered domain (the beacon view).

What is measured (per key, exponentially time-decayed with time constant ``tau``; totals since
``first_seen`` are kept beside them for the alert):

* **new names**: names not seen before under the domain (a resolver retry or a repeated
  lookup is not new data), leaving out identifiers a service chose (names with a registered
  underscored label such as a DKIM selector's, and one-UUID names). Exact per key up to
  ``name_cap`` distinct names; past it the set is emptied and starts again, so a name may
  count as new once more after ``name_cap`` other distinct names under the same domain (an
  over-count only for keys past the cap, never for a key below it). Hashes are the keyed
  ``features.namehash`` ones; the checkpoint does not keep the sets: after a restart they
  start empty and a name already seen counts new once more.
* **new data carried up** (``new_bytes_up``, estimated bytes): for each new name, its
  subdomain's length × its character entropy / 8 (``NameFeatures.info_bytes``, which the
  windows' ``new_data`` sums too). An encoder's output carries at most
  log2(alphabet) bits per character (hex 4, Base32 5, Base64 6) and the empirical entropy of
  a long encoded label approaches that bound, so this estimates the *decoded* bytes a name
  carries: a 52-character Base32 chunk (32.5 bytes of data) measures ≈ 30 bytes, a
  40-character hex chunk (20 bytes) ≈ 19.5. It is low for short labels (the empirical
  entropy of n characters is at most log2 n): an under-estimate, never an over-estimate of an
  encoder's payload. Words and host names weigh little: ``www`` ≈ 0.6 bytes. Chosen over raw
  octets of unseen names, which count a CDN's long, repetitive host names as data.
* **answer bytes down** (rdata octets), queries, responses, clients (exact up to 16).
* **timing** (client → domain): the last ``RING`` inter-arrival intervals and query sizes,
  for a beacon score in the spirit of RITA's (:func:`beacon_score`).

Bounded memory: at most ``max_domains`` and ``max_pairs`` keys. When a table is full, the
``REVIEW`` keys longest without review are scored (:func:`worth`: estimated new bytes, encoded
new names and check-ins, discounted by idleness), the less informative half of them leaves and
the rest go to the back of the queue (a second chance, as the CLOCK page-replacement
algorithm gives): a key that carries data outlives thousands that were looked up once, at a
cost per new key that does not grow with the table. Evictions are counted. Evicted keys start
from zero if seen again: the summary under-counts, it never inflates a key (unlike
Space-Saving, whose newcomer inherits the evicted minimum as an over-estimate, which here
would be a false alarm waiting to happen). A client → domain pair gets a record only at its
second query (the first one's time is remembered in a bounded table): most pairs are one
lookup and never need one. A registered domain likewise (the doorkeeper, ``Horizon.fresh``):
its first query is held and replayed into the record at its second, so the record is exact
and a flood of one-off domains makes no records and no evictions.

Example:
    >>> from dnsguard.domain import RegisteredDomains
    >>> from dnsguard.features.payload import NameAnalyzer
    >>> na = NameAnalyzer(RegisteredDomains())
    >>> import hashlib
    >>> h = Horizon(tau=1e9, max_domains=100, max_pairs=100)  # tau: practically no decay
    >>> for i in range(40):  # 16 bytes of data a minute, hex-encoded
    ...     label = hashlib.md5(b"%d" % i).hexdigest().encode()
    ...     nf = na.analyze((label, b"x", b"example", b"com"))
    ...     _ = h.observe_query(i * 60.0, b"\\x0a\\0\\0\\x07", nf, 16, 70, True)
    >>> f = h.domain_features("example.com")
    >>> f["new_names"], f["span"], 560 < f["new_bytes_up"] < 640   # 640 bytes moved
    (40.0, 2340.0, True)
    >>> h.pair_features((b"\\x0a\\0\\0\\x07", "example.com"))["beacon_score"]
    1.0
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
from array import array
from pathlib import Path

try:
    import cython
except ImportError:  # interpreted, Cython not installed: the class decorators do nothing
    from dnsguard._compiled import NoCython as cython

log = logging.getLogger(__name__)

# Inter-arrival intervals and sizes kept per client → domain (RITA keeps every timestamp of
# a day; 64 of each cover an hour of minute-beacons in 2 × 128 bytes).
RING = 64
MAX_CLIENTS = 16  # distinct clients (that brought new names) per domain, exact up to this
REVIEW = 1024  # keys scored per eviction round (the less informative half leaves)
DECAY_STEP = 10.0  # seconds between applications of the decay (error < 0.05% at tau = 6 h)




_NEAREST = 6755399441055744.0  # 1.5 * 2**52: y + _NEAREST - _NEAREST is y's nearest integer


def _round(x: float, n: int) -> float:
    """``round(x, n)`` (0 <= n <= 4) to the bit, without CPython's decimal conversion
    (``_Py_dg_dtoa`` and a ``printf`` per call) where the result is unambiguous. Python
    rounds the exact binary value of ``x`` to ``n`` decimals and returns the double nearest
    that decimal; ``y = x * 10**n`` is within 2**-53 (relative) of the exact product, so unless
    ``y`` is within 2**-50 (relative) of a half its nearest integer ``m`` (found by adding and
    subtracting 1.5 * 2**52, exact for |y| < 2**50; no call) is the decimal's digits, and
    ``m / 10**n`` (two exact doubles, one correctly rounded division) is the nearest double.
    Ties, huge values, NaN and infinities go to ``round``. Plain arithmetic: the same in the
    compiled module (no ``math`` call).

    >>> [_round(v, k) == round(v, k) for v, k in ((2.675, 2), (0.125, 2), (-1e-9, 4), (7.0, 1))]
    [True, True, True, True]
    """
    scale = 1.0
    for _ in range(n):
        scale *= 10.0  # exact
    y = x * scale
    if -1.0e15 < y < 1.0e15:
        m = (y + _NEAREST) - _NEAREST
        d = y - m  # exact, in [-0.5, 0.5]
        if d < 0.0:
            d = -d
        if 0.5 - d > (abs(y) + 1.0) * 8.881784197001252e-16:  # not within 2**-50 of a tie
            if m == 0.0:
                return x * 0.0  # as round: -0.0 for a small negative x
            return m / scale
    return round(x, n)


def _bowley(q1: float, q2: float, q3: float) -> float:
    """Bowley's quartile skewness, 0 where it is unreliable (RITA: Q2 = Q1 or Q2 = Q3)."""
    den = q3 - q1
    if den == 0 or q2 in (q1, q3):
        return 0.0
    return (q1 + q3 - 2 * q2) / den


def _quartiles(xs: list) -> tuple:
    """RITA's quartiles of a sorted list: the elements at round(p·(n−1))."""
    n = len(xs) - 1
    return (xs[int(0.25 * n + 0.5)], xs[int(0.5 * n + 0.5)], xs[int(0.75 * n + 0.5)])


def beacon_score(intervals: list, sizes: list, count: int, span: float) -> dict:
    """RITA's beacon score for one client → destination, adapted to DNS.

    RITA (activecm/rita-legacy, ``pkg/beacon/analyzer.go``) scores timing and data size
    separately, each the mean of three scores in 0..1, and the beacon the mean of all six:

    * timing: 1 − |Bowley skewness| of the intervals; 1 − MADM/30 s (median absolute
      deviation about the median, cut off at 30 s); the connection count score;
    * size: 1 − |Bowley skewness| of the sizes; 1 − MADM/32 bytes; 1 − mode/65,535
      ("smallness").

    As in RITA, intervals and sizes are whole seconds and bytes. One change: RITA's count
    score divides the connection count by (the data set's time span / 10 s), which for a
    DNS implant sleeping a minute between check-ins never exceeds 0.17; here the count is
    compared with the check-ins a beacon of the observed median interval would make over
    the key's span (``count · median / span``, at most 1), so a regular sleeper scores 1 and
    a burst followed by silence does not. ``timing_score`` is RITA's ``ts.score`` alone: DNS
    queries are all small and alike in size, so the size half of the score says little here
    and a rule should ask for regular timing on its own as well.

    ``interval_jitter`` is MADM / median, the dispersion without a unit. RITA's 30 s cut-off
    scores any process with a median interval of seconds as regular, even a memoryless one
    (Poisson arrivals: a mail server's DNSBL lookups per inbound message, a monitoring host's
    paced-by-load reverse lookups), whose exponential intervals have MADM / median =
    asinh(1/2) / ln 2 ≈ 0.69 at every rate (over the 64 intervals kept, 99.5% of draws
    above 0.45, none of 6000 under 0.29). A sleeping implant with jitter J (the sleep cut by
    up to J at random, as Cobalt Strike's ``jitter``) has (J/4) / (1 − J/2): 0.17 at J = 50%
    (never over 0.24 in 64 intervals), 0.33 at J = 80%; fixed-interval beacons 0.

    >>> s = beacon_score([60] * 30, [70] * 31, 31, 1800.0)
    >>> s["beacon_score"], s["interval_median"], s["interval_jitter"]
    (1.0, 60, 0.0)
    """
    out = {"beacon_score": 0.0, "timing_score": 0.0, "interval_median": 0, "interval_madm": 0,
           "interval_jitter": 1.0, "interval_skew": 0.0, "size_madm": 0, "size_skew": 0.0,
           "count_score": 0.0}
    if len(intervals) < 3 or len(sizes) < 3:
        return out
    d = sorted(intervals)
    lo, mid, hi = _quartiles(d)
    ts_skew = _bowley(lo, mid, hi)
    devs = sorted([abs(x - mid) for x in d])
    ts_madm = devs[int(0.5 * (len(devs) - 1) + 0.5)]
    s = sorted(sizes)
    slo, smid, shi = _quartiles(s)
    ds_skew = _bowley(slo, smid, shi)
    sdevs = sorted([abs(x - smid) for x in s])
    ds_madm = sdevs[int(0.5 * (len(sdevs) - 1) + 0.5)]
    # The mode of the sizes (smallest on ties, as RITA's count map walks sorted values).
    mode = prev = s[0]
    best = run = 0
    for x in s:
        run = run + 1 if run and x == prev else 1
        if run > best:
            best, mode = run, x
        prev = x
    count_score = min(1.0, count * mid / span) if span > 0 and mid > 0 else 0.0
    ts_sum = (1.0 - abs(ts_skew)) + max(0.0, 1.0 - ts_madm / 30.0) + count_score
    ds_sum = (1.0 - abs(ds_skew)) + max(0.0, 1.0 - ds_madm / 32.0) + max(0.0, 1.0 - mode
                                                                          / 65535.0)
    out.update({"beacon_score": math.ceil((ts_sum + ds_sum) / 6.0 * 1000) / 1000,
                "timing_score": math.ceil(ts_sum / 3.0 * 1000) / 1000,
                "interval_median": mid, "interval_madm": ts_madm,
                "interval_jitter": _round(ts_madm / mid, 4) if mid > 0 else 1.0,
                "interval_skew": _round(ts_skew, 4), "size_madm": ds_madm,
                "size_skew": _round(ds_skew, 4), "count_score": _round(count_score, 4)})
    return out


# Not tracked by the cyclic collector (compiled): a record holds numbers, a set of ints,
# lists of bytes and strings, a tuple of bytes, an array, never a reference back to a record,
# so it cannot be part of a cycle. With some 10^5 records alive over a day-long replay the
# collector walked them at every older-generation collection. ``no_gc`` takes effect only
# here, on the class in the .py with ``cclass``: written in the .pxd it is ignored.
@cython.no_gc
@cython.cclass
class LongStats:
    """One key's long-horizon counters. ``q``, ``new``, ``enc``, ``up``, ``down``, ``sub``,
    ``ent`` and ``carrier`` decay with the horizon's time constant; the ``*_total`` fields and
    ``first`` do not (what the alert reports as moved since ``first_seen``)."""

    __slots__ = ("first", "last", "t_dec", "q", "new", "enc", "up", "down", "sub", "ent",
                 "carrier", "q_total", "new_total", "up_total", "down_total", "h1", "names",
                 "clients", "suffix", "samples", "evaluated_new", "ivals", "pos",
                 "n_ivals")

    def __init__(self, ts: float) -> None:
        self.first = self.last = self.t_dec = ts
        self.q = self.new = self.enc = self.up = self.down = 0.0
        self.sub = self.ent = self.carrier = 0.0
        self.q_total = self.new_total = 0
        self.up_total = self.down_total = 0.0
        self.h1 = 0  # the first name's hash: most domains never need a set
        self.names: set | None = None
        self.clients: list | None = None  # distinct clients, up to MAX_CLIENTS
        self.suffix: tuple | None = None
        self.samples: list | None = None
        self.evaluated_new = -1
        # client → domain only: the last RING intervals (whole seconds) then the last RING
        # query sizes, in one 16-bit array.
        self.ivals: array | None = None
        self.pos = 0
        self.n_ivals = 0

    def restart(self, ts: float) -> None:
        """Start afresh at ``ts`` (a key idle past the horizon's ``idle``): what a new
        ``LongStats(ts)`` holds, in this record and its emptied name set and lists, not a new
        record and new containers at its next new name. An empty set or list reads as None
        does everywhere (``is_new``: the first name is new and is the set's first)."""
        self.first = self.last = self.t_dec = ts
        self.q = self.new = self.enc = self.up = self.down = 0.0
        self.sub = self.ent = self.carrier = 0.0
        self.q_total = self.new_total = 0
        self.up_total = self.down_total = 0.0
        self.h1 = 0
        if self.names is not None:
            self.names.clear()
        if self.clients is not None:
            self.clients.clear()
        if self.samples is not None:
            self.samples.clear()
        self.suffix = None
        self.evaluated_new = -1
        self.ivals = None  # as new (a checkpoint writes the whole ring)
        self.pos = 0
        self.n_ivals = 0

    def decay(self, ts: float, tau: float) -> None:
        f = math.exp((self.t_dec - ts) / tau)
        self.t_dec = ts
        self.q *= f
        self.new *= f
        self.enc *= f
        self.up *= f
        self.down *= f
        self.sub *= f
        self.ent *= f
        self.carrier *= f

    def count(self, ts: float, carrier: bool, new: bool, est: float, nf) -> None:
        """Account one query at ``ts`` in this record (a domain's or a client → domain
        pair's: the steps they share); ``new``: its name is new data, carrying ``est``
        estimated bytes (``NameFeatures.info_bytes``)."""
        if ts > self.last:
            self.last = ts
        self.q += 1.0
        self.q_total += 1
        if carrier:
            self.carrier += 1.0
        if new:
            self.new += 1.0
            self.new_total += 1
            self.up += est
            self.up_total += est
            self.sub += nf.sub_len
            self.ent += nf.sub_entropy
            if nf.encoded:
                self.enc += 1.0
            self.suffix = _common_suffix(self.suffix, nf.lowered())

    def is_new(self, h: int, cap: int) -> bool:
        """Whether the name with hash ``h`` is new under this key (see the module notes).
        ``h`` is the name's own int (``NameFeatures.name_hash``), which the set keeps: no
        new int object per name (compiled, ``hv`` is its C value)."""
        s = self.names
        if s is None:
            hv = h
            if self.q_total == 0:
                self.h1 = hv
                return True
            if hv == self.h1:
                return False
            self.names = s = {self.h1}
        if h in s:
            return False
        if len(s) >= cap:
            s.clear()
        s.add(h)
        return True


@cython.no_gc
@cython.cclass
class FirstQuery:
    """A client → domain pair's first query when its name was new data (``Horizon.once``
    holds it until the pair's second query makes a record): its time and what the name
    carried. Numbers only, so not tracked by the cyclic collector (compiled), where the
    tuple it replaces was, one per new pair (~10^5 on the bench workload)."""

    __slots__ = ("t", "est", "sub", "ent", "enc")


def worth(r: LongStats, now: float, tau: float) -> float:
    """What keeping a key is worth: estimated new bytes up, encoded new names and check-ins
    (each a possible alert's evidence), discounted by idleness."""
    return (r.up + 8.0 * r.enc + r.new + 0.25 * r.n_ivals) * math.exp((r.last - now) / tau)


def _common_suffix(suf: tuple | None, lower: tuple) -> tuple:
    """The labels ``suf`` and ``lower`` end with (``suf`` itself when ``lower`` ends with
    it: compared label by label from the end, no slice)."""
    if suf is None:
        return lower
    if suf is lower:
        return suf
    n = len(suf)
    k = len(lower)
    m = min(n, k)
    i = 0
    while i < m and suf[n - 1 - i] == lower[k - 1 - i]:
        i += 1
    return suf if i == n else suf[n - i:]


DUE_DOMAIN = 1
DUE_PAIR = 2
FORMAT = "dnsguard-horizon-1"  # the checkpoint's format


def _due(n: int) -> bool:
    """Evaluate after the n-th new name or check-in? Each of the first 64, then sparser."""
    return n <= 64 or (n <= 1024 and not n & 7) or not n & 63


class Horizon:
    """The long-horizon tables and their bounds.

    ``observe_query``/``observe_response`` per DNS message (after the allowlist's exemptions,
    as the windows see them); ``domain_features``/``pair_features`` for the judge, which
    evaluates a key when ``observe_query`` says it is due.
    """

    def __init__(self, tau: float = 6 * 3600.0, max_domains: int = 100_000,
                 max_pairs: int = 50_000, name_cap: int = 256, idle: float = 86400.0,
                 min_new: int = 8, doorkeeper: bool = True) -> None:
        self.tau = tau
        self.max_domains = max_domains
        self.max_pairs = max_pairs
        self.name_cap = name_cap
        self.idle = idle  # a key idle this long starts afresh (first_seen resets)
        self.min_new = min_new  # fewest new names (or check-ins) before a key is due
        self.domains: dict[str, LongStats] = {}
        self.pairs: dict[tuple, LongStats] = {}
        self.evicted = {"long_domain": 0, "long_client_domain": 0}
        self.restarted = 0
        # Pairs seen once: hash of (client, domain) → the query's time, or a FirstQuery
        # if its name was new data (bounded: emptied
        # when it holds max_pairs; a pair then needs two more queries to get a record).
        self.once: dict[int, object] = {}
        # Domains seen once (the doorkeeper): domain → (time, client, name features, query
        # type, answer bytes down so far) of its first query, replayed into a new record at
        # its second query (the record is then what it would have been). Most registered
        # domains are looked up once (a flood's, a crawler's); a record and its share of
        # evictions cost ~2.8k instructions, a held tuple ~0.3k. Two generations of
        # max_domains / 2 (the older dropped when the newer fills, as the name cache does):
        # a domain whose second query comes after that many other new domains starts from
        # its second query (``forgotten`` counts them). Off when one query can make a domain
        # due (min_new <= 1), or on request (``doorkeeper``: tests compare both).
        self.door = doorkeeper and min_new > 1
        self.fresh: dict = {}
        self.fresh_old: dict = {}
        self.fresh_cap = max(max_domains // 2, 1)
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self.domains) + len(self.pairs)

    # --- measurement ---------------------------------------------------------------------
    def _get(self, table: dict, key, ts: float, cap: int, scope: str) -> LongStats:
        r = table.get(key)
        if r is not None:
            if ts - r.last > self.idle:
                r.restart(ts)
                self.restarted += 1
            elif ts - r.t_dec >= DECAY_STEP:
                r.decay(ts, self.tau)
            return r
        if len(table) >= cap:
            self._evict(table, ts, scope)
        r = table[key] = LongStats(ts)
        return r

    def observe_query(self, ts: float, client: bytes, nf, qtype: int, size: int,
                      per_client: bool, key: tuple | None = None) -> int:
        """Account one query; returns DUE_DOMAIN | DUE_PAIR for the keys to evaluate now.
        ``key`` is ``(client, registered domain)`` if the caller has it (saves a tuple)."""
        rd = nf.regdomain
        carrier = qtype != 1 and qtype != 28 and qtype != 65 and qtype != 12
        r = self.domains.get(rd)
        if r is None and self.door:
            held = self.fresh.pop(rd, None)
            if held is None and self.fresh_old:
                held = self.fresh_old.pop(rd, None)
            if held is None:
                # The domain's first query: held, not recorded (the doorkeeper). Its first
                # name is new under it by definition (LongStats.is_new), and one new name
                # cannot make it due (min_new > 1).
                fresh = self.fresh
                if len(fresh) >= self.fresh_cap:
                    self.forgotten += len(self.fresh_old)
                    self.fresh_old = fresh
                    fresh = self.fresh = {}
                fresh[rd] = (ts, client, nf, qtype, 0.0)
                new = not nf.service and nf.id_shape != 1
                est = nf.info_bytes if new else 0.0
                due = 0
            else:
                r = self._admit(rd, held, ts)
        elif r is not None:
            if ts - r.last > self.idle:
                r.restart(ts)
                self.restarted += 1
            elif ts - r.t_dec >= DECAY_STEP:
                r.decay(ts, self.tau)
        else:
            r = self._get(self.domains, rd, ts, self.max_domains, "long_domain")
        if r is not None:
            new = self._domain_query(r, ts, client, nf, carrier)
            est = nf.info_bytes if new else 0.0
            due = DUE_DOMAIN if new and r.new_total >= self.min_new and _due(r.new_total) \
                else 0
        if not per_client:
            return due
        if key is None:
            key = (client, rd)
        p = self.pairs.get(key)
        if p is None:
            # Python's salted hash() is right here: a key of this process's own doorkeeper,
            # never merged, kept or compared across processes (features.namehash is for those).
            hk = hash(key)
            t1 = self.once.pop(hk, None)  # its time, or a FirstQuery if a new name
            if t1 is None:  # the pair's first query: remember its time only (and new data)
                once = self.once
                if len(once) >= self.max_pairs:
                    once.clear()
                if new:
                    fq = FirstQuery.__new__(FirstQuery)
                    fq.t = ts
                    fq.est = est
                    fq.sub = nf.sub_len
                    fq.ent = nf.sub_entropy
                    fq.enc = nf.encoded
                    once[hk] = fq
                else:
                    once[hk] = ts
                return due
            p = self._get(self.pairs, key, ts, self.max_pairs, "long_client_domain")
            if t1.__class__ is FirstQuery:
                fq = t1
                p.new = p.new_total = 1
                p.up = p.up_total = fq.est
                p.sub, p.ent = fq.sub, fq.ent
                p.enc = 1.0 if fq.enc else 0.0
                t1 = fq.t
            p.first = p.last = p.t_dec = t1
            p.q += 1.0
            p.q_total = 1
        elif ts - p.last > self.idle or ts - p.t_dec >= DECAY_STEP:
            p = self._get(self.pairs, key, ts, self.max_pairs, "long_client_domain")
        if p.q_total:
            iv = ts - p.last
            ivals = p.ivals
            if ivals is None:
                ivals = p.ivals = array("H", bytes(4 * RING))
            i = p.pos
            ring = RING  # compiled: a C integer (RING is a Python global)
            # Whole seconds (as RITA), 16 bits: an interval past 18 h reads as 18 h; time
            # going backwards (merged captures, reordered packets) reads as 0.
            ivals[i] = 0 if iv <= 0.0 else int(iv + 0.5) if iv < 65535.0 else 65535
            ivals[ring + i] = size if size < 65535 else 65535
            p.pos = (i + 1) % ring
            p.n_ivals += 1
        p.count(ts, carrier, new, est, nf)
        if p.q_total >= self.min_new and _due(p.q_total):
            due |= DUE_PAIR
        return due

    def _domain_query(self, r: LongStats, ts: float, client: bytes, nf, carrier: bool) -> bool:
        """Account one query in its domain's record ``r``; whether its name is new data."""
        # A data name: new under the domain, and not an identifier a service chose (a name
        # with a registered underscored label, e.g. a DKIM selector, or one UUID: as
        # features.payload leaves them out of ``encoded``).
        new = r.is_new(nf.name_hash, self.name_cap) and not nf.service and nf.id_shape != 1
        # est: the subdomain's length × entropy / 8 (features.payload)
        r.count(ts, carrier, new, nf.info_bytes if new else 0.0, nf)
        if new:
            cl = r.clients
            if cl is None:
                r.clients = [client]
            elif len(cl) < MAX_CLIENTS and client not in cl:
                cl.append(client)
            sm = r.samples
            if sm is None:
                sm = r.samples = []
            if len(sm) < 3:
                sm.append(nf.name)
            elif nf.encoded and len(sm[0]) < len(nf.name) // 2:
                sm[0] = nf.name
        return new

    def _admit(self, rd: str, held: tuple, ts: float) -> LongStats:
        """A held domain's second query at ``ts``: its record as if made at its first query
        (``held``), then brought to ``ts`` as ``_get`` brings a record (idle restart, decay)."""
        t1, c1, nf1, qt1, down = held
        table = self.domains
        if len(table) >= self.max_domains:
            self._evict(table, ts, "long_domain")
        r = table[rd] = LongStats(t1)
        self._domain_query(r, t1, c1, nf1, qt1 != 1 and qt1 != 28 and qt1 != 65 and qt1 != 12)
        if down:
            r.down += down
            r.down_total += down
        if ts - r.last > self.idle:
            r.restart(ts)
            self.restarted += 1
        elif ts - r.t_dec >= DECAY_STEP:
            r.decay(ts, self.tau)
        return r

    def observe_response(self, ts: float, client: bytes, rd: str, down: int,
                         per_client: bool, key: tuple | None = None) -> None:
        """Answer bytes down (only for keys a query created: a response alone makes none).
        ``key`` is ``(client, rd)`` if the caller has it."""
        r = self.domains.get(rd)
        if r is None:
            held = self.fresh.get(rd)
            if held is not None:  # a held first query's answer: added when it is recorded
                self.fresh[rd] = (held[0], held[1], held[2], held[3], held[4] + down)
            elif self.fresh_old:
                held = self.fresh_old.get(rd)
                if held is not None:
                    self.fresh_old[rd] = (held[0], held[1], held[2], held[3], held[4] + down)
            return
        r.down += down
        r.down_total += down
        if per_client:
            p = self.pairs.get((client, rd) if key is None else key)
            if p is not None:
                p.down += down
                p.down_total += down

    # --- bounds --------------------------------------------------------------------------
    def _evict(self, table: dict, now: float, scope: str) -> None:
        """One round of second-chance eviction (see the module notes): of the REVIEW keys at
        the front of the table (the longest without review), the less informative half
        leaves, the rest move to the back."""
        n = min(len(table), REVIEW)
        tau = self.tau
        batch = []
        for k in table:
            if len(batch) >= n:
                break
            batch.append((worth(table[k], now, tau), len(batch), k))
        batch.sort()
        drop = max(1, n >> 1)
        for i in range(n):
            k = batch[i][2]
            r = table.pop(k)
            if i >= drop:
                table[k] = r  # survives: to the back of the queue
        self.evicted[scope] += drop

    # --- for the judge -------------------------------------------------------------------
    def _common(self, r: LongStats, now: float) -> dict:
        if now - r.t_dec > 0:
            r.decay(now, self.tau)
        q = r.q or 1.0
        new = r.new or 1.0
        return {
            "span": r.last - r.first,
            "long_queries": _round(r.q, 2),
            "new_names": _round(r.new, 2),
            "new_name_share": _round(min(1.0, r.new / q), 4),
            "new_bytes_up": _round(r.up, 1),
            "long_bytes_down": _round(r.down, 1),
            "new_encoded_share": _round(r.enc / new, 4),
            "new_mean_sub_len": _round(r.sub / new, 2),
            "new_mean_sub_entropy": _round(r.ent / new, 4),
            "long_carrier_share": _round(min(1.0, r.carrier / q), 4),
        }

    def domain_features(self, rd: str, now: float | None = None) -> dict:
        r = self.domains[rd]
        f = self._common(r, r.last if now is None else now)
        f["long_clients"] = len(r.clients) if r.clients is not None else 0
        return f

    def pair_features(self, key: tuple, now: float | None = None) -> dict:
        p = self.pairs[key]
        f = self._common(p, p.last if now is None else now)
        n = min(p.n_ivals, RING)
        if n and p.ivals is not None:
            # The ring's entries (order does not matter to the score).
            iv = list(p.ivals[:n])
            sz = list(p.ivals[RING:RING + n])
            b = beacon_score(iv, sz, p.q_total, p.last - p.first)
        else:
            b = beacon_score([], [], p.q_total, 0.0)
        f.update(b)
        f["checkins"] = p.q_total
        return f

    def moved(self, r: LongStats) -> dict:
        """What the alert says moved, and since when (totals, not decayed)."""
        return {"first_seen": r.first, "last_seen": r.last, "span": round(r.last - r.first, 3),
                "queries": r.q_total, "new_names_total": r.new_total,
                "bytes_up": round(r.up_total), "bytes_down": round(r.down_total)}

    def summary(self) -> dict:
        return {"long_domain": len(self.domains), "long_client_domain": len(self.pairs),
                "max_domains": self.max_domains, "max_pairs": self.max_pairs,
                "evicted": dict(self.evicted), "restarted_idle": self.restarted,
                # Domains seen once, held by the doorkeeper, and those dropped so.
                "held_domains": len(self.fresh) + len(self.fresh_old),
                "forgotten_domains": self.forgotten}

    # --- checkpoint ----------------------------------------------------------------------
    def to_state(self, min_queries: int = 1) -> dict:
        """A JSON-able snapshot of the keys with at least ``min_queries`` queries (name sets
        are not kept: their hashes are per process)."""
        return {"format": FORMAT, "tau": self.tau,
                "domains": {k: record_of(r) for k, r in self.domains.items()
                            if r.q_total >= min_queries},
                "pairs": self.pair_state(min_queries),
                "evicted": dict(self.evicted), "restarted": self.restarted}

    def pair_state(self, min_queries: int = 1, since: float = -math.inf) -> list:
        """The client → domain keys of :meth:`to_state` (those queried at ``since`` or later):
        ``[client hex, domain, record]`` each (what a worker ships its supervisor, which
        checkpoints every worker's keys: dnsguard.workers)."""
        return [[c.hex(), d, record_of(r)] for (c, d), r in self.pairs.items()
                if r.q_total >= min_queries and r.last >= since]

    def restore(self, state: dict, domains: bool = True, pairs: bool = True) -> int:
        """Load :meth:`to_state`'s snapshot (leaving out its domains or its client → domain
        keys if asked); returns the keys restored. Raises ValueError (naming the problem) on
        anything else."""
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} snapshot")
        doms = ({str(k): record(v) for k, v in state.get("domains", {}).items()}
                if domains else {})
        pairs = ({(bytes.fromhex(c), str(d)): record(v) for c, d, v in state.get("pairs", [])}
                 if pairs else {})
        # Caps may have shrunk since the snapshot: keep the most informative keys.
        for table, cap, scope in ((doms, self.max_domains, "long_domain"),
                                  (pairs, self.max_pairs, "long_client_domain")):
            while len(table) > cap:
                self._evict(table, max((r.last for r in table.values()), default=0.0), scope)
        self.domains, self.pairs = doms, pairs
        for k, v in state.get("evicted", {}).items():
            if k in self.evicted:
                self.evicted[k] += int(v)
        self.restarted += int(state.get("restarted", 0))
        return len(doms) + len(pairs)

    def adopt(self, key: tuple, r: LongStats, now: float) -> None:
        """Take a client → domain key restored elsewhere (a worker, at the pair's first
        query after a restart: dnsguard.workers), within the table's cap."""
        if key in self.pairs:
            return
        self.once.pop(hash(key), None)
        if len(self.pairs) >= self.max_pairs:
            self._evict(self.pairs, now, "long_client_domain")
        self.pairs[key] = r


def record_of(r: LongStats) -> list:
    """One key's checkpoint record (:func:`record` reads it back)."""
    return [r.first, r.last, r.t_dec, r.q, r.new, r.enc, r.up, r.down, r.sub, r.ent,
            r.carrier, r.q_total, r.new_total, r.up_total, r.down_total,
            [c.hex() for c in (r.clients or ())],
            [x.hex() for x in r.suffix] if r.suffix is not None else None,
            r.samples or [],
            list(r.ivals[:RING]) if r.ivals is not None else None,
            list(r.ivals[RING:]) if r.ivals is not None else None, r.pos, r.n_ivals]


def record(v: list) -> LongStats:
    """The key a :func:`record_of` record describes; ValueError (naming the problem) on
    anything else."""
    if not isinstance(v, list) or len(v) != 22:
        raise ValueError("a key's record is not a list of 22 fields")
    r = LongStats(float(v[0]))
    (r.last, r.t_dec, r.q, r.new, r.enc, r.up, r.down, r.sub, r.ent,
     r.carrier) = (float(x) for x in v[1:11])
    r.q_total, r.new_total = int(v[11]), int(v[12])
    r.up_total, r.down_total = float(v[13]), float(v[14])
    r.clients = [bytes.fromhex(c) for c in v[15][:MAX_CLIENTS]] or None
    r.suffix = tuple(bytes.fromhex(x) for x in v[16]) if v[16] is not None else None
    r.samples = [str(s) for s in v[17][:3]]
    if v[18] is not None:
        if len(v[18]) != RING or len(v[19]) != RING:
            raise ValueError(f"interval ring is not {RING} long")
        r.ivals = array("H", (min(max(int(x), 0), 65535) for x in v[18] + v[19]))
    r.pos, r.n_ivals = int(v[20]) % RING, int(v[21])
    r.h1 = -1 if r.q_total else 0
    return r


def write(state: dict, path: str | Path) -> int:
    """Checkpoint a :meth:`Horizon.to_state` snapshot to ``path`` (gzip-compressed JSON,
    written to a temporary file, synced, then renamed: a crash leaves the previous
    checkpoint); returns its keys."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) as z:
            z.write(json.dumps(state, separators=(",", ":")).encode())
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return len(state["domains"]) + len(state["pairs"])


def load(h: Horizon, path: str | Path, domains: bool = True, pairs: bool = True,
         state: dict | None = None) -> int:
    """Restore ``h`` from a checkpoint :func:`write` wrote (or from ``state``, the file as
    read already: :func:`read`), leaving out its domains or its client → domain keys if
    asked; returns the keys restored. A missing file restores nothing (0); an unreadable or
    foreign one is logged at ERROR naming the file, and the state starts empty (-1): the
    next checkpoint replaces it."""
    path = Path(path)
    try:
        if state is None:
            with gzip.open(path, "rb") as z:
                state = json.loads(z.read())
        n = h.restore(state, domains, pairs)
        if not pairs:  # checked all the same: a bad key is a bad file
            for c, _, v in state.get("pairs", []):
                bytes.fromhex(c)
                record(v)
        return n
    except FileNotFoundError:
        return 0
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError) as e:
        log.error("%s: cannot restore the long-horizon state (%s); starting empty, the next "
                  "checkpoint replaces the file", path, e)
        return -1


def read(path: str | Path) -> dict | None:
    """The checkpoint at ``path`` as written (None if it is missing or unreadable: a
    :func:`load` of it says why)."""
    try:
        with gzip.open(path, "rb") as z:
            state = json.loads(z.read())
    except (OSError, EOFError, ValueError):
        return None
    return state if isinstance(state, dict) else None
