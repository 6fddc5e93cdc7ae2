"""Payload features of one query name: how much data could it carry, and does it look encoded.

The part of the name left of the registered domain (the "subdomain") is where tunnels put their
upstream data; its length, character entropy and alphabet say how much and in which encoding.
Features follow the payload-analysis literature summarised by Farnham & Atlasis, "Detecting DNS
Tunneling" (SANS, 2013), and Nadler et al., "Detection of malicious and low throughput data
exfiltration over the DNS protocol" (Computers & Security, 2019).

Example:
    >>> from dnsguard.domain import RegisteredDomains
    >>> f = NameAnalyzer(RegisteredDomains()).analyze((b"mzxw6ytboi4dsnzq", b"t1", b"ex", b"com"))
    >>> f.regdomain, f.sub_len, f.max_label, round(f.sub_entropy, 2), f.encoded
    ('ex.com', 19, 16, 3.95, False)
"""

from __future__ import annotations

import math
from collections import Counter

from dnsguard.dns.name import label_text
from dnsguard.domain import RegisteredDomains

_HEX = b"0123456789abcdefABCDEF"
_B32 = b"abcdefghijklmnopqrstuvwxyz234567ABCDEFGHIJKLMNOPQRSTUVWXYZ="
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_DIGITS = b"0123456789"
_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LDH = bytes(range(0x30, 0x3A)) + bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B)) + b"-_"
_PRINT = bytes(range(0x21, 0x7F))
_LOG2 = [0.0] + [math.log2(i) for i in range(1, 256)]

# A label this long with this much entropy is almost never a word or a host name: English
# host-name labels stay under ~3.3 bits/char; hex and base32/64 data of this length reach 3.6+.
ENCODED_MIN_LABEL = 24
ENCODED_MIN_ENTROPY = 3.6
ENCODED_MIN_ENTROPY_HEX = 3.0
_HEXLOW = b"0123456789abcdef"


def entropy(data: bytes) -> float:
    """Shannon entropy in bits per character.

    >>> entropy(b"aaaa"), entropy(b"abcd")
    (0.0, 2.0)
    """
    n = len(data)
    if n < 2:
        return 0.0
    lg = _LOG2
    s = 0.0
    for c in Counter(data).values():
        s += c * lg[c] if c < 256 else c * math.log2(c)
    return math.log2(n) - s / n


def _fit(data: bytes, alphabet: bytes) -> float:
    """Share of ``data`` in ``alphabet`` (bytes.translate deletes in C: no per-char loop)."""
    n = len(data)
    return (n - len(data.translate(None, alphabet))) / n if n else 0.0


class NameFeatures:
    """Features of one query name. Shares and fits are 0..1; lengths in octets."""

    __slots__ = ("name", "regdomain", "tld_known", "qname_len", "label_count", "max_label",
                 "sub_len", "sub_labels", "sub_entropy", "digit_share", "upper_share",
                 "b32_fit", "b64_fit", "b64url_fit", "hex_fit", "nonprint", "non_ldh",
                 "encoded", "reg_label_len", "reg_label_entropy", "reg_encoded", "lower",
                 "verdicts")
    _PRIVATE = frozenset({"lower", "verdicts"})

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__ if k not in self._PRIVATE}

    def fdict(self) -> dict[str, float]:
        """The numeric message features as a new dict (booleans as 0/1)."""
        return {k: float(v) if isinstance(v, bool) else v for k, v in self.as_dict().items()
                if isinstance(v, int | float)}


class NameAnalyzer:
    """Computes :class:`NameFeatures`, caching by name (benign names repeat; bounded cache)."""

    def __init__(self, domains: RegisteredDomains, cache_size: int = 50_000) -> None:
        self.domains = domains
        self._cache: dict[tuple[bytes, ...], NameFeatures] = {}
        self._cache_size = cache_size

    def clear(self) -> None:
        self._cache.clear()

    def analyze(self, labels: tuple[bytes, ...]) -> NameFeatures:
        f = self._cache.get(labels)
        if f is not None:
            return f
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        f = self._cache[labels] = self._compute(labels)
        return f

    def _compute(self, labels: tuple[bytes, ...]) -> NameFeatures:
        f = NameFeatures()
        lower = f.lower = tuple(x.lower() for x in labels)
        # Per (qtype, threshold factor): message-rule verdicts, cached with the name because
        # they depend on nothing else; cleared with the cache when rules change.
        f.verdicts = {}
        name = ".".join([label_text(x) for x in lower]) if lower else "."
        f.name = name
        rd = self.domains.lookup(name)
        f.regdomain = rd
        f.tld_known = bool(lower) and self.domains.is_known_tld(label_text(lower[-1]))
        nreg = rd.count(".") + 1 if rd != "." else 0
        # Labels of the registered domain may hold escaped dots; count labels, not dots.
        nreg = min(nreg, len(labels)) if nreg else 0
        sub = labels[:len(labels) - nreg] if nreg else labels
        f.label_count = len(labels)
        f.qname_len = sum(len(x) for x in labels) + max(len(labels) - 1, 0)
        f.sub_labels = len(sub)
        f.max_label = max((len(x) for x in sub), default=0)
        joined = b"".join(sub)
        n = len(joined)
        f.sub_len = n + max(len(sub) - 1, 0)
        f.sub_entropy = entropy(joined)
        if n:
            f.digit_share = (n - len(joined.translate(None, _DIGITS))) / n
            f.upper_share = (n - len(joined.translate(None, _UPPER))) / n
            f.nonprint = len(joined.translate(None, _PRINT))
            f.non_ldh = len(joined.translate(None, _LDH))
            f.hex_fit = _fit(joined, _HEX)
            f.b32_fit = _fit(joined, _B32)
            f.b64_fit = _fit(joined, _B64)
            f.b64url_fit = _fit(joined, _B64URL)
        else:
            f.digit_share = f.upper_share = 0.0
            f.nonprint = f.non_ldh = 0
            f.hex_fit = f.b32_fit = f.b64_fit = f.b64url_fit = 0.0
        longest = max(sub, key=len) if sub else b""
        f.encoded = _looks_encoded(longest, n, f.non_ldh)
        # The registered domain's own label (left of the public suffix): data goes there when a
        # tunnel has no fixed domain (Reverse_DNS_Shell, dnscat2 direct mode).
        reg_label = labels[len(labels) - nreg] if nreg and nreg <= len(labels) else b""
        f.reg_label_len = len(reg_label)
        f.reg_label_entropy = entropy(reg_label)
        # Under a TLD the PSL does not know, the "TLD" label may itself be the data (dnscat2
        # in direct mode sends dnscat.<hex>.<hex> straight to its server).
        f.reg_encoded = _looks_encoded(reg_label, len(reg_label), 0) or (
            not f.tld_known and bool(labels) and _looks_encoded(labels[-1], len(labels[-1]), 0))
        return f


def _looks_encoded(label: bytes, total: int, non_ldh: int) -> bool:
    """A label that carries data: long and high-entropy, or raw octets outside letters/digits."""
    if non_ldh >= 4:  # iodine base128/raw modes, binary payloads
        return True
    if len(label) < ENCODED_MIN_LABEL:
        return False
    # Lower-cased: resolvers that randomise case (DNS 0x20) must not make names look encoded.
    low = label.lower()
    if not low.translate(None, _HEXLOW) and not low.isalpha() and not low.isdigit():
        # Hex has 16 symbols: random hex of 24-64 chars sits at 3.4-3.9 bits/char.
        return entropy(low) >= ENCODED_MIN_ENTROPY_HEX
    return entropy(low) >= ENCODED_MIN_ENTROPY
