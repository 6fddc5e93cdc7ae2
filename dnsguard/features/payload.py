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
from dnsguard.domain import TLD_KNOWN as _TLD_KNOWN
from dnsguard.domain import TLD_WILD as _TLD_WILD
from dnsguard.domain import RegisteredDomains
from dnsguard.features.namehash import hash_str, sip13

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
# The constants _compute_key compares as C integers (payload.pxd types them).
_MIN_LABEL_C = ENCODED_MIN_LABEL
_TLD_KNOWN_C = _TLD_KNOWN
_TLD_WILD_C = _TLD_WILD
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
_DIGEST_LENGTHS = frozenset({32, 40, 56, 64, 96, 128})  # also spelled out in _compute_key
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
# No field of a resource id is longer than an AWS resource id's 17 hex digits.
_ID_FIELD_MAX = 17
# A cloud or orchestrator resource id in one label: words (letters only, at most 12) and id
# fields joined by hyphens: at most two id fields (3 octets or more, not a word), at most one
# of them longer than 8, at most 28 octets in them. Real ids: AWS ``vpce-<17 hex>-<8>`` and
# its zonal ``…-<region><az>`` form
# (https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-access-aws-services.html),
# ``eni-``/``i-<17 hex>`` (EC2 resource-based host names:
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-naming.html), load
# balancers ``<name>-<16 hex>`` and ``k8s-<ns>-<name>-<10 hex>``, Kubernetes pods
# ``<deployment>-<replica-set hash, 9-10>-<5>`` (k8s.io/apimachinery pkg/util/rand), AKS
# ``<prefix>-<8 hex>.hcp.<region>.azmk8s.io``, Cloud Run ``<svc>-<10>-<region>.a.run.app``;
# IPv6 addresses with dashes (fields of at most 4 hex). Data cut into hyphen-joined fields is
# not one: it has several long fields or more random octets (bench/id_fields.py measures both).
_RESOURCE_LONG_FIELD = 8
_RESOURCE_RANDOM_MAX = 28
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_ADDR = re.compile(rb"(?<![0-9])" + _OCTET + rb"([-._])" + _OCTET + rb"\1" + _OCTET + rb"\1"
                   + _OCTET + rb"(?![0-9])")


try:
    import cython

    _COMPILED = cython.compiled
except ImportError:  # interpreted, Cython not installed: the class decorators do nothing
    from dnsguard._compiled import NoCython as cython

    _COMPILED = False


def _entropy_c(data: bytes) -> float:
    """:func:`entropy` in the compiled build (C counters, no int objects), summed in the
    order the interpreted one sums its dict (first occurrence), so both give the same
    float to the last bit. Never called interpreted."""
    return _entropy_at(data, 0, len(data))


def _entropy_at(p, start, n) -> float:
    """:func:`_entropy_c` of the ``n`` octets at ``p[start:]`` (a C pointer; compiled only):
    a label's entropy read where it lies in the wire name, no bytes object."""
    order = cython.declare(cython.uchar[256])
    counts = _CNT_E  # noqa: F821 - C counters (payload.pxd), zero between calls
    seen = 0
    for i in range(start, start + n):
        b = p[i]
        if counts[b] == 0:
            order[seen] = b
            seen += 1
        counts[b] += 1
    e = _entropy_sum(counts, order, seen, n)
    for i in range(seen):
        counts[order[i]] = 0
    return e


def _fill_log2() -> None:
    """Compiled only: ``_LOG2`` copied into the C array ``_LOG2C`` (payload.pxd), the same
    doubles, read without a list item and a float object per term."""
    for i in range(256):
        _LOG2C[i] = _LOG2[i]  # noqa: F821 - declared in payload.pxd


if _COMPILED:
    _fill_log2()


