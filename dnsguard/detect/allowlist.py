"""Allowlists: traffic known to be noisy but benign, exempted or held to higher thresholds.

Entries (in any rules file, under ``allowlist:``)::

    - suffix: spamhaus.org        # the domain and everything below it
      category: dnsbl             # free text, shown in counters and logs
      source: https://www.spamhaus.org/...   # why this entry exists (required)
      action: exempt              # exempt (default): never alert
    - suffix: akamaiedge.net
      action: raise               # alert only past thresholds ``factor`` times higher
      factor: 5                   # (applies to volume features, see features.catalog)
      source: ...
    - client: 10.1.2.0/24         # queries from these clients (address or CIDR)
      source: ...
    - resolver: 192.0.2.53        # queries sent to this server
      source: ...
    - port: 5353                  # traffic on this port, even if it is one of --ports
      source: RFC 6762

Example:
    >>> a = Allowlist(parse_entries([{"suffix": "spamhaus.org", "source": "s"}], "x"))
    >>> a.for_domain("zen.spamhaus.org").action, a.for_domain("notspamhaus.org")
    ('exempt', None)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dnsguard.detect.yamlsrc import LineDict, SourceError

KEYS = {"suffix", "client", "resolver", "port", "category", "source", "action", "factor", "note"}


@dataclass(frozen=True)
class Entry:
    kind: str  # suffix | client | resolver | port
    value: str
    action: str  # exempt | raise
    factor: float
    category: str
    source: str
    where: str


def parse_entries(items: list, path: str) -> list[Entry]:
    out = []
    for i, d in enumerate(items):
        where = f"allowlist[{i}]"
        line = d.line if isinstance(d, LineDict) else 0
        if not isinstance(d, dict):
            raise SourceError(path, line, where, "an entry must be a mapping")

        def at(k: str, d: dict = d, line: int = line) -> int:
            return d.line_of(k) if isinstance(d, LineDict) else line

        for k in d:
            if k not in KEYS:
                raise SourceError(path, at(k), f"{where}.{k}",
                                  f"unknown key (allowed: {', '.join(sorted(KEYS))})")
        kinds = [k for k in ("suffix", "client", "resolver", "port") if k in d]
        if len(kinds) != 1:
            raise SourceError(path, line, where,
                              "needs exactly one of 'suffix', 'client', 'resolver' or 'port'")
        kind = kinds[0]
        val = d[kind]
        if kind == "port":
            if isinstance(val, bool) or not isinstance(val, int) or not 0 < val < 65536:
                raise SourceError(path, at(kind), f"{where}.port",
                                  f"{val!r} is not a port number (1-65535)")
            val = str(val)
        elif not isinstance(val, str) or not val.strip():
            raise SourceError(path, at(kind), f"{where}.{kind}", "must be a non-empty string")
        val = val.strip().lower().rstrip(".")
        if kind in ("client", "resolver"):
            try:
                val = str(ipaddress.ip_network(val, strict=False))
            except ValueError:
                raise SourceError(path, at(kind), f"{where}.{kind}",
                                  f"{val!r} is not an IP address or CIDR network") from None
        src = d.get("source")
        if not isinstance(src, str) or not src.strip():
            raise SourceError(path, line, f"{where}.source",
                              "every entry needs a 'source' saying why it is there")
        action = d.get("action", "exempt")
        if action not in ("exempt", "raise"):
            raise SourceError(path, at("action"), f"{where}.action",
                              f"{action!r} is not 'exempt' or 'raise'")
        factor = d.get("factor", 1.0 if action == "exempt" else 5.0)
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
            raise SourceError(path, at("factor"), f"{where}.factor",
                              f"{factor!r} must be a number ≥ 1")
        out.append(Entry(kind, val, action, float(factor), str(d.get("category", "")),
                         src.strip(), f"{path}:{line}"))
    return out


class Allowlist:
    """Lookups by domain (label-wise suffix match) and by client/resolver address."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self._suffix = {e.value: e for e in entries if e.kind == "suffix"}
        # Every entry and every text after a dot in it: a name's suffixes, tried from its
        # last label leftwards, can match an entry only while they are in this set.
        anchors = set()
        for v in self._suffix:
            anchors.add(v)
            i = v.find(".")
            while i >= 0:
                anchors.add(v[i + 1:])
                i = v.find(".", i + 1)
        self._anchors = frozenset(anchors)
        # Whether some entry is one label (a TLD): only then can a name whose two-label
        # registered domain is no anchor match one (for_name).
        self._one_label = any("." not in v for v in self._suffix)
        self._nets = [(ipaddress.ip_network(e.value), e) for e in entries
                      if e.kind in ("client", "resolver")]
        self.ports = frozenset(int(e.value) for e in entries if e.kind == "port")
        # Names under an entry, with their entry (the walk to it is as long as the entry).
        # A miss is not remembered: its walk stops at the first suffix that is no anchor,
        # one or two lookups for most names, cheaper than a cache insert (and a flood of
        # never-seen names would only churn the cache).
        self._cache: dict[str, Entry] = {}
        self.cache_size = 100_000  # names remembered (Settings.allow_cache in the pipeline)

    @property
    def has_networks(self) -> bool:
        return bool(self._nets)

    def for_domain(self, name: str) -> Entry | None:
        """The entry covering ``name`` (lower-case), the most specific one if several."""
        if not self._suffix:
            return None
        cache = self._cache
        c = cache.get(name)
        if c is not None:
            return c
        hit = _most_specific(self._suffix, self._anchors, name)
        if hit is not None:
            if len(cache) >= self.cache_size:
                cache.clear()
            cache[name] = hit
        return hit

    def for_name(self, name: str, rd: str) -> Entry | None:
        """:meth:`for_domain` of ``name`` whose registered domain is ``rd`` (the judge's
        call, with ``NameFeatures.regdomain``). When ``rd`` is the name's last two labels and
        no anchor, the walk from the right would stop at it with no entry unless one entry is
        a single label: answered so, with no suffix made (``rd``'s hash is cached already).

        >>> from dnsguard.detect.allowlist import Entry
        >>> a = Allowlist([Entry("suffix", "cdn.net", "raise", 4.0, "", "x", "f:1")])
        >>> a.for_name("x1.random.net", "random.net"), a.for_name("a.cdn.net", "cdn.net").factor
        (None, 4.0)
        """
        if not self._suffix:
            return None
        # Before the cache: it holds only names with an entry, never such a name (and the
        # name's str hash, which its lookup computes, is not needed elsewhere).
        if not self._one_label and rd not in self._anchors and _last_two(name, rd):
            return None
        return self.for_domain(name)

    def for_address(self, kind: str, addr: str) -> Entry | None:
        if not self._nets:
            return None
        ip = ipaddress.ip_address(addr)
        for net, e in self._nets:
            if e.kind == kind and ip.version == net.version and ip in net:
                return e
        return None


