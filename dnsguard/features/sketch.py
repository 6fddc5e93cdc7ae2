"""Distinct counting with bounded memory: exact up to a cap, HyperLogLog past it.

HyperLogLog (Flajolet et al., "HyperLogLog: the analysis of a near-optimal cardinality
estimation algorithm", AofA 2007) exactly as the maintained ``datasketch`` library computes it
(same hash bits, registers and estimate; tests/test_fastpath.py checks both against it), in a
bytearray: datasketch's per-call numpy work was a measurable share of a replay. With p=8 it
holds 256 one-byte registers (~6.5% standard error) whatever the number of names.

Example:
    >>> d = DistinctCounter(cap=4)
    >>> for i in range(3): d.add(f"n{i}")
    >>> d.add("n0"); len(d), d.exact
    (3, True)
    >>> for i in range(1000): d.add(f"x{i}")
    >>> d.exact, 750 < len(d) < 1250   # ±4 standard errors
    (False, True)
"""

from __future__ import annotations

import numpy as np

try:
    import cython
except ImportError:  # interpreted, Cython not installed: the class decorators do nothing
    from dnsguard._compiled import NoCython as cython

from dnsguard.features.namehash import hash_str


def _hash32(h: int) -> int:
    # Items arrive as the keyed 64-bit SipHash of the name (features.namehash): well mixed,
    # so its low 32 bits serve HLL without another hashing call on the hot path.
    return h & 0xFFFFFFFF


P = 8  # HyperLogLog precision: 2**P one-byte registers
_M = 1 << P
_MAX_RANK = 32 - P + 1  # datasketch's rank of a 32-bit hash whose high bits are all zero
_ALPHA = 0.7213 / (1.0 + 1.079 / _M)  # datasketch's alpha for p > 6
_INV2 = [2.0 ** -r for r in range(64)]  # 2**-register, exact in a float


def _estimate(regs: bytearray) -> float:
    """datasketch's ``HyperLogLog.count`` for these registers (its raw estimate, then its
    small- and large-range corrections), without building its numpy object per call: that
    was ~4% of a replay once keys grew past their exact cap. The sum of 2**-r is exact in
    any order (powers of two spanning under 53 bits), so it equals numpy's; the logarithms
    are numpy's, as there (libm's can differ in the last bit). tests/test_fastpath.py
    compares the two on random registers."""
    t = 0.0
    for r in regs:  # compiled: a C loop over the bytes, C doubles
        x = _INV2[r]
        t += x
    e = _ALPHA * float(_M * _M) / t
    if e <= 2.5 * _M:  # small range: linear counting on the empty registers
        zeros = regs.count(0)
        if zeros:
            return float(_M * np.log(_M / float(zeros)))
        return e
    if e <= (1 << 32) / 30.0:
        return e
    return float(-(1 << 32) * np.log(1.0 - e / (1 << 32)))


# Not tracked by the cyclic collector (compiled; see the .pxd for why no cycle can pass
# through one): ``@cython.no_gc`` takes effect here, with ``cclass``, not in the .pxd.
@cython.no_gc
@cython.cclass
class DistinctCounter:
    """Distinct items: an exact set of hashes up to ``cap``, then HyperLogLog registers.

    The registers are updated here as datasketch's ``HyperLogLog.update`` would update them
    (same index, same rank, same hash), in a bytearray: one Python call per item instead of
    datasketch's three and its numpy scalar indexing; the estimate is datasketch's.
    """

    __slots__ = ("_set", "_regs", "cap", "_est")

    def __init__(self, cap: int = 128) -> None:
        self._set: set | None = set()
        self._regs: bytearray | None = None
        self.cap = cap
        self._est = -1  # the estimate, until a register changes (-1: to compute)

    def add(self, item: str) -> None:
        """Count ``item`` (a name): :meth:`add_hash` of its keyed hash (features.namehash)."""
        self.add_hash(hash_str(item))

    def add_hash(self, hv: int) -> None:
        """Count the item whose keyed hash (``features.namehash``, never Python's salted
        ``hash()``: the count would then depend on the process) is ``hv``."""
        # Keep the 64-bit hash, not the item: a name would keep ~100 bytes alive per entry.
        s = self._set
        if s is not None:
            s.add(hv)
            if len(s) > self.cap:
                regs = self._regs = bytearray(_M)
                for x in s:
                    i = x & (_M - 1)
                    r = _MAX_RANK - ((x & 0xFFFFFFFF) >> P).bit_length()
                    if r > regs[i]:
                        regs[i] = r
                self._set = None
        else:
            # The same index and rank as above, in C integers when compiled (``&`` reads a
            # negative hash as two's complement, in C as in Python); the rank is one more
            # than the leading zeros of the 24 bits above the index.
            regs = self._regs
            i = hv & (_M - 1)
            w = (hv >> P) & ((1 << (32 - P)) - 1)  # == (hv & 0xFFFFFFFF) >> P
            r = 1
            bit = 1 << (31 - P)
            while bit and not w & bit:
                r += 1
                bit >>= 1
            if r > regs[i]:
                regs[i] = r
                self._est = -1

    def clear(self) -> None:
        """Empty, exact again (a recycled window's counter)."""
        if self._set is not None:
            self._set.clear()
        else:
            self._set = set()
        self._regs = None
        self._est = -1

    def __contains__(self, item: object) -> bool:
        """Exact membership while exact; past the cap, unknown (always False)."""
        return self._set is not None and hash_str(item) in self._set

    @property
    def exact(self) -> bool:
        return self._set is not None

    def __len__(self) -> int:
        if self._set is not None:
            return len(self._set)
        if self._est < 0:
            self._est = int(round(_estimate(self._regs)))
        return self._est