def _entropy_sum(counts, order, seen, n) -> float:
    """The entropy of ``n`` octets from their counts, summed in first-occurrence ``order``
    (compiled only: C arrays; both C paths share it, so their floats agree to the bit)."""
    s = 0.0
    for i in range(seen):
        c = counts[order[i]]
        lg = _LOG2C[c] if c < 256 else math.log2(c)  # noqa: F821 - C float arithmetic
        s += c * lg
    return _LOG2C[n] - s / n if n < 256 else math.log2(n) - s / n  # noqa: F821


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
# Per octet, its lower-case form where _compute_key takes it into a name (printable, not a
# dot, an escape or a character presentation quotes), else 0: one table read an octet.
_PLAIN_LOWER = bytes((c + 32 if 65 <= c <= 90 else c)
                     if 0x21 <= c <= 0x7E and c not in b'."\\()@;$' else 0 for c in range(256))


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


# Not tracked by the cyclic collector (compiled; see the .pxd for why no cycle can pass
# through one): ``@cython.no_gc`` takes effect here, with ``cclass``, not in the .pxd.
@cython.no_gc
@cython.cclass
class NameFeatures:
    """Features of one query name. Shares and fits are 0..1; lengths in octets."""

    __slots__ = ("name", "regdomain", "tld_known", "qname_len", "label_count", "max_label",
                 "sub_len", "sub_labels", "sub_entropy", "digit_share", "upper_share",
                 "b32_fit", "b64_fit", "b64url_fit", "hex_fit", "nonprint", "non_ldh",
                 "encoded", "reg_label_len", "reg_label_entropy", "reg_encoded", "id_shape",
                 "service", "addr", "info_bytes", "lower",
                 "verdicts", "allow", "name_hash", "reg_hash", "counted")
    # name_hash, reg_hash: the keyed hashes (features.namehash) of name and regdomain
    _PRIVATE = frozenset({"lower", "verdicts", "allow", "name_hash", "reg_hash", "counted"})

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in _PUBLIC}

    def lowered(self) -> tuple[bytes, ...]:
        """The name's labels in lower case, as the windows and the long horizon read them.
        ``_compute_key`` leaves them (``lower`` None) to be made here from the name when
        first read: a never-seen name no tracked key reads (a flood's) never makes them.

        >>> from dnsguard.domain import RegisteredDomains
        >>> NameAnalyzer(RegisteredDomains()).analyze((b"WWW", b"ex", b"com")).lowered()
        (b'www', b'ex', b'com')
        """
        low = self.lower
        if low is None:
            # A name of _compute_key: plain octets, no dot inside a label, lower case.
            low = self.lower = tuple(self.name.encode("ascii").split(b"."))
        return low

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
                # Compiled: one C pass over the wire name for the common shape (None for any
                # other: escapes, one label, the root; those take _compute).
                f = _compute_key(self.domains, key) if _COMPILED else None
                if f is None:
                    labels, _ = read_name(data, off)
            if f is None:
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
        # they depend on nothing else; cleared with the cache when rules change. None until
        # the judge stores one (most never-seen names get none: its gate decides them).
        f.verdicts = None
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
        f.name_hash = hash_str(name)  # keyed, not the per-process hash(): features.namehash
        domains = self.domains
        rd = domains.lookup(name)
        f.regdomain = rd
        f.reg_hash = hash_str(rd)
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
            _no_subdomain(f)
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
ID_RESOURCE = 3


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
    if n == 36 or n in _DIGEST_LENGTHS:
        if _single_long(sub):
            low = longest.lower()
            if n == 36:
                if _UUID.match(low) is not None:
                    return ID_UUID
            elif not low.translate(None, _HEXLOW) and not low.isdigit():
                return ID_DIGEST
    elif 14 <= n <= 29 and _HEX_ID.match(longest.lower()) is not None and _single_long(sub):
        return ID_DIGEST
    return _resource_shape(longest, sub)  # its own test of the other long labels


def _resource_shape(longest: bytes, sub: tuple[bytes, ...]) -> int:
    """ID_RESOURCE if the subdomain's one long label that is not made of words (service
    and region names: ``secretsmanager``, ``ap-southeast-2``) is a resource id
    (:func:`_resource_id`), else 0.

    >>> _resource_shape(b"vpce-0a1b2c3d4e5f67890-ab12cd34",
    ...                 (b"vpce-0a1b2c3d4e5f67890-ab12cd34", b"secretsmanager", b"us-east-1"))
    3
    >>> _resource_shape(b"k7vq2mzx4hbp6wjd-n3c5fr2tyg8s",
    ...                 (b"k7vq2mzx4hbp6wjd-n3c5fr2tyg8s", b"q4n8bz2kxm3jw7hvt"))
    0
    """
    if len(longest) < 14 or b"-" not in longest or not _resource_id(longest.lower()):
        return 0
    for x in sub:
        if len(x) >= 14 and x is not longest and not _words(x):
            return 0
    return ID_RESOURCE