def _last_two(name: str, rd: str) -> bool:
    """Whether ``rd`` is the last two labels of ``name``: one dot in it, and the name is it
    or ends with a dot and it.

    >>> _last_two("a.b.c", "b.c"), _last_two("b.c", "b.c"), _last_two("ab.c", "b.c")
    (True, True, False)
    >>> _last_two("a.b.c", "a.b.c"), _last_two("c", "c")
    (False, False)
    """
    k = len(name) - len(rd)
    if k < 0 or (k and name[k - 1] != ".") or not name.endswith(rd):
        return False
    dots = 0
    for c in rd:  # compiled: a loop over the characters (str.find was ~150 instructions)
        if c == ".":
            dots += 1
    return dots == 1 and rd[0] != "."


def _most_specific(suffix: dict, anchors: frozenset, name: str) -> Entry | None:
    """The entry for the longest of ``name`` and the texts after each dot in it (==
    ``".".join(labels[i:])`` for each i). Tried from the shortest (the text after the last
    dot) while they are ``anchors`` (an entry or the text after a dot in one): a longer
    candidate can match only if every shorter one is an anchor. One or two lookups of short
    strings for most names (compiled: a C scan for the dots), where trying every suffix of
    every name cost a never-seen name ~8k instructions.

    >>> e = {"b.c": 1, "x.a.b.c": 2}
    >>> _most_specific(e, frozenset({"c", "b.c", "a.b.c", "x.a.b.c"}), "y.a.b.c")
    1
    """
    hit = None
    k = len(name) - 1
    while True:
        while k >= 0 and name[k] != ".":
            k -= 1
        cand = name[k + 1:]
        if cand not in anchors:
            break
        e = suffix.get(cand)
        if e is not None:
            hit = e
        if k < 0:
            break
        k -= 1
    return hit
