"""The keyed 64-bit hash of query names, registered domains and labels (SipHash-1-3).

Every distinct count, HyperLogLog register and label map in ``features/`` hashes with this,
not Python's ``hash()``: that one is salted per process (PYTHONHASHSEED), so the same capture
replayed twice could give different sketch estimates, and so different alerts, and worker
processes or a restored checkpoint would only agree by the accident of sharing a seed. Here
the hash depends on the name and the key only:

* **Reproducible by default**: :data:`DEFAULT_KEY` is fixed and public (16 zero octets), so a
  replay gives the same records on every run and machine. With it, the hash of an ASCII name
  is CPython's own ``hash()`` of it under ``PYTHONHASHSEED=0`` (same algorithm and key
  layout: tests/test_namehash.py checks both against CPython), so results pinned to that
  seed before this module existed did not move.
* **Secret per sensor**: the ``hash_key`` setting (32 hex digits) replaces it; an attacker who
  knows the public default cannot then choose names that collide in a deployed sensor's
  sketches (SipHash is a keyed pseudo-random function). Every process of one sensor uses
  the same key: workers are forked after :func:`set_key` (``Pipeline`` calls it).

Why SipHash-1-3 written here rather than a dependency: it is CPython's and Rust's choice
for hash tables fed by attackers, short-input fast, and keyed with 128 bits. The PyPI
packages that offer a keyed hash either wrap SipHash-2-4 through CFFI (``csiphash``,
unmaintained since 2017, and a Python-level call per name) or are not keyed PRFs (MurmurHash3
``mmh3``, xxHash: seed-independent collisions exist for Murmur3). Compiled, this is a C
function the name analyser calls on its own buffer: no object, no call through Python.
Reference: J.-P. Aumasson and D. J. Bernstein, "SipHash: a fast short-input PRF",
INDOCRYPT 2012, https://github.com/veorq/SipHash (siphash.c, cROUNDS=1 dROUNDS=3);
CPython Python/pyhash.c (siphash13, since 3.11).

Example:
    >>> hash_bytes(b"") == hash_str("")
    True
    >>> hash_str("www.example.com") == hash_bytes(b"www.example.com")
    True
    >>> parse_key("000102030405060708090a0b0c0d0e0f") == bytes(range(16))
    True
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # interpreted, Cython not installed
    from dnsguard._compiled import NoCython as cython

DEFAULT_KEY = bytes(16)  # public and fixed: replays reproduce (see the module notes)
KEY_BYTES = 16
if not cython.compiled:  # compiled: a C constant (namehash.pxd), so each mask folds away
    _M64 = 0xFFFFFFFFFFFFFFFF
_K0 = 0
_K1 = 0
_TWO64 = 1 << 64
# The initial state's constants ("somepseudorandomlygeneratedbytes"), C words when compiled
# (a literal above C long's range would be a Python int, converted at every call).
_IV0 = 0x736F6D6570736575
_IV1 = 0x646F72616E646F6D
_IV2 = 0x6C7967656E657261
_IV3 = 0x7465646279746573


def parse_key(text: str) -> bytes:
    """The 16-octet key written as 32 hex digits; ValueError saying what is wrong."""
    t = text.strip()
    if len(t) != 2 * KEY_BYTES:
        raise ValueError(f"must be {2 * KEY_BYTES} hex digits (a {8 * KEY_BYTES}-bit key), "
                         f"not {len(t)} characters")
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise ValueError("must be hex digits only (0-9, a-f)") from None


def set_key(key: bytes) -> None:
    """Hash with ``key`` (16 octets) from now on, in this process and the workers it forks.
    Hashes kept from before (a name cache, sketches) are not comparable with later ones."""
    global _K0, _K1
    if len(key) != KEY_BYTES:
        raise ValueError(f"hash key must be {KEY_BYTES} octets, not {len(key)}")
    _K0 = int.from_bytes(key[:8], "little")
    _K1 = int.from_bytes(key[8:], "little")


def current_key() -> bytes:
    return _K0.to_bytes(8, "little") + _K1.to_bytes(8, "little")


def sip13(p: bytes, n: int) -> int:
    """SipHash-1-3 under the current key of the first ``n`` octets of ``p`` (bytes; compiled
    modules pass a C pointer), as a signed 64-bit value that is never -1 (CPython's
    convention: -1 becomes -2). Compiled, every variable is a C unsigned 64-bit integer
    (namehash.pxd): the masks are no-ops and the shifts wrap as the reference's do."""
    v0 = _IV0 ^ _K0
    v1 = _IV1 ^ _K1
    v2 = _IV2 ^ _K0
    v3 = _IV3 ^ _K1
    end = n - (n & 7)
    i = 0
    last = False
    while not last:
        m = 0
        if i < end:  # a whole 8-octet word, little-endian
            if cython.compiled:  # C: one 8-octet load (little-endian on any host: namehash.pxd)
                m = _le64(p + i)  # noqa: F821 - a C function (namehash.pxd)
            else:  # interpreted: one call, not eight big-integer operations
                m = int.from_bytes(p[i:i + 8], "little")
            i += 8
        else:  # the last word: the length's low octet on top, the remaining octets below
            if cython.compiled:
                k = n - 1
                while k >= end:
                    m = (m << 8) | p[k]
                    k -= 1
            else:
                m = int.from_bytes(p[end:n], "little")
            t = n & 0xFF
            m |= t << 56
            last = True
        v3 ^= m
        # one compression round per word (the "1" of SipHash-1-3)
        v0 = (v0 + v1) & _M64
        v1 = ((v1 << 13) | (v1 >> 51)) & _M64
        v1 ^= v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _M64
        v2 = (v2 + v3) & _M64
        v3 = ((v3 << 16) | (v3 >> 48)) & _M64
        v3 ^= v2
        v0 = (v0 + v3) & _M64
        v3 = ((v3 << 21) | (v3 >> 43)) & _M64
        v3 ^= v0
        v2 = (v2 + v1) & _M64
        v1 = ((v1 << 17) | (v1 >> 47)) & _M64
        v1 ^= v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _M64
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(3):  # three finalisation rounds (the "3")
        v0 = (v0 + v1) & _M64
        v1 = ((v1 << 13) | (v1 >> 51)) & _M64
        v1 ^= v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _M64
        v2 = (v2 + v3) & _M64
        v3 = ((v3 << 16) | (v3 >> 48)) & _M64
        v3 ^= v2
        v0 = (v0 + v3) & _M64
        v3 = ((v3 << 21) | (v3 >> 43)) & _M64
        v3 ^= v0
        v2 = (v2 + v1) & _M64
        v1 = ((v1 << 17) | (v1 >> 47)) & _M64
        v1 ^= v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _M64
    h = v0 ^ v1 ^ v2 ^ v3
    if h == _M64:
        h = _M64 - 1  # -1 as a signed value: -2, as CPython
    if cython.compiled:
        return cython.cast(cython.longlong, h)
    return h - _TWO64 if h >> 63 else h


def hash_bytes(b: bytes) -> int:
    """The keyed hash of ``b`` (a label)."""
    return sip13(b, len(b))


def hash_str(s: str) -> int:
    """The keyed hash of ``s`` (a name in presentation form) as UTF-8 octets."""
    b = s.encode("utf-8", "surrogatepass")
    return sip13(b, len(b))