def _words(label: bytes) -> bool:
    """Letters-only fields, or fields of at most 2, joined by hyphens: ``ap-southeast-2``."""
    for x in label.split(b"-"):  # noqa: SIM110 - a C loop compiled
        if len(x) > 2 and not x.isalpha():
            return False
    return True


def _resource_id(low: bytes) -> bool:
    """A lower-case label that reads as a generated resource id (``_RESOURCE_*`` above).

    >>> _resource_id(b"vpce-0a1b2c3d4e5f67890-ab12cd34-us-east-1a")
    True
    >>> _resource_id(b"api-gateway-7d9f8b6c5d-x2k4p"), _resource_id(b"2001-db8-0-8a2e-370-7334")
    (True, True)
    >>> _resource_id(b"mfrggzdfmztwq2lkn-nwg23tpobyxe43u-on2xmzlbmjygk3tb")  # Base32 in fields
    False
    >>> _resource_id(b"mfrggzdf-mztwq2lk-nnwg23tp-obyxe43u")
    False
    """
    if b"-" not in low:
        return False
    fields = low.split(b"-")
    if len(fields) <= 8:
        for x in fields:  # an IPv6 address with dashes ("--" where "::" was)
            if len(x) > 4 or x.translate(None, _HEXLOW):
                break
        else:
            return True
    ids = long_fields = rand = 0
    for x in fields:
        n = len(x)
        if n > _ID_FIELD_MAX:
            return False
        if n <= 2 or (n <= 12 and x.isalpha()):
            continue  # a word (vpce, internal, east, controller) or a zone's "1a"
        ids += 1
        rand += n
        if n > _RESOURCE_LONG_FIELD:
            long_fields += 1
    return ids <= 2 and long_fields <= 1 and rand <= _RESOURCE_RANDOM_MAX


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


def _looks_encoded(label: bytes, total: int, non_ldh: int) -> bool:
    """A label that carries data: long and high-entropy, or raw octets outside letters/digits.
    Not words joined by hyphens (Helm's ``<release>-<chart>-<component>`` service names).

    >>> _looks_encoded(b"ingress-nginx-controller-admission", 34, 0)
    False
    >>> _looks_encoded(b"mfrggzdfmztwq2lknnwg23tpobyxe43u", 32, 0)
    True
    >>> _looks_encoded(b"vpce-0a1b2c3d4e5f67890-ab12cd34", 31, 0)
    False
    >>> _looks_encoded(b"mfrggzdfmztwq2lkn-nwg23tpobyxe43u-on2xmzlbmjygk3tb", 51, 0)
    True
    """
    if non_ldh >= 4:  # iodine base128/raw modes, binary payloads
        return True
    if len(label) < ENCODED_MIN_LABEL:
        return False
    # Lower-cased: resolvers that randomise case (DNS 0x20) must not make names look encoded.
    low = label.lower()
    if _WORD_COMPOUND.match(low) is not None:
        return False
    if _resource_id(low):  # a cloud resource id, not data cut into hyphen-joined fields
        return False
    if not low.translate(None, _HEXLOW) and not low.isalpha() and not low.isdigit():
        # Hex has 16 symbols: random hex of 24-64 chars sits at 3.4-3.9 bits/char.
        return _h(low) >= ENCODED_MIN_ENTROPY_HEX
    return _h(low) >= ENCODED_MIN_ENTROPY



def _no_subdomain(f: NameFeatures) -> None:
    """The subdomain features of a name that is its registered domain alone (both analysers)."""
    f.max_label = 0
    f.sub_entropy = 0.0
    f.digit_share = f.upper_share = 0.0
    f.nonprint = f.non_ldh = 0
    f.hex_fit = f.b32_fit = f.b64_fit = f.b64url_fit = 0.0
    f.encoded = f.service = f.addr = False
    f.id_shape = 0
    f.info_bytes = 0.0


