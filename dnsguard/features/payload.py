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
import re
from collections import _count_elements  # C helper behind Counter.update

from dnsguard.dns.name import label_text, read_name
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

# Underscored node names (RFC 8552; IANA "Underscored and Globally Scoped DNS Node Names",
# https://www.iana.org/assignments/dns-parameters/dns-parameters.xhtml#underscored-globally-scoped-dns-node-names,
# plus the SRV service labels Active Directory registers, Microsoft "How DNS support for Active
# Directory works", https://learn.microsoft.com/previous-versions/windows/it-pro/windows-server-2003/cc759550(v=ws.10)).
# A name holding one is a service lookup (DKIM ``<selector>._domainkey.<domain>``, RFC 6376
# 3.6.2.1; AD ``_ldap._tcp.<GUID>.domains._msdcs.<forest>``; SRV ``_svc._proto.<name>``, RFC
# 2782); its other labels are identifiers the service chose (SES DKIM selectors are random
# 32-character tokens), not data a client is sending. Besides the registered names, a short
# lower-case attribute label (``_netblocks2``, Google's SPF include chain) counts; a long or
# mixed-case one (a Base64url label may start with "_" by chance) does not.
SERVICE_LABELS = frozenset(x.encode() for x in (
    "_tcp", "_udp", "_sctp", "_dccp", "_tls", "_quic", "_domainkey", "_dmarc", "_report",
    "_bimi", "_adsp", "_vouch", "_spf", "_mta-sts", "_smtp", "_acme-challenge",
    "_dnsauth", "_msdcs", "_sites", "_ldap", "_kerberos", "_kerberos-master", "_kpasswd",
    "_gc", "_grpclb", "_grpc_config", "_http", "_https", "_sip", "_sips", "_xmpp-client",
    "_xmpp-server", "_caldav", "_caldavs", "_carddav", "_carddavs", "_imap", "_imaps",
    "_submission", "_submissions", "_pop3", "_pop3s", "_autodiscover", "_openpgpkey",
    "_smimecert", "_ta", "_dns", "_dns-sd", "_services", "_ocsp", "_mtasts", "_25",
    "_443", "_853", "_validation-contactemail", "_validation-contactphone"))
# A UUID/GUID label (RFC 9562 section 4: 8-4-4-4-12 hex digits): telemetry request ids, AD
# domain GUIDs. One per name is an identifier (16 octets), not a stream of data.
_ATTR_LEAF = re.compile(rb"_[a-z][a-z0-9-]{0,15}\Z")
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# Hex digests of the common hash lengths (MD5, SHA-1, SHA-224, SHA-256, SHA-384, SHA-512):
# Google's ad frames (<32 hex>.safeframe.googlesyndication.com, one per ad:
# https://support.google.com/admanager/answer/6023110), Microsoft's footprintdns probes,
# file-reputation lookups; and hex ids after a short word, as DHCP-registered host names carry
# them (``android-<16 hex>`` Android ID, ``sep<12 hex>`` a MAC address).
_DIGEST_LENGTHS = frozenset({32, 40, 56, 64, 96, 128})
_HEX_ID = re.compile(rb"[a-z]{2,12}[-_]?[0-9a-f]{12}(?:[0-9a-f]{4})?\Z")
# An IPv4 address written into a host name, four decimal octets joined by one of "-", ".",
# "_" (ISP and cloud host names: ``24-48-150-22.res.isp.net``, ``ec2-54-1-2-3``,
# ``cpe-…``, ``pool-…``, reversed or not; RFC 1912 section 2.1 asks for such PTR/A pairs).
# Words joined by hyphens, each of letters only and at most 12 long: Kubernetes service names
# from Helm charts (``kube-prometheus-stack-prometheus``, ``ingress-nginx-controller-admission``:
# 32-34 characters at 3.6+ bits/char, over the encoded bar). Encoders do not write this: Base32
# has no '-', hex carries digits, and of random 30-character Base64url labels, lower-cased, 1 in
# 10,000 matches (measured). A channel of hyphenated dictionary words is not "encoded" then;
# unique-subdomain-volume's new_label_share and the model's new_data still see its volume.
_WORD_COMPOUND = re.compile(rb"[a-z]{1,12}(?:-[a-z]{1,12})+\Z")
# Fields joined by hyphens, none longer than an AWS resource id's 17 hex digits: generated
# identifiers (``vpce-<17 hex>-<8 chars>.<svc>.<region>.vpce.amazonaws.com``,
# ``internal-<name>-<10 digits>.<region>.elb.amazonaws.com``, AWS Load Balancer Controller's
# ``k8s-<ns>-<name>-<10 hex>``) and IPv6 addresses written with dashes (Plex's
# ``<address>.<32 hex>.plex.direct``, sslip.io, ISPs' forward names). Encoders write one run:
# Base32 and hex have no '-', and a Base64url label breaks into fields of 17 or less at two
# '-' or more about once in 20 (a 30-character label); the model's new_data still counts it.
_ID_FIELD_MAX = 17
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_ADDR = re.compile(rb"(?<![0-9])" + _OCTET + rb"([-._])" + _OCTET + rb"\1" + _OCTET + rb"\1"
                   + _OCTET + rb"(?![0-9])")


