"""Record type numbers and names (IANA "Resource Record (RR) TYPEs"); unknown types keep their
number and print as ``TYPEnnn`` (RFC 3597). Every class of query types the sensor uses lives
here, beside the numbers (as dnspython keeps them): what counts as ordinary or as a data
carrier, and the buckets each output groups types into (tests/test_rdatatype.py holds the
other modules to it).

Example:
    >>> is_ordinary(AAAA), is_ordinary(NULL), is_carrier(TXT), is_carrier(A)
    (True, False, True, False)
"""

A, NS, CNAME, SOA, NULL, PTR, HINFO, MX, TXT = 1, 2, 5, 6, 10, 12, 13, 15, 16
KEY, AAAA, SRV, NAPTR, OPT, DS, RRSIG, DNSKEY = 25, 28, 33, 35, 41, 43, 46, 48
SPF, SVCB, HTTPS, ANY, CAA, PRIVATE = 99, 64, 65, 255, 257, 65399

_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO",
    15: "MX", 16: "TXT", 17: "RP", 18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC",
    33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 44: "SSHFP", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF",
    249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 255: "ANY", 256: "URI", 257: "CAA",
    65399: "PRIVATE",
}
_BY_NAME = {v: k for k, v in _NAMES.items()}

#: Query types an ordinary client asks for. Every other type is "rare" in client traffic
#: (NULL, KEY, PRIVATE, TYPEnnn…): the ``qtype_rare`` and ``rare_qtype_share`` features.
ORDINARY = frozenset({A, AAAA, CNAME, MX, TXT, PTR, HTTPS, SVCB, NS, SOA, SRV, DS, DNSKEY, CAA,
                      ANY, NAPTR, SPF})
#: Types whose answers carry data-sized payloads: the downstream channels of iodine, dns2tcp,
#: dnscat2, OzymanDNS… (the ``carrier_share`` feature).
CARRIER = frozenset({TXT, NULL, KEY, PRIVATE, CNAME, MX, SRV, HINFO, SPF})

# Buckets: each output names these types and counts every other type as "other" (bounded
# label sets). They differ on purpose: what an alert's mix shows, what Prometheus labels
# carry, what the series' chi-square test compares.
#: An alert's ``stats.qtypes`` mix.
MIX_ALERT = (A, AAAA, CNAME, MX, TXT, NULL, KEY, SRV, PTR, HTTPS, NS, SOA, PRIVATE)
#: The ``dnsguard_dns_messages_total`` metric's ``qtype`` label.
MIX_METRICS = (A, NS, CNAME, SOA, NULL, PTR, MX, TXT, KEY, AAAA, SRV, SVCB, HTTPS, ANY, PRIVATE)
#: The series' per-key query-type counts (in this order; then "other").
MIX_SERIES = (A, AAAA, CNAME, MX, TXT, NULL, PTR, SRV, HTTPS, NS, SOA, ANY, KEY, PRIVATE)


def is_ordinary(rdtype: int) -> bool:
    """Whether an ordinary client asks for this type (:data:`ORDINARY`)."""
    return rdtype in ORDINARY


def is_carrier(rdtype: int) -> bool:
    """Whether this type's answers can carry a tunnel's downstream data (:data:`CARRIER`)."""
    return rdtype in CARRIER


def buckets(types: tuple[int, ...]) -> dict[int, str]:
    """Type number → mnemonic for the types of a mix bucket set.

    >>> buckets((A, PRIVATE))
    {1: 'A', 65399: 'PRIVATE'}
    """
    return {t: to_text(t) for t in types}


def to_text(rdtype: int) -> str:
    """Mnemonic of a type number.

    >>> to_text(10), to_text(65280)
    ('NULL', 'TYPE65280')
    """
    return _NAMES.get(rdtype) or f"TYPE{rdtype}"


def from_text(text: str) -> int:
    """Type number of a mnemonic or ``TYPEnnn``.

    >>> from_text('txt'), from_text('TYPE99')
    (16, 99)
    """
    t = text.strip().upper()
    if t in _BY_NAME:
        return _BY_NAME[t]
    if t.startswith("TYPE") and t[4:].isdigit() and int(t[4:]) < 65536:
        return int(t[4:])
    raise ValueError(f"unknown record type {text!r}")