def _compute_key(domains: RegisteredDomains, key: bytes) -> NameFeatures | None:
    """:meth:`NameAnalyzer._compute` of the name whose uncompressed wire form is ``key``, in
    one C pass over its octets (compiled only): the presentation name, the octet counts
    behind entropy and the alphabet fits, the separators the address check needs and the
    shape of the longest label, with no joined, lowered or translated copies, no label
    objects unless a test needs them (``lower`` is left to ``NameFeatures.lowered``) and no
    regular expression unless a name could match one. None (the caller then runs
    ``_compute``) unless ``key`` is a well-formed name (every length checked: labels of
    1-63 octets inside the key, the terminator last, at most 255 octets) of two or more
    labels of plain printable octets (no dot, escape or space inside a label) whose
    registered domain is its last two labels by ``RegisteredDomains``' fast rule. Field by
    field the same as ``_compute`` (tests/test_compiled.py)."""
    starts = cython.declare(cython.int[128])
    lens = cython.declare(cython.int[128])
    buf = cython.declare(cython.uchar[256])
    order = cython.declare(cython.uchar[256])
    ccounts = cython.declare(cython.long[8])
    n = len(key)
    if n < 4 or n > 255:
        return None
    p = key
    # The labels: every length checked before its octets are read.
    nl = 0
    i = 0
    while True:
        if i >= n:
            return None
        ln = p[i]
        if ln == 0:
            break
        if ln > 63 or nl >= 127 or i + 1 + ln >= n:
            return None
        starts[nl] = i + 1
        lens[nl] = ln
        nl += 1
        i += 1 + ln
    if i != n - 1 or nl < 2:
        return None
    # The lower-case presentation form into buf (n - 2 octets), plain octets only.
    plain = _PLAIN_LOWER
    m = 0
    for k in range(nl):
        if k:
            buf[m] = 46  # "."
            m += 1
        st = starts[k]
        for j in range(st, st + lens[k]):
            c = p[j]
            lc = plain[c]  # _PLAIN_LOWER: the octet lower-cased, 0 if not plain
            if lc == 0:
                return None  # "." inside a label, an escape, a space or a raw octet
            buf[m] = lc
            m += 1
    cbuf = cython.cast(cython.p_char, buf)
    name = cbuf[:m].decode("ascii")
    # The last two labels (RegisteredDomains._two_labels' answer for such a name). What
    # the PSL says of the TLD comes from its slot in RegisteredDomains._tld_slots (its
    # octets and a flag octet; a name's TLD is nearly always one seen before): no string.
    tl = lens[nl - 1]
    st = m - tl
    h = tl
    for i in range(st, m):
        h = (h * 31 + buf[i]) & 0xFFFF
    h &= 255
    slots = domains._tld_slots
    sb = slots[h]
    flag = -1
    if sb is not None and len(sb) == tl + 1:
        q = sb
        flag = q[tl]
        for i in range(tl):
            if q[i] != buf[st + i]:
                flag = -1
                break
    if flag < 0:
        tld = name[st:]
        if tld in domains._wild1:
            flag = _TLD_WILD_C
        else:
            known = domains._tlds.get(tld)  # is_known_tld's cache, without the method call
            if known is None:
                known = domains.is_known_tld(tld)
            flag = _TLD_KNOWN_C if known else 0
        slots[h] = cbuf[st:m] + bytes((flag,))
    tail = name[st - 1 - lens[nl - 2]:]
    if not domains._fast or tail in domains._tails2 or flag & _TLD_WILD_C:
        return None
    f = NameFeatures.__new__(NameFeatures)  # no __init__: a C call of the type's tp_new
    # No label objects unless a test below takes them (an identifier's shape, a service
    # label, an address, a hyphenated or long label; most names need none), and the
    # lower-case labels made from the name when first read (NameFeatures.lowered): a
    # never-seen name that no tracked key reads (a flood's) makes neither.
    labels = None
    f.lower = None
    f.verdicts = None
    f.allow = UNCHECKED
    f.counted = False
    f.name = name
    f.name_hash = sip13(buf, m)  # == hash_str(name), in C on the name's octets
    f.regdomain = tail
    f.reg_hash = sip13(cython.address(buf[m - len(tail)]), len(tail))  # == hash_str(tail)
    f.tld_known = flag & _TLD_KNOWN_C
    f.label_count = nl
    f.qname_len = m
    nsub = nl - 2
    f.sub_labels = nsub
    # The subdomain's octets (original case): counts for entropy, alphabets, separators.
    sn = 0
    longest = 0
    under = False
    # _CNT_K, zero between calls: the octets counted are reset below, right after their
    # last use (no memset of 256 counters per name).
    counts = _CNT_K  # noqa: F821 - a C array declared in payload.pxd (compiled only)
    for i in range(8):
        ccounts[i] = 0
    seen = 0
    table = _CLASS
    for k in range(nsub):
        st = starts[k]
        ln = lens[k]
        if ln > lens[longest]:
            longest = k
        if p[st] == 95:
            under = True
        sn += ln
        for j in range(st, st + ln):
            c = p[j]
            if counts[c] == 0:
                order[seen] = c
                seen += 1
            counts[c] += 1
    # The alphabets' counts from the distinct octets (a name repeats most of its octets).
    for i in range(seen):
        c = order[i]
        cnt = counts[c]
        bits = table[c]
        ccounts[0] += cnt * (bits & 1)
        ccounts[1] += cnt * ((bits >> 1) & 1)
        ccounts[2] += cnt * ((bits >> 2) & 1)
        ccounts[3] += cnt * ((bits >> 3) & 1)
        ccounts[4] += cnt * ((bits >> 4) & 1)
        ccounts[5] += cnt * ((bits >> 5) & 1)
        ccounts[6] += cnt * ((bits >> 6) & 1)
        ccounts[7] += cnt * ((bits >> 7) & 1)
    ent = _entropy_sum(counts, order, seen, sn) if sn >= 2 else 0.0
    hy = counts[45]
    us = counts[95]
    for i in range(seen):
        counts[order[i]] = 0
    f.sub_len = sn + nsub - 1 if nsub else 0
    if sn:
        f.max_label = ml = lens[longest]
        f.sub_entropy = ent
        dig = ccounts[0]
        f.digit_share = dig / sn
        f.upper_share = ccounts[1] / sn
        f.nonprint = sn - ccounts[2]
        f.non_ldh = non_ldh = sn - ccounts[3]
        f.hex_fit = ccounts[4] / sn
        f.b32_fit = ccounts[5] / sn
        f.b64_fit = ccounts[6] / sn
        f.b64url_fit = ccounts[7] / sn
        if under:
            labels = _labels_at(p, starts, lens, nl)
            svc = _has_service(labels[:nsub])
        else:
            svc = False
        f.service = svc
        # _may_hold_address's own test of three separators (dots: between the labels).
        if dig >= 4 and (nsub - 1 >= 3 or hy >= 3 or us >= 3):
            if labels is None:
                labels = _labels_at(p, starts, lens, nl)
            f.addr = _may_hold_address(b".".join(labels[:nsub]))
        else:
            f.addr = False
        shape = 0
        if ml == 36 or ml == 32 or ml == 40 or ml == 56 or ml == 64 or ml == 96 or \
                ml == 128:  # _DIGEST_LENGTHS, as C comparisons
            if labels is None:
                labels = _labels_at(p, starts, lens, nl)
            shape = _id_shape(labels[longest], labels[:nsub])
        elif 14 <= ml <= 29:
            # _HEX_ID ends in 12 (or 16) hex digits: without them it cannot match.
            st = starts[longest] + ml - 12
            hexend = True
            for j in range(st, st + 12):
                c = p[j] | 32
                if not (48 <= c <= 57 or 97 <= c <= 102):
                    hexend = False
                    break
            if hexend:
                if labels is None:
                    labels = _labels_at(p, starts, lens, nl)
                shape = _id_shape(labels[longest], labels[:nsub])
        if not shape and ml >= 14 and hy:
            st = starts[longest]
            for j in range(st, st + ml):
                if p[j] == 45:  # a "-" in the longest label: maybe a resource id
                    if labels is None:
                        labels = _labels_at(p, starts, lens, nl)
                    shape = _resource_shape(labels[longest], labels[:nsub])
                    break
        f.id_shape = shape
        if non_ldh >= 4:
            looks = True
        elif ml < _MIN_LABEL_C:
            looks = False
        elif hy:  # a "-": maybe words joined by hyphens
            if labels is None:
                labels = _labels_at(p, starts, lens, nl)
            looks = _looks_encoded(labels[longest], sn, non_ldh)
        elif nsub == 1 and not ccounts[1]:
            # One label, no upper case: it is its lower-case form, counted above in the
            # order _looks_encoded_plain would count it (the same entropy to the bit); hex
            # only, letters only or digits only from the alphabet counts ("-" none).
            looks = ent >= (ENCODED_MIN_ENTROPY_HEX if ccounts[4] == sn and dig != sn and
                            ccounts[3] - dig - us != sn else ENCODED_MIN_ENTROPY)
        else:
            looks = _looks_encoded_plain(p, starts[longest], ml)
        f.encoded = looks and (non_ldh >= 4 or (not svc and not shape))
        f.info_bytes = sn * ent / 8.0
    else:
        _no_subdomain(f)
    # The registered domain's label, and the TLD's under an unknown TLD: _looks_encoded of a
    # label with no raw octets is False under ENCODED_MIN_LABEL octets (no label object).
    rl = lens[nl - 2]
    f.reg_label_len = rl
    f.reg_label_entropy = _entropy_at(p, starts[nl - 2], rl) if rl >= 2 else 0.0
    if rl >= _MIN_LABEL_C or (not f.tld_known and tl >= _MIN_LABEL_C):
        if labels is None:
            labels = _labels_at(p, starts, lens, nl)
        f.reg_encoded = _looks_encoded(labels[nl - 2], rl, 0) or (
            not f.tld_known and _looks_encoded(labels[nl - 1], tl, 0))
    else:
        f.reg_encoded = False
    return f