try:
    import cython

    _COMPILED = cython.compiled
except ImportError:  # interpreted, Cython not installed
    _COMPILED = False


def _entropy_c(data: bytes) -> float:
    """:func:`entropy` in the compiled build (C counters, no int objects), summed in the
    order the interpreted one sums its dict (first occurrence), so both give the same
    float to the last bit. Never called interpreted."""
    counts = cython.declare(cython.long[256])
    order = cython.declare(cython.uchar[256])
    n = len(data)
    p = data  # a C pointer: no bounds check or object per octet
    for i in range(256):
        counts[i] = 0
    seen = 0
    for i in range(n):
        b = p[i]
        if counts[b] == 0:
            order[seen] = b
            seen += 1
        counts[b] += 1
    s = 0.0
    for i in range(seen):
        c = counts[order[i]]
        lg = _LOG2[c] if c < 256 else math.log2(c)  # a C double: C float arithmetic
        s += c * lg
    return _LOG2[n] - s / n if n < 256 else math.log2(n) - s / n


def entropy(data: bytes, _count=_count_elements, _lg=_LOG2, _log2=math.log2) -> float:
    """Shannon entropy in bits per character.

    >>> entropy(b"aaaa"), entropy(b"abcd")
    (0.0, 2.0)
    """
    n = len(data)
    if _COMPILED:
        return _entropy_c(data) if n >= 2 else 0.0
    if n < 2:
        return 0.0
    counts: dict[int, int] = {}
    _count(counts, data)  # what Counter(data) does, without its Python-level wrapping
    s = 0.0
    for c in counts.values():
        s += c * _lg[c] if c < 256 else c * _log2(c)
    return _log2(n) - s / n


def _h(data: bytes) -> float:
    """:func:`entropy` for the feature code: compiled, a C call to ``_entropy_c`` (not a
    Python call through ``entropy``'s default arguments)."""
    if _COMPILED:
        return _entropy_c(data) if len(data) >= 2 else 0.0
    return entropy(data)


_ALPHABETS = (_DIGITS, _UPPER, _PRINT, _LDH, _HEX, _B32, _B64, _B64URL)
# Per octet value, a bit per alphabet above that holds it (bit i: _ALPHABETS[i]).
_CLASS = bytes(sum(1 << i for i, a in enumerate(_ALPHABETS) if c in a) for c in range(256))


def _class_counts(data: bytes) -> tuple[int, ...]:
    """Octets of ``data`` in each of ``_ALPHABETS`` (bytes.translate deletes in C)."""
    n = len(data)
    return tuple([n - len(data.translate(None, a)) for a in _ALPHABETS])


def _class_counts_c(data: bytes) -> tuple[int, ...]:
    """:func:`_class_counts` in one pass over a table (compiled only)."""
    counts = cython.declare(cython.long[8])
    table = _CLASS
    for i in range(8):
        counts[i] = 0
    for i in range(len(data)):
        bits = table[data[i]]
        for j in range(8):
            if bits & (1 << j):
                counts[j] += 1
    return (counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6],
            counts[7])


