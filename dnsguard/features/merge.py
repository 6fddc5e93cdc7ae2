"""Merging measurements of one key taken by several processes (workers that each saw part of
the traffic), so that one judge sees the whole window: counters add, HyperLogLog registers
take the maximum, bounded sets unite up to their bound, the window spans both.

What merges exactly: every counter (queries, responses, bytes, shares' numerators), the
distinct counts (an exact set while the union fits the cap, else registers: the maximum of two
HyperLogLog register arrays is the registers of the union, so the estimate is what one
process would have computed), the longest label, the query-type mix, the shared suffix. What
merges as a bound: ``clients`` (up to 32, as measured), ``samples`` (the first three), and
``new_data`` and ``new_label_share``'s counts (a name new on two workers counts twice: an
upper bound; the label bitmaps unite). The allowlist factor
takes the maximum (the more lenient one, so a merge never alerts where a worker would not).
Hashes are the keyed ``features.namehash`` (not Python's per-process salted ``hash``): every
worker hashes a name alike as long as all use the sensor's one ``hash_key`` (they do: it is
set before they fork, and each worker's pipeline sets the same key from the same config).

Example:
    >>> from dnsguard.features.window import KeyStats
    >>> a, b = KeyStats(10.0, 4), KeyStats(5.0, 4)
    >>> a.queries, b.queries = 3, 2
    >>> _ = merge_stats(a, b)
    >>> a.queries, a.start
    (5, 5.0)
"""

from __future__ import annotations

from dnsguard.features.sketch import _MAX_RANK, DistinctCounter
from dnsguard.features.window import MAX_SAMPLES, MAX_TRACKED_PEERS, KeyStats

P = 33 - _MAX_RANK  # the sketch's precision (its own P is a C constant when compiled)
_M = 1 << P

_ADD = ("queries", "responses", "bytes_up", "bytes_down", "sum_sub_len", "sum_entropy",
        "encoded", "non_ldh", "rare", "carrier", "txt", "nxdomain", "packets", "uuid",
        "digest", "resource", "service", "addr", "new_data", "label_names", "label_fresh")


def _registers(d: DistinctCounter) -> bytearray:
    """``d``'s HyperLogLog registers, made from its exact set if it is still exact."""
    if d._regs is not None:
        return d._regs
    regs = bytearray(_M)
    for x in d._set:
        i = x & (_M - 1)
        r = _MAX_RANK - ((x & 0xFFFFFFFF) >> P).bit_length()
        if r > regs[i]:
            regs[i] = r
    return regs


def merge_counter(into: DistinctCounter, other: DistinctCounter) -> DistinctCounter:
    """Count into ``into`` the items ``other`` counted; returns ``into``."""
    if into._set is not None and other._set is not None:
        union = into._set | other._set
        if len(union) <= into.cap:
            into._set = union
            return into
    regs = bytearray(_registers(into))
    for i, r in enumerate(_registers(other)):
        if r > regs[i]:
            regs[i] = r
    into._set, into._regs, into._est = None, regs, -1
    return into


def merge_stats(into: KeyStats, other: KeyStats) -> KeyStats:
    """Add ``other``'s window of the same key to ``into``'s; returns ``into``."""
    for f in _ADD:
        setattr(into, f, getattr(into, f) + getattr(other, f))
    merge_counter(into.names, other.names)
    for f in ("domains", "enc_domains", "unk_domains"):
        theirs = getattr(other, f)
        if theirs is not None:
            mine = getattr(into, f)
            if mine is None:
                setattr(into, f, merge_counter(DistinctCounter(theirs.cap), theirs))
            else:
                merge_counter(mine, theirs)
    if other.label_map is not None:
        if into.label_map is None:
            into.label_map = bytearray(other.label_map)
        else:
            mine = into.label_map
            for i, b in enumerate(other.label_map):
                mine[i] |= b
    into.max_label = max(into.max_label, other.max_label)
    for t, n in other.qtypes.items():
        into.qtypes[t] = into.qtypes.get(t, 0) + n
    if into.clients is not None and other.clients is not None:
        for c in other.clients:
            if len(into.clients) >= MAX_TRACKED_PEERS:
                break
            into.clients.add(c)
    for name in other.samples:
        if len(into.samples) < MAX_SAMPLES and name not in into.samples:
            into.samples.append(name)
    if other.suffix is not None:
        if into.suffix is None:
            into.suffix = other.suffix
        else:
            a, b = into.suffix, other.suffix
            i = 0
            while i < min(len(a), len(b)) and a[-1 - i] == b[-1 - i]:
                i += 1
            into.suffix = a[len(a) - i:]
    if other.last > into.last:
        into.last = other.last
        into.last_client, into.last_server = other.last_client, other.last_server
        into.last_hash = other.last_hash
    into.start = min(into.start, other.start)
    into.factor = max(into.factor, other.factor)
    into.evaluated_at = 0  # new evidence: evaluate again
    return into