def _labels_at(p, starts, lens, nl) -> tuple:
    """The ``nl`` labels at ``p[starts[k]:starts[k] + lens[k]]`` (C arrays; compiled only), in
    their original case: each one PyBytes_FromStringAndSize from the C pointer, two to four
    (most names) as a tuple display (no list, no int per label)."""
    if nl == 2:
        return (p[starts[0]:starts[0] + lens[0]], p[starts[1]:starts[1] + lens[1]])
    if nl == 3:
        return (p[starts[0]:starts[0] + lens[0]], p[starts[1]:starts[1] + lens[1]],
                p[starts[2]:starts[2] + lens[2]])
    if nl == 4:
        return (p[starts[0]:starts[0] + lens[0]], p[starts[1]:starts[1] + lens[1]],
                p[starts[2]:starts[2] + lens[2]], p[starts[3]:starts[3] + lens[3]])
    return tuple([p[starts[k]:starts[k] + lens[k]] for k in range(nl)])


def _looks_encoded_plain(p, start, ln) -> bool:
    """:func:`_looks_encoded` of a label of ``ln`` >= 24 octets with no "-" (so not words
    joined by hyphens) and few raw octets, at ``p[start:start + ln]``: its lower-case
    form's hex test and entropy in C (compiled only)."""
    order = cython.declare(cython.uchar[256])
    counts = _CNT_L  # noqa: F821 - C counters (payload.pxd), zero between calls
    seen = 0
    hexonly = True
    alpha = True
    digits = True
    for j in range(start, start + ln):
        c = p[j]
        if 65 <= c <= 90:
            c += 32
        if counts[c] == 0:
            order[seen] = c
            seen += 1
        counts[c] += 1
        isdig = 48 <= c <= 57
        isalpha = 97 <= c <= 122
        if not (isdig or 97 <= c <= 102):
            hexonly = False
        if not isalpha:
            alpha = False
        if not isdig:
            digits = False
    e = _entropy_sum(counts, order, seen, ln)
    for i in range(seen):
        counts[order[i]] = 0
    if hexonly and not alpha and not digits:
        return e >= ENCODED_MIN_ENTROPY_HEX
    return e >= ENCODED_MIN_ENTROPY