class NameFeatures:
    """Features of one query name. Shares and fits are 0..1; lengths in octets."""

    __slots__ = ("name", "regdomain", "tld_known", "qname_len", "label_count", "max_label",
                 "sub_len", "sub_labels", "sub_entropy", "digit_share", "upper_share",
                 "b32_fit", "b64_fit", "b64url_fit", "hex_fit", "nonprint", "non_ldh",
                 "encoded", "reg_label_len", "reg_label_entropy", "reg_encoded", "id_shape",
                 "service", "addr", "info_bytes", "lower",
                 "verdicts", "allow", "name_hash", "counted")
    _PRIVATE = frozenset({"lower", "verdicts", "allow", "name_hash", "counted"})

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in _PUBLIC}

    def fdict(self) -> dict[str, float]:
        """The numeric message features as a new dict (booleans as 0/1)."""
        out = {}
        for k in _PUBLIC:
            v = getattr(self, k)
            if v.__class__ is bool:
                out[k] = float(v)
            elif isinstance(v, int | float):
                out[k] = v
        return out


_PUBLIC = tuple(k for k in NameFeatures.__slots__ if k not in NameFeatures._PRIVATE)
# ``NameFeatures.allow`` before the allowlist was consulted for the name.
UNCHECKED = object()
_PLAIN_NAME = bytes(c for c in range(0x21, 0x7F) if chr(c) not in '\\"()@;$')


def wire_key(labels: tuple[bytes, ...]) -> bytes:
    """A name's uncompressed wire form: the key of :class:`NameAnalyzer`'s cache.

    >>> wire_key((b"www", b"ex"))
    b'\\x03www\\x02ex\\x00'
    """
    return b"".join([bytes((len(x),)) + x for x in labels]) + b"\0"


