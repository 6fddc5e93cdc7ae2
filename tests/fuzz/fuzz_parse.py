"""atheris harness: dnsguard.dns.message.parse on arbitrary bytes.

The first input byte's low bit is ``cut`` (the capture kept less than the datagram); the rest
is the message. Only DNSError (and its subclasses) may come out; a parsed message must keep
its promises (record spans inside the data, a question name of at most 255 octets). See
README.md.
"""

from __future__ import annotations

import sys

try:
    import atheris
except ImportError:  # pytest --doctest-modules imports this file too; running it needs atheris
    atheris = None


def one(data: bytes) -> None:
    from dnsguard.dns.exception import DNSError
    from dnsguard.dns.message import parse
    from dnsguard.dns.name import MAX_NAME

    if not data:
        return
    cut = bool(data[0] & 1)
    body = data[1:]
    try:
        m = parse(body, cut)
    except DNSError:
        return
    assert m.size == len(body)
    for _t, off, ln in m.answers:
        assert off >= 12 and off + ln <= len(body), (off, ln, len(body))
    if m.qlabels is not None:
        assert sum(len(x) + 1 for x in m.qlabels) + 1 <= MAX_NAME
        assert isinstance(m.qname, str)


if __name__ == "__main__":
    with atheris.instrument_imports():
        import dnsguard.dns.message  # noqa: F401
        import dnsguard.dns.name  # noqa: F401
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
