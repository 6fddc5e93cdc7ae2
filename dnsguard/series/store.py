"""Fixed-step time series per client and per registered domain, in bounded ring buffers.

Per packet only integer adds happen: the current step keeps, per key, a small list of
counters (queries, bytes up, bytes down, NXDOMAIN answers, a capped set of name hashes and the
query-type counts). When a packet's timestamp (capture time) falls past the current step, the
step *closes*: its counters are written into numpy ring buffers and the ``on_close`` callback
runs (the detectors, :mod:`dnsguard.series.monitor`). Nothing uses wall-clock time, so replay
works in capture time.

Bounds (nothing an attacker sends can grow memory past them):

- ``max_keys`` tracked keys per kind (client, domain) plus one ``other`` aggregate row:
  a ``(max_keys + 1) × 5 metrics × capacity`` float32 array (capacity = span / step,
  24 h of 60 s steps = 1440);
- the current step holds at most ``CUR_CAP`` keys per kind; keys past it are added straight
  to ``other``;
- distinct names per key and step are exact up to ``NAMES_CAP`` and "at least" past it;
- ranking: tracked keys carry an exponentially weighted volume (queries per step, weight
  0.2); untracked keys seen in a step are candidates with the same score, in a table capped
  at ``CAND_CAP``. At each step close, free rows go to the busiest new keys, and a candidate
  replaces the weakest tracked key when its score is 1.5 times that key's (a heavy-hitters
  scheme with hysteresis, so two keys of similar volume do not swap back and forth). A key's
  history starts when it is tracked; before that its traffic is in ``other``. A replaced
  key's history is added to ``other``'s, so ``other`` stays the sum of the untracked keys
  and shows no level shift when keys move out of tracking.

Example:
    >>> s = SeriesStore(step=60, span=600, max_keys=2)
    >>> for i in range(6):
    ...     s.observe_query(i * 60.0 + 1, b"c1", "a.com", hash(f"n{i}"), 40, 1)
    >>> s.observe_query(301.5, b"c1", "a.com", 0, 40, 28)
    >>> s.flush()   # end of input: the last step closes too
    >>> t = s.tables["client"]; t.values(t.slot_of[b"c1"], "queries", 10).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter

import numpy as np

from dnsguard.dns import rdatatype

try:
    import cython
except ImportError:  # interpreted, Cython not installed: the class decorators do nothing
    from dnsguard._compiled import NoCython as cython

METRICS = ("queries", "names", "bytes_up", "bytes_down", "nxdomain")
Q, NAMES, UP, DOWN, NX = range(5)
# Query-type buckets of the chi-square test (index in the per-key counts; the rest "other").
# "service": any type asked under a registered service label (features.payload.SERVICE_LABELS,
# RFC 8552: ``_acme-challenge.<host>`` TXT, ``<selector>._domainkey`` TXT, ``_ldap._tcp`` SRV),
# passed as the pseudo type SERVICE: a lookup of a service's record, not a carrier of data,
# so a mail server's DKIM checks or cert-manager's DNS-01 polling do not shift the mix.
SERVICE = -1
QTYPE_NAMES = (*(rdatatype.to_text(t) for t in rdatatype.MIX_SERIES), "service", "other")
_QIDX = {t: i for i, t in enumerate(rdatatype.MIX_SERIES)}
NQ = len(QTYPE_NAMES)
SERVICE_Q = NQ - 2
OTHER_Q = NQ - 1
_QIDX[SERVICE] = SERVICE_Q

NAMES_CAP = 1024  # distinct names per key and step: exact up to this, then "at least"
CUR_CAP = 4096  # keys per kind in the current step; the rest go straight to "other"
CAND_CAP = 1024  # untracked keys ranked for promotion
QTYPE_STEPS = 60  # steps of query-type history kept per key (the chi-square's reference)
DECAY = 0.8  # weight of the old score in the volume ranking
HYSTERESIS = 1.5  # a candidate must beat the weakest tracked key by this factor
SWAPS_PER_STEP = 8
# The caps as C integers where the per-packet code compares them (store.pxd; the public
# names stay Python ints for readers): a Python global compared per packet is a PyLong made
# and a rich comparison.
_NAMES_CAP = NAMES_CAP
_CUR_CAP = CUR_CAP
if NQ != 16:  # Entry.qt's length in store.pxd
    raise ImportError(f"series.store: {NQ} query-type buckets, Entry.qt holds 16")
OTHER = ("other",)  # the aggregate's key: equal to no client (bytes) or domain (str)


# Not tracked by the cyclic collector (compiled; see the .pxd for why no cycle can pass
# through one): ``@cython.no_gc`` takes effect here, with ``cclass``, not in the .pxd.
@cython.no_gc
@cython.cclass
class Entry:
    """One key's counters in the current step, each message counted with its weight
    (:meth:`SeriesStore.observe_query`: 1, or 1/factor for allowlisted ``raise`` traffic).
    With every weight 1 the counters hold the integers they always did."""

    __slots__ = ("q", "up", "down", "nx", "nw", "names", "qt")

    def __init__(self) -> None:
        self.q = self.up = self.down = self.nx = 0.0  # queries, bytes up/down, NXDOMAIN
        self.nw = 0.0  # distinct names, weighted
        self.names: set[int] = set()  # name hashes (capped at NAMES_CAP)
        # Query-type counts by bucket (index into QTYPE_NAMES). Compiled, a C array of NQ
        # doubles in the record (store.pxd), zeroed with it: a count is a C add, where a
        # dict of buckets made a float object and a dict update per query (~1k instructions
        # a query under a flood, whose keys past CUR_CAP all count into one entry).
        if not cython.compiled:
            self.qt = [0.0] * NQ

    def query(self, size: int, name_hash: int, qi: int, w: float = 1.0) -> None:
        self.q += w
        self.up += size * w
        names = self.names
        n = len(names)
        if n < _NAMES_CAP:
            names.add(name_hash)
            if len(names) != n:
                self.nw += w
        self.qt[qi] += w


def _busiest(kv: tuple) -> int:  # sort key: (key, Entry) by queries, most first
    return -kv[1].q


class SeriesTable:
    """One kind of key (``client`` or ``domain``): tracked rows plus the ``other`` row."""

    def __init__(self, kind: str, max_keys: int, capacity: int) -> None:
        self.kind = kind
        self.max_keys = max_keys
        self.capacity = capacity
        self.other = max_keys  # row of the aggregate
        self.data = np.zeros((max_keys + 1, len(METRICS), capacity), dtype=np.float32)
        self.qt = np.zeros((max_keys + 1, NQ, QTYPE_STEPS), dtype=np.float32)
        self.keys: list[object | None] = [None] * max_keys + [OTHER]
        self.slot_of: dict[object, int] = {}
        self.free = list(range(max_keys - 1, -1, -1))
        self.born = np.zeros(max_keys + 1, dtype=np.int64)  # first step of each row's history
        self.score = np.zeros(max_keys + 1, dtype=np.float64)
        self.cur: dict[object, Entry] = {}
        self.overflow = Entry()  # keys past CUR_CAP in this step
        self.cand: dict[object, float] = {}
        self.promoted = self.demoted = 0
        self.last_step = -1  # absolute index of the last closed step

    def entry(self, key) -> Entry:
        e = self.cur.get(key)
        if e is None:
            if len(self.cur) >= _CUR_CAP and key not in self.slot_of:
                return self.overflow
            e = self.cur[key] = Entry()
        return e

    # --- step close -----------------------------------------------------------------------
    def close(self, step: int) -> None:
        col = step % self.capacity
        hcol = step % QTYPE_STEPS
        data, qt = self.data, self.qt
        data[:, :, col] = 0
        qt[:, :, hcol] = 0
        if self.last_step < 0:
            self.born[self.other] = step
        other = self.other
        vol: dict[object, float] = {}
        items = list(self.cur.items())
        if self.overflow.q or self.overflow.down:
            items.append((None, self.overflow))
        # Busiest first, so free rows go to the heaviest new keys.
        items.sort(key=_busiest)
        # The untracked keys (most of them, on a busy network) are summed into "other" in
        # Python integers and written with one numpy update: per-key numpy scalar updates of
        # the same row were most of a step close. Sums of whole weights (all but allowlisted
        # ``raise`` traffic) are exact in float32 up to 2**24 per step, so the row holds the
        # same values.
        oq = on = oup = odown = onx = 0.0
        oqt = [0.0] * NQ
        untracked = False
        slots: list[int] = []  # tracked rows: written with one numpy update, below
        vals: list[tuple] = []
        qts: list[list[int]] = []
        slot_of = self.slot_of
        for key, e in items:
            slot = slot_of.get(key) if key is not None else None
            if slot is None and key is not None and self.free and e.q:
                slot = self.free.pop()
                self._assign(slot, key, step, 0.0)
            if slot is None:
                if key is not None and e.q:
                    vol[key] = e.q
                oq += e.q
                on += e.nw
                oup += e.up
                odown += e.down
                onx += e.nx
                for i in range(NQ):
                    if e.qt[i] != 0.0:  # the buckets it counted (as the dict held them)
                        oqt[i] += e.qt[i]
                untracked = True
                continue
            slots.append(slot)
            vals.append((e.q, e.nw, e.up, e.down, e.nx))  # in METRICS order
            qts.append([e.qt[i] for i in range(NQ)])
        if slots:
            # Each tracked row appears once and its column was zeroed above, so one fancy-
            # indexed update writes what per-row scalar updates wrote (float32 of each sum).
            idx = np.array(slots, dtype=np.intp)
            data[idx, :, col] += np.array(vals, dtype=np.float32)
            qt[idx, :, hcol] += np.array(qts, dtype=np.float32)
        if untracked:
            row = data[other, :, col]
            row[Q] += oq
            row[NAMES] += on
            row[UP] += oup
            row[DOWN] += odown
            row[NX] += onx
            # Sums of the per-key counts in float64, as the column sums were.
            qt[other, :, hcol] += np.array(oqt, dtype=np.float64)
        q = data[:, Q, col].astype(np.float64)
        self.score = DECAY * self.score + (1 - DECAY) * q
        self._rerank(vol, step)
        self.cur = {}
        self.overflow = Entry()
        self.last_step = step

    def clear_step(self, step: int) -> None:
        """An empty step (no packet in it): zeros, scores decay."""
        self.data[:, :, step % self.capacity] = 0
        self.qt[:, :, step % QTYPE_STEPS] = 0
        self.score *= DECAY
        self.last_step = step

    def _assign(self, slot: int, key, step: int, score: float) -> None:
        self.keys[slot] = key
        self.slot_of[key] = slot
        self.born[slot] = step
        self.score[slot] = score
        self.data[slot] = 0
        self.qt[slot] = 0
        self.promoted += 1

    def _rerank(self, vol: dict, step: int) -> None:
        cand = self.cand
        for k in list(cand):
            v = cand[k] * DECAY
            if v < 0.05:
                del cand[k]
            else:
                cand[k] = v
        for k, q in vol.items():
            cand[k] = cand.get(k, 0.0) + (1 - DECAY) * q
        if len(cand) > CAND_CAP:
            # The highest scores, ties in insertion order (a stable sort; what heapq.nlargest
            # returns, but nlargest's loop is Python code and this is one C sort).
            keep = sorted(cand.items(), key=itemgetter(1), reverse=True)[:CAND_CAP // 2]
            self.cand = cand = dict(keep)
        if not cand or self.free:
            return
        top = sorted(cand.items(), key=itemgetter(1), reverse=True)[:SWAPS_PER_STEP]
        tracked = self.score[:self.max_keys]
        for key, sc in top:
            weakest = int(np.argmin(tracked))
            if sc <= HYSTERESIS * tracked[weakest]:
                break
            old = self.keys[weakest]
            del self.slot_of[old]
            # Its history joins "other", whose traffic it becomes: no false level shift there.
            self.data[self.other] += self.data[weakest]
            self.qt[self.other] += self.qt[weakest]
            cand[old] = float(tracked[weakest])
            del cand[key]
            self._assign(weakest, key, step + 1, sc)  # history starts with the next step
            self.demoted += 1

    # --- reading ----------------------------------------------------------------------------
    def history_len(self, slot: int) -> int:
        """Closed steps of history the row has (at most the capacity)."""
        if self.last_step < 0:
            return 0
        return int(min(self.last_step - self.born[slot] + 1, self.capacity))

    def values(self, slot: int, metric: str | int, n: int) -> np.ndarray:
        """The row's last ``n`` closed steps of ``metric`` (oldest first, float64), never
        older than the row's history."""
        m = METRICS.index(metric) if isinstance(metric, str) else metric
        n = min(n, self.history_len(slot))
        if n <= 0:
            return np.zeros(0)
        idx = np.arange(self.last_step - n + 1, self.last_step + 1) % self.capacity
        return self.data[slot, m, idx].astype(np.float64)

    def qtype_counts(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Query-type counts of the last closed step, and summed over the history before it
        (at most ``QTYPE_STEPS`` - 1 steps)."""
        hcol = self.last_step % QTYPE_STEPS
        n = min(self.history_len(slot), QTYPE_STEPS) - 1
        recent = self.qt[slot, :, hcol].astype(np.float64)
        if n <= 0:
            return recent, np.zeros(NQ)
        idx = np.arange(self.last_step - n, self.last_step) % QTYPE_STEPS
        return recent, self.qt[slot][:, idx].sum(axis=1).astype(np.float64)

    def rows(self):
        """(slot, key) of every tracked row, then the ``other`` row."""
        for key, slot in self.slot_of.items():
            yield slot, key
        yield self.other, OTHER

    def __len__(self) -> int:
        return len(self.slot_of)


class SeriesStore:
    """Both kinds of series, one clock (the packets' timestamps)."""

    def __init__(self, step: float = 60.0, span: float = 86400.0, max_keys: int = 64) -> None:
        self.step = float(step)
        self.capacity = max(int(round(span / step)), 2)
        self.tables = {"client": SeriesTable("client", max_keys, self.capacity),
                       "domain": SeriesTable("domain", max_keys, self.capacity)}
        self._c = self.tables["client"]
        self._d = self.tables["domain"]
        self.cur_step: int | None = None
        self._end = float("-inf")  # the current step's end (capture time)
        self.last_ts = 0.0  # the last packet of the current step
        self._held: tuple | None = None  # a packet past the step's end, awaiting the next
        self.held = 0  # packets from ahead of the clock (stragglers) counted in the step
        # Called after each closed step that had packets: on_close(step index, last ts).
        self.on_close: Callable[[int, float], None] | None = None
        self.closed = 0

    # --- per packet: integer adds only ------------------------------------------------------
    def observe_query(self, ts: float, client: bytes, regdomain: str, name_hash: int,
                      size: int, qtype: int, w: float = 1.0) -> None:
        """Count a query of ``size`` octets with weight ``w`` in every metric: 1, or
        1/factor for allowlisted ``raise`` traffic (the rules hold it to thresholds factor
        times higher: measurement passes the factor it was given, features.measure)."""
        if ts >= self._end:
            if not self._roll(ts, (True, client, regdomain, name_hash, size, qtype, w)):
                return
        elif self._held is not None:
            self._release()
        self.last_ts = ts
        self._query(client, regdomain, name_hash, size, qtype, w)

    def observe_response(self, ts: float, client: bytes, regdomain: str, size: int,
                         rcode: int, w: float = 1.0) -> None:
        if ts >= self._end:
            if not self._roll(ts, (False, client, regdomain, size, rcode, w)):
                return
        elif self._held is not None:
            self._release()
        self.last_ts = ts
        self._response(client, regdomain, size, rcode, w)

    def _query(self, client: bytes, regdomain: str, name_hash: int, size: int,
               qtype: int, w: float = 1.0) -> None:
        qi = _QIDX.get(qtype, OTHER_Q)
        # Typed (the .pxd's ``e``): Entry.query as a C call, not a method looked up by name
        # on the result of an ``or`` (~1k instructions a query under a flood).
        e = self._c.cur.get(client)
        if e is None:
            e = self._c.entry(client)
        e.query(size, name_hash, qi, w)
        e = self._d.cur.get(regdomain)
        if e is None:
            e = self._d.entry(regdomain)
        e.query(size, name_hash, qi, w)

    def _response(self, client: bytes, regdomain: str, size: int, rcode: int,
                  w: float = 1.0) -> None:
        down = size * w
        nx = w if rcode == 3 else 0.0
        e = self._c.cur.get(client) or self._c.entry(client)
        e.down += down
        e.nx += nx
        e = self._d.cur.get(regdomain) or self._d.entry(regdomain)
        e.down += down
        e.nx += nx

    # --- time ---------------------------------------------------------------------------------
    def step_start(self, step: int) -> float:
        return step * self.step

    def _roll(self, ts: float, args: tuple) -> bool:
        """A packet at or past the current step's end. Real captures carry single packets
        with timestamps minutes or hours ahead of the stream, so the clock moves only when
        two packets in a row are past the end: the first is held, and counted in the new
        step once the next confirms it (or in the current step, the next being earlier).
        Returns whether the caller counts its packet now."""
        new = int(ts // self.step)
        if self.cur_step is None:
            self.cur_step = new
            self._end = (new + 1) * self.step
            return True
        if self._held is None:
            self._held = (new, args)
            return False
        held_step, held = self._held
        self._held = None
        self.advance_to(min(new, held_step))
        self._count(held)
        if ts >= self._end:  # further ahead still: this one waits for the next in turn
            self._held = (new, args)
            return False
        return True

    def _release(self) -> None:
        """The packet after a held one is earlier than the step's end: the held one was a
        straggler; count it in the current step."""
        _, held = self._held
        self._held = None
        self.held += 1
        self._count(held)

    def _count(self, args: tuple) -> None:
        if args[0]:
            self._query(*args[1:])
        else:
            self._response(*args[1:])

    def advance_to(self, new: int) -> None:
        """Close the current step and every empty step up to (not including) ``new``."""
        cur = self.cur_step
        if cur is None or new <= cur:
            return
        self._close(cur)
        gap = new - cur - 1
        if gap >= self.capacity:
            for t in self.tables.values():
                t.data[:] = 0
                t.qt[:] = 0
                t.score[:] = 0
                t.last_step = new - 1
        else:
            for s in range(cur + 1, new):
                for t in self.tables.values():
                    t.clear_step(s)
        self.cur_step = new
        self._end = (new + 1) * self.step

    def _close(self, step: int) -> None:
        for t in self.tables.values():
            t.close(step)
        self.closed += 1
        if self.on_close is not None:
            self.on_close(step, self.last_ts)

    def flush(self) -> None:
        """End of input: close the current (partial) step without running detectors."""
        if self.cur_step is None:
            return
        if self._held is not None:  # the last packet of the input is believed
            held_step, held = self._held
            self._held = None
            self.advance_to(held_step)
            self._count(held)
        cb, self.on_close = self.on_close, None
        try:
            self._close(self.cur_step)
        finally:
            self.on_close = cb
        self.cur_step += 1
        self._end = (self.cur_step + 1) * self.step

    def memory_bytes(self) -> int:
        return sum(t.data.nbytes + t.qt.nbytes for t in self.tables.values())