class NameAnalyzer:
    """Computes :class:`NameFeatures`, caching by name (benign names repeat; bounded cache).

    The cache is keyed by the name's uncompressed wire form, so the pipeline's fast path can
    look a question up by the bytes of the packet (:meth:`analyze_wire`) without splitting it
    into labels first. It holds at most ``cache_size`` names in two generations: new names go
    into the young one; when it is full (half the size) it becomes the old one and the
    previous old one is dropped; a name found in the old generation moves back to the young
    one. Names in use survive a turnover, where clearing the whole cache made every name
    miss at once; one-off names (a tunnel's) leave within two turnovers.
    """

    def __init__(self, domains: RegisteredDomains, cache_size: int = 100_000) -> None:
        self.domains = domains
        self._cache: dict[bytes, NameFeatures] = {}  # young generation
        self._old: dict[bytes, NameFeatures] = {}
        self._cache_size = cache_size
        self.computed = 0  # names analysed (cache misses)
        self.turnovers = 0  # times the young generation replaced the old one

    def __len__(self) -> int:
        return len(self._cache) + len(self._old)

    def clear(self) -> None:
        self._cache.clear()
        self._old = {}

    def analyze(self, labels: tuple[bytes, ...]) -> NameFeatures:
        key = wire_key(labels)
        f = self._cache.get(key)
        if f is not None:
            return f
        return self._miss(key, labels, b"", 0)

    def analyze_wire(self, key: bytes, data: bytes, off: int) -> NameFeatures:
        """Features of the uncompressed name ``key``, which is ``data[off:off + len(key)]``."""
        f = self._cache.get(key)
        if f is not None:
            return f
        return self._miss(key, None, data, off)

    def _miss(self, key: bytes, labels: tuple[bytes, ...] | None, data: bytes,
              off: int) -> NameFeatures:
        f = self._old.pop(key, None)
        if f is None:
            if labels is None:
                labels, _ = read_name(data, off)
            f = self._compute(labels)
            self.computed += 1
        cache = self._cache
        if len(cache) >= max(self._cache_size // 2, 1):
            self._old = cache
            cache = self._cache = {}
            self.turnovers += 1
        cache[key] = f
        return f

    def _compute(self, labels: tuple[bytes, ...]) -> NameFeatures:
        f = NameFeatures()
        whole = b".".join(labels)
        low = whole.lower()
        lower = f.lower = labels if low == whole else tuple([x.lower() for x in labels])
        # Per (qtype, threshold factor): message-rule verdicts, cached with the name because
        # they depend on nothing else; cleared with the cache when rules change.
        f.verdicts = {}
        f.allow = UNCHECKED
        f.counted = False
        tld = ""
        if not lower:
            name = "."
        elif not low.translate(None, _PLAIN_NAME) and len(low) - low.count(b".") == \
                len(low) - len(lower) + 1:
            # Only printable octets that need no escape and no dot inside a label: the
            # presentation form is the bytes themselves.
            name = low.decode("ascii")
            tld = name[name.rfind(".") + 1:]  # == label_text(lower[-1]): plain, no escapes
        else:
            texts = [label_text(x) for x in lower]
            name = ".".join(texts)
            tld = texts[-1] if texts else ""
        f.name = name
        f.name_hash = hash(name)
        domains = self.domains
        rd = domains.lookup(name)
        f.regdomain = rd
        f.tld_known = bool(lower) and domains.is_known_tld(tld)
        nreg = rd.count(".") + 1 if rd != "." else 0
        nl = len(labels)
        # Labels of the registered domain may hold escaped dots; count labels, not dots.
        nreg = min(nreg, nl) if nreg else 0
        sub = labels[:nl - nreg] if nreg else labels
        nsub = len(sub)
        f.label_count = nl
        f.qname_len = len(whole)
        f.sub_labels = nsub
        joined = b"".join(sub)
        n = len(joined)
        f.sub_len = n + nsub - 1 if nsub else 0
        if n:
            longest = sub[0]  # the first of the longest labels, as max(sub, key=len)
            for x in sub:
                if len(x) > len(longest):
                    longest = x
            f.max_label = len(longest)
            f.sub_entropy = _h(joined)
            # Octets of each alphabet: one C pass compiled, bytes.translate interpreted.
            dig, upp, prn, ldh, hx, b32, b64, b64u = (
                _class_counts_c(joined) if _COMPILED else _class_counts(joined))
            f.digit_share = dig / n
            f.upper_share = upp / n
            f.nonprint = n - prn
            f.non_ldh = non_ldh = n - ldh
            f.hex_fit = hx / n
            f.b32_fit = b32 / n
            f.b64_fit = b64 / n
            f.b64url_fit = b64u / n
            f.service = svc = _has_service(sub)
            # An address needs four decimal octets and three of one separator: without them,
            # no regular expression (random data labels have the digits, not the separators).
            f.addr = dig >= 4 and _may_hold_address(b".".join(sub))
            f.id_shape = shape = _id_shape(longest, sub)
            # Identifiers (a UUID per request, a hex digest or device id, a DKIM selector or
            # an AD GUID under a service label) are not counted as encoded data; raw octets
            # always are. Many hex digests from one client fast: rule digest-labels-burst.
            f.encoded = _looks_encoded(longest, n, non_ldh) and (
                non_ldh >= 4 or (not svc and not shape))
            # Octets of information the subdomain can hold (length × bits per character / 8):
            # what a name adds to a channel when it is new.
            f.info_bytes = n * f.sub_entropy / 8.0
        else:
            f.max_label = 0
            f.sub_entropy = 0.0
            f.digit_share = f.upper_share = 0.0
            f.nonprint = f.non_ldh = 0
            f.hex_fit = f.b32_fit = f.b64_fit = f.b64url_fit = 0.0
            f.encoded = f.service = f.addr = False
            f.id_shape = 0
            f.info_bytes = 0.0
        # The registered domain's own label (left of the public suffix): data goes there when a
        # tunnel has no fixed domain (Reverse_DNS_Shell, dnscat2 direct mode).
        reg_label = labels[nl - nreg] if nreg and nreg <= nl else b""
        f.reg_label_len = len(reg_label)
        f.reg_label_entropy = _h(reg_label)
        # Under a TLD the PSL does not know, the "TLD" label may itself be the data (dnscat2
        # in direct mode sends dnscat.<hex>.<hex> straight to its server).
        f.reg_encoded = _looks_encoded(reg_label, len(reg_label), 0) or (
            not f.tld_known and bool(labels) and _looks_encoded(labels[-1], len(labels[-1]), 0))
        return f


ID_UUID = 1
ID_DIGEST = 2


def _has_service(sub: tuple[bytes, ...]) -> bool:
    """Does the subdomain hold a registered underscored label (``_domainkey``, ``_tcp``…)?

    >>> _has_service((b"s1", b"_domainkey")), _has_service((b"_netblocks2",))
    (True, True)
    >>> _has_service((b"_x7Gq", b"a")), _has_service((b"_dGhpcyBpcyBkYXRhIGluIGI2NA",))
    (False, False)
    """
    for x in sub:  # noqa: SIM110 - a C loop compiled (no generator object)
        if x[:1] == b"_" and (x.lower() in SERVICE_LABELS or _ATTR_LEAF.match(x) is not None):
            return True
    return False


def _id_shape(longest: bytes, sub: tuple[bytes, ...]) -> int:
    """ID_UUID if the subdomain's one long label is a UUID, ID_DIGEST if it is a hex digest
    of a hash length or a hex device id after a short word, else 0. Several long labels are
    a stream, not an identifier.

    >>> u = b"f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    >>> _id_shape(u, (u,))
    1
    >>> _id_shape(b"d41d8cd98f00b204e9800998ecf8427e", (b"d41d8cd98f00b204e9800998ecf8427e", b"t"))
    2
    >>> _id_shape(b"android-5165a91db7f92d52", (b"android-5165a91db7f92d52",))
    2
    """
    n = len(longest)
    if n != 36 and n not in _DIGEST_LENGTHS:
        if 14 <= n <= 29 and _HEX_ID.match(longest.lower()) is not None:
            return ID_DIGEST if _single_long(sub) else 0
        return 0
    if not _single_long(sub):
        return 0
    low = longest.lower()
    if n == 36:
        return ID_UUID if _UUID.match(low) is not None else 0
    if not low.translate(None, _HEXLOW) and not low.isdigit():
        return ID_DIGEST
    return 0


def _may_hold_address(s: bytes) -> bool:
    """``_ADDR`` searched in ``s``, only if three of one separator could join four octets.

    >>> _may_hold_address(b"ec2-54-1-2-3"), _may_hold_address(b"a1b2c3d4e5")
    (True, False)
    """
    if s.count(b".") < 3 and s.count(b"-") < 3 and s.count(b"_") < 3:
        return False
    return _ADDR.search(s.lower()) is not None


def _single_long(sub: tuple[bytes, ...]) -> bool:
    """Exactly one label of 14 octets or more: an id, not a stream split over labels."""
    long_labels = 0
    for x in sub:
        if len(x) >= 14:
            long_labels += 1
    return long_labels == 1


def _longest_field(low: bytes) -> int:
    """The longest run between hyphens.

    >>> _longest_field(b"vpce-0a1b2c3d4e5f67890-ab12cd34"), _longest_field(b"abc")
    (17, 3)
    """
    n = 0
    for x in low.split(b"-"):  # noqa: SIM110 - a C loop compiled
        if len(x) > n:
            n = len(x)
    return n


def _looks_encoded(label: bytes, total: int, non_ldh: int) -> bool:
    """A label that carries data: long and high-entropy, or raw octets outside letters/digits.
    Not words joined by hyphens (Helm's ``<release>-<chart>-<component>`` service names).

    >>> _looks_encoded(b"ingress-nginx-controller-admission", 34, 0)
    False
    >>> _looks_encoded(b"mfrggzdfmztwq2lknnwg23tpobyxe43u", 32, 0)
    True
    >>> _looks_encoded(b"vpce-0a1b2c3d4e5f67890-ab12cd34", 31, 0)
    False
    """
    if non_ldh >= 4:  # iodine base128/raw modes, binary payloads
        return True
    if len(label) < ENCODED_MIN_LABEL:
        return False
    # Lower-cased: resolvers that randomise case (DNS 0x20) must not make names look encoded.
    low = label.lower()
    if _WORD_COMPOUND.match(low) is not None:
        return False
    if low.count(b"-") >= 2 and _longest_field(low) <= _ID_FIELD_MAX:
        return False
    if not low.translate(None, _HEXLOW) and not low.isalpha() and not low.isdigit():
        # Hex has 16 symbols: random hex of 24-64 chars sits at 3.4-3.9 bits/char.
        return _h(low) >= ENCODED_MIN_ENTROPY_HEX
    return _h(low) >= ENCODED_MIN_ENTROPY
