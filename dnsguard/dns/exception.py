"""Precise exception types for DNS wire parsing. ``reason`` is a fixed string, safe as a
metric label and counter key (it never carries packet bytes)."""


class DNSError(Exception):
    reason = "malformed"


class NotDNS(DNSError):
    """The bytes on a DNS port are not a DNS message at all (impossible header)."""

    reason = "not_dns"


class ShortHeader(NotDNS):
    reason = "short_header"


class Truncated(DNSError):
    """A length, count or pointer runs past the end of the message."""

    reason = "truncated"


class BadPointer(DNSError):
    """A compression pointer points forward or at itself (RFC 1035 §4.1.4: prior occurrence)."""

    reason = "forward_pointer"


class PointerLoop(DNSError):
    """Compression pointers that do not move strictly backwards: a loop."""

    reason = "pointer_loop"


class NameTooLong(DNSError):
    """A name longer than 255 octets in wire form."""

    reason = "name_too_long"


class BadLabelType(DNSError):
    """Label type bits 01 or 10 (extended/reserved, RFC 6891 §5)."""

    reason = "bad_label_type"


class BadOpt(DNSError):
    """An EDNS OPT record that breaks RFC 6891 (not root-owned)."""

    reason = "bad_opt"


REASONS = tuple(sorted({c.reason for c in (Truncated, BadPointer, PointerLoop, NameTooLong,
                                            BadLabelType, BadOpt, ShortHeader)}))
