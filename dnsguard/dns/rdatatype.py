"""Record type numbers and names (IANA "Resource Record (RR) TYPEs"); unknown types keep their
number and print as ``TYPEnnn`` (RFC 3597)."""

A, NS, CNAME, SOA, NULL, PTR, HINFO, MX, TXT = 1, 2, 5, 6, 10, 12, 13, 15, 16
KEY, AAAA, SRV, NAPTR, OPT, DS, RRSIG, DNSKEY = 25, 28, 33, 35, 41, 43, 46, 48
SVCB, HTTPS, ANY, CAA, PRIVATE = 64, 65, 255, 257, 65399

_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO",
    15: "MX", 16: "TXT", 17: "RP", 18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC",
    33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 44: "SSHFP", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF",
    249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 255: "ANY", 256: "URI", 257: "CAA",
    65399: "PRIVATE",
}
_BY_NAME = {v: k for k, v in _NAMES.items()}

#: Query types ordinary clients send every day. Everything else is rare in client traffic and
#: a classic tunnel carrier (NULL, TXT with data, KEY, PRIVATE, …): see features.payload.
COMMON_QTYPES = frozenset({A, AAAA, PTR, HTTPS, SVCB, SOA, NS, DS, DNSKEY, SRV, MX, TXT, CNAME})
#: Types used to carry downstream data by iodine, dns2tcp, dnscat2, OzymanDNS, …
CARRIER_TYPES = frozenset({NULL, TXT, KEY, PRIVATE, CNAME, MX, SRV, 11, 13, 99})


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
