"""DNS names on the wire: read with compression, show in presentation format.

Labels are kept as raw bytes: tunnels such as iodine (base128, raw) put arbitrary octets in
labels, and both the detector and the analyst need them unaltered. Presentation form escapes
them as RFC 1035 §5.1 does (``\\DDD`` for non-printable octets, ``\\.`` for a dot in a label).

Example:
    >>> labels, end = read_name(b"\\x03www\\x07example\\x03com\\x00", 0)
    >>> to_text(labels), end
    ('www.example.com', 17)
    >>> to_text((b"a.b", b"\\xff\\x00x", b"com"))
    'a\\\\.b.\\\\255\\\\000x.com'
"""

from __future__ import annotations

from dnsguard.dns.exception import BadLabelType, BadPointer, NameTooLong, PointerLoop, Truncated

MAX_NAME = 255

# Octets that print as themselves in a label; anything else is escaped.
_PLAIN = bytes(
    c for c in range(0x21, 0x7F) if chr(c) not in '.\\"()@;$'
)
_SPECIAL = frozenset(b'.\\"()@;$')


def read_name(data: bytes, off: int) -> tuple[tuple[bytes, ...], int]:
    """Read the name at ``off``; return its labels and the offset just after it.

    Compression pointers must each point strictly before the previous one's target (as
    dnspython does), which rules out forward pointers and loops without a hop counter.
    """
    labels: list[bytes] = []
    n = len(data)
    end = -1
    limit = off  # the next pointer must point before this
    total = 1
    while True:
        if off >= n:
            raise Truncated("name runs past the end")
        ln = data[off]
        if ln == 0:
            off += 1
            break
        t = ln & 0xC0
        if t == 0xC0:
            if off + 1 >= n:
                raise Truncated("compression pointer cut")
            ptr = ((ln & 0x3F) << 8) | data[off + 1]
            if ptr >= limit:
                if end < 0 and ptr >= off:
                    raise BadPointer(f"pointer at {off} to {ptr}")
                raise PointerLoop(f"pointer at {off} to {ptr}")
            if end < 0:
                end = off + 2
            limit = off = ptr
            continue
        if t:
            raise BadLabelType(f"label type {t:#x} at {off}")
        total += ln + 1
        if total > MAX_NAME:
            raise NameTooLong(f"name longer than {MAX_NAME} octets")
        off += 1
        if off + ln > n:
            raise Truncated("label runs past the end")
        labels.append(data[off:off + ln])
        off += ln
    return tuple(labels), (end if end >= 0 else off)


def skip_name(data: bytes, off: int) -> int:
    """Offset just after the name at ``off``, without decoding it (owner names of records)."""
    n = len(data)
    while True:
        if off >= n:
            raise Truncated("name runs past the end")
        ln = data[off]
        if ln == 0:
            return off + 1
        if ln & 0xC0 == 0xC0:
            if off + 1 >= n:
                raise Truncated("compression pointer cut")
            return off + 2
        if ln & 0xC0:
            raise BadLabelType(f"label type {ln & 0xC0:#x} at {off}")
        off += ln + 1


# Per octet: 0 prints as itself, 1 is escaped with a backslash, 2 as \\DDD.
_ESCAPE = bytes(1 if c in _SPECIAL else 0 if 0x21 <= c < 0x7F else 2 for c in range(256))


def label_text(label: bytes) -> str:
    """One label in presentation format."""
    if not label.translate(None, _PLAIN):
        return label.decode("ascii")
    # Octet by octet into one buffer (compiled: C appends; binary labels of iodine's
    # raw and base128 modes made this a visible share of the name analysis).
    out = bytearray()
    kind = _ESCAPE
    for c in label:
        k = kind[c]
        if k == 0:
            out.append(c)
        elif k == 1:
            out.append(92)  # backslash
            out.append(c)
        else:
            out.append(92)
            out.append(48 + c // 100)
            out.append(48 + c // 10 % 10)
            out.append(48 + c % 10)
    return out.decode("ascii")


def to_text(labels: tuple[bytes, ...]) -> str:
    """Presentation format without the trailing dot; the root is ``.``."""
    if not labels:
        return "."
    return ".".join([label_text(x) for x in labels])
